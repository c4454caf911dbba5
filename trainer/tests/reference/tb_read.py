# Reads a TensorBoard log folder with TensorBoard's own reader (the `tensorboard` package
# that `make setup` installs into .deps/py) and prints what it holds as JSON. Used by
# trainer/tests/tensorboard.rs. Usage:
#   python3 tb_read.py LOGDIR
# Output: {"files": {name: records}, "scalars": {tag: [[step, value], ...]},
#          "images": {tag: [[step, width, height, [r, g, b, ...]], ...]}}
# Every record of every file is first read with TensorBoard's record reader, which checks
# both masked CRC32Cs (a bad one raises DataLossError and fails this script); then
# EventAccumulator loads the folder as `tensorboard --logdir` would (restart purging
# included) and keeps every event (size guidance 0).
import io, json, os, sys

from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow


def count_records(path):
    reader = pywrap_tensorflow.PyRecordReader_New(path)
    n = 0
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return n
        n += 1


def main():
    logdir = sys.argv[1]
    files = {f: count_records(os.path.join(logdir, f)) for f in sorted(os.listdir(logdir))}
    acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags[ea.SCALARS]}
    images = {}
    for t in tags[ea.IMAGES]:
        images[t] = []
        for e in acc.Images(t):
            img = Image.open(io.BytesIO(e.encoded_image_string))
            assert img.format == "PNG" and img.mode == "RGB", (img.format, img.mode)
            assert img.size == (e.width, e.height), (img.size, e.width, e.height)
            images[t].append([e.step, e.width, e.height, list(img.tobytes())])
    json.dump({"files": files, "scalars": scalars, "images": images}, sys.stdout)


if __name__ == "__main__":
    main()
