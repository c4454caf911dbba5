# Sourced by scripts/gpu-acceptance.sh: finds a Python that imports torch (the GPU host's
# venv, /opt/torch/.venv, or this repository's .deps/torch) and points the loader at that
# torch's lib folder, since the rccr binaries' rpath names .deps/, which does not travel
# (same approach as scripts/gpu-check.sh). Sets PY, TORCH_LIB and exports LD_LIBRARY_PATH
# and PYTHON (for scripts/torchrun and scripts/stage-ort-cuda.sh).
PY=""
TORCH_LIB=""
for _py in "${PYTHON:-}" /opt/torch/.venv/bin/python3 python3; do
    [ -n "$_py" ] && command -v "$_py" >/dev/null 2>&1 || continue
    if _dir=$("$_py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null); then
        PY=$_py
        TORCH_LIB=$_dir
        break
    fi
done
if [ -z "$PY" ] && [ -d .deps/torch/torch/lib ]; then
    PY=python3
    TORCH_LIB=$(cd .deps/torch/torch/lib && pwd)
    export PYTHONPATH=$(cd .deps/torch && pwd)${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -n "$TORCH_LIB" ]; then
    export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
[ -n "$PY" ] && export PYTHON=$PY
unset _py _dir
