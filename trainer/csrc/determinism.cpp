// libtorch's global determinism switches, which tch does not expose (see
// trainer/src/determinism.rs). Compiled by trainer/build.rs against the libtorch that
// `make setup` installs. No exception crosses into Rust.
#include <ATen/Context.h>

extern "C" int rccr_set_deterministic(int on) {
  try {
    at::globalContext().setDeterministicAlgorithms(on != 0, /*warn_only=*/true);
    at::globalContext().setDeterministicCuDNN(on != 0);
    at::globalContext().setBenchmarkCuDNN(false);
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int rccr_deterministic_enabled(void) {
  return at::globalContext().deterministicAlgorithms() ? 1 : 0;
}
