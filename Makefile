# rccr: one-command setup, build, test and demo. Every target runs `setup` first, which
# installs the pinned PyPI packages (torch 2.11.0 for libtorch, onnxruntime 1.31.1, onnx,
# cityscapesscripts) into .deps/ only when missing or at another version.
#   make demo            the whole pipeline on the built-in synthetic benchmark
#   make test            every test of the workspace
#   make setup GPU=1     onnxruntime-gpu instead of the CPU build
SHELL := bash
GPU ?= 0
CARGO ?= cargo

.PHONY: setup build test demo lint fmt clean-deps

setup:
	@GPU=$(GPU) ./scripts/setup.sh

build: setup
	$(CARGO) build --release --workspace

# Release profile, the same as `make build` and `make demo`: one build serves all three.
test: setup
	$(CARGO) test --release --workspace

demo: setup
	./scripts/demo.sh

# Release profile too, so clippy reuses the dependencies `make test` built.
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-deps:
	rm -rf .deps
