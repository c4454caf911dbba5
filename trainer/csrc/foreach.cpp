// Multi-tensor (foreach) updates and memory-format conversion, which tch does not expose
// (see trainer/src/foreach.rs). Each function takes arrays of tch tensor handles
// (at::Tensor*), runs libtorch's _foreach_* kernels (one launch per chunk of tensors on
// CUDA instead of one per tensor), and returns 0, or 1 when libtorch threw; no exception
// crosses into Rust. Compiled by trainer/build.rs against the libtorch that `make setup`
// installs.
#include <ATen/ATen.h>
#include <ATen/Functions.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <vector>

namespace {
std::vector<at::Tensor> list(at::Tensor* const* p, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) v.push_back(*p[i]);
  return v;
}
}  // namespace

// SGD with momentum and weight decay, as torch.optim.SGD (dampening 0, no Nesterov):
// d = g + wd p; buf = momentum buf + d; p -= lr buf.
extern "C" int rccr_foreach_sgd(at::Tensor* const* params, at::Tensor* const* grads,
                                at::Tensor* const* bufs, size_t n, double momentum,
                                double weight_decay, double lr) {
  try {
    at::NoGradGuard no_grad;
    auto p = list(params, n), g = list(grads, n), b = list(bufs, n);
    auto d = weight_decay != 0.0 ? at::_foreach_add(g, p, weight_decay) : g;
    at::_foreach_mul_(b, momentum);
    at::_foreach_add_(b, d);
    at::_foreach_add_(p, b, -lr);
    return 0;
  } catch (...) {
    return 1;
  }
}

// The mean teacher's EMA: t = alpha t + (1 - alpha) s.
extern "C" int rccr_foreach_ema(at::Tensor* const* teacher, at::Tensor* const* student,
                                size_t n, double alpha) {
  try {
    at::NoGradGuard no_grad;
    auto t = list(teacher, n), s = list(student, n);
    at::_foreach_mul_(t, alpha);
    at::_foreach_add_(t, s, 1.0 - alpha);
    return 0;
  } catch (...) {
    return 1;
  }
}

// *finite = 1 when every element of every tensor is finite, else 0, with one
// device-to-host copy: one L1 norm per tensor (float accumulation: a NaN or an infinity
// makes it non-finite); only when some norm is not finite (a non-finite element, or a
// finite sum beyond the float range) is each tensor checked element by element.
extern "C" int rccr_all_finite(at::Tensor* const* tensors, size_t n, int* finite) {
  try {
    at::NoGradGuard no_grad;
    *finite = 1;
    if (n == 0) return 0;
    auto ts = list(tensors, n);
    if (at::stack(at::_foreach_norm(ts, 1)).isfinite().all().item<bool>()) return 0;
    for (const auto& t : ts) {
      if (!t.isfinite().all().item<bool>()) {
        *finite = 0;
        return 0;
      }
    }
    return 0;
  } catch (...) {
    return 1;
  }
}

// Re-lays a variable's data out as channels-last (NHWC) in place, keeping the variable
// (and its autograd identity): what nn.Module.to(memory_format=channels_last) does.
extern "C" int rccr_channels_last_(at::Tensor* t) {
  try {
    at::NoGradGuard no_grad;
    if (t->dim() == 4) t->set_data(t->contiguous(at::MemoryFormat::ChannelsLast));
    return 0;
  } catch (...) {
    return 1;
  }
}

// A channels-last copy of a 4-d tensor (the same tensor when it already is one), as a
// new tch handle in *out.
extern "C" int rccr_channels_last(const at::Tensor* t, at::Tensor** out) {
  try {
    *out = new at::Tensor(t->dim() == 4 ? t->contiguous(at::MemoryFormat::ChannelsLast) : *t);
    return 0;
  } catch (...) {
    return 1;
  }
}
