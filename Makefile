# rccr: one-command setup, build, test and demo. Every target runs `setup` first, which
# installs the pinned PyPI packages (torch 2.11.0 for libtorch, onnxruntime 1.31.1, onnx,
# cityscapesscripts) into .deps/ only when missing or at another version.
#   make demo            the whole pipeline on the built-in synthetic benchmark
#   make test            every test of the workspace
#   make setup GPU=1     onnxruntime-gpu instead of the CPU build
#   make build           release binaries + the C library (target/release/lib)
#   make doc             cargo doc of the workspace (target/doc), warnings as errors
#   make install PREFIX=/opt/rccr   binaries, C library, header, pkg-config file, ONNX Runtime
SHELL := bash
GPU ?= 0
CARGO ?= cargo

.PHONY: setup build test demo lint fmt doc clean-deps c-lib install install-only uninstall

setup:
	@GPU=$(GPU) ./scripts/setup.sh

build: setup
	$(CARGO) build --release --workspace
	$(CARGO) build --release -p rccr-infer --examples
	@$(MAKE) --no-print-directory c-lib

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

# API documentation, each crate's README as its front page; warnings are errors.
doc: setup
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --release --workspace

clean-deps:
	rm -rf .deps

# --- The C library and `make install` (docs/deployment.md, "Install") -------------------
# cargo builds the C ABI as the example `rccr_infer` (target/release/examples/librccr_infer.a,
# an unversioned .so). `c-lib` links the installable shared library from that static
# library in about a second, with a SONAME and a version script exporting only `rccr_*`,
# and puts it at a stable path: $(TARGET_DIR)/lib/librccr_infer.so.$(VERSION) (+ .so.0,
# .so links) and librccr_infer.a. `install-only` copies what `make build` built into
# $(DESTDIR)$(PREFIX) without running cargo; `install` builds first.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
# 1: copy ONNX Runtime (libonnxruntime*.so* of .deps/ort) into $(LIBDIR), where the
# installed library and binaries look for it; 0: rely on ORT_DYLIB_PATH instead.
INSTALL_ORT ?= 1
TARGET_DIR ?= target/release
VERSION := $(shell sed -n 's/^version = "\([^"]*\)"/\1/p' Cargo.toml | head -n1)
# The ABI version (SONAME librccr_infer.so.$(SOVERSION)): raised when rccr_infer.h changes
# incompatibly, independently of the crate version.
SOVERSION := 0
ORT_DIR := .deps/ort/onnxruntime/capi
BINARIES := rccr-train rccr-export rccr-infer
C_A := $(TARGET_DIR)/examples/librccr_infer.a
C_LIB := $(TARGET_DIR)/lib
C_SO := $(C_LIB)/librccr_infer.so.$(VERSION)

c-lib: $(C_SO) $(C_LIB)/librccr_infer.a

$(C_A):
	@echo "$@ is missing: run \`make build\` (or cargo build --release -p rccr-infer --examples)" >&2; exit 1

# -u pulls every exported rccr_* object out of the archive; the version script hides the rest.
$(C_SO): $(C_A) infer/examples/c/rccr_infer.map
	mkdir -p $(C_LIB)
	$(CC) -shared -o $@.tmp -Wl,-soname,librccr_infer.so.$(SOVERSION) \
		-Wl,--version-script=infer/examples/c/rccr_infer.map -Wl,--gc-sections -Wl,--strip-debug \
		$$(nm -g --defined-only $(C_A) 2>/dev/null | awk '$$2 == "T" && $$3 ~ /^rccr_/ {print "-Wl,-u," $$3}') \
		$(C_A) -lpthread -ldl -lm
	mv $@.tmp $@
	ln -sf librccr_infer.so.$(VERSION) $(C_LIB)/librccr_infer.so.$(SOVERSION)
	ln -sf librccr_infer.so.$(SOVERSION) $(C_LIB)/librccr_infer.so

$(C_LIB)/librccr_infer.a: $(C_A)
	mkdir -p $(C_LIB)
	ln -f $< $@ 2>/dev/null || cp $< $@

install: build
	@$(MAKE) --no-print-directory install-only

install-only: c-lib
	@for b in $(BINARIES); do [ -x $(TARGET_DIR)/$$b ] || { echo "$(TARGET_DIR)/$$b is missing: run \`make build\`" >&2; exit 1; }; done
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 755 $(addprefix $(TARGET_DIR)/,$(BINARIES)) $(DESTDIR)$(BINDIR)/
	install -m 755 $(C_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf librccr_infer.so.$(VERSION) $(DESTDIR)$(LIBDIR)/librccr_infer.so.$(SOVERSION)
	ln -sf librccr_infer.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/librccr_infer.so
	install -m 644 $(C_LIB)/librccr_infer.a $(DESTDIR)$(LIBDIR)/
	install -m 644 infer/include/rccr_infer.h $(DESTDIR)$(INCLUDEDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
		-e 's|@VERSION@|$(VERSION)|' infer/rccr_infer.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/rccr_infer.pc
	@if [ "$(INSTALL_ORT)" = 1 ]; then \
		ls $(ORT_DIR)/libonnxruntime*.so* >/dev/null 2>&1 || { echo "no ONNX Runtime in $(ORT_DIR): run \`make setup\`, or install with INSTALL_ORT=0 and set ORT_DYLIB_PATH" >&2; exit 1; }; \
		echo install -m 755 $(ORT_DIR)/libonnxruntime*.so* $(DESTDIR)$(LIBDIR)/; \
		install -m 755 $(ORT_DIR)/libonnxruntime*.so* $(DESTDIR)$(LIBDIR)/; \
	fi

# Removes what install-only wrote (ONNX Runtime: the file names .deps/ort holds).
uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(BINARIES)) $(DESTDIR)$(INCLUDEDIR)/rccr_infer.h \
		$(DESTDIR)$(PKGCONFIGDIR)/rccr_infer.pc $(DESTDIR)$(LIBDIR)/librccr_infer.a \
		$(DESTDIR)$(LIBDIR)/librccr_infer.so $(DESTDIR)$(LIBDIR)/librccr_infer.so.$(SOVERSION) \
		$(DESTDIR)$(LIBDIR)/librccr_infer.so.$(VERSION)
	$(if $(filter 1,$(INSTALL_ORT)),rm -f $(addprefix $(DESTDIR)$(LIBDIR)/,$(notdir $(wildcard $(ORT_DIR)/libonnxruntime*.so*))))
