// Data-parallel collectives for rccr-train on libtorch's own c10d (the library under
// torch.distributed): a TCPStore rendezvous and a Gloo (CPU) or NCCL (CUDA) process
// group, exposed to Rust as plain C functions (trainer/src/dist/ffi.rs). Tensors are the
// `at::Tensor*` handles tch passes around. Every function catches C++ exceptions and
// returns non-zero, leaving c10d's message in rccr_dist_last_error(); nothing throws
// across the boundary.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RCCR_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

thread_local std::string last_error;

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank;
  int size;
  std::chrono::milliseconds timeout;
};

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    // c10d appends a C++ stack trace after "Exception raised from": keep the message.
    last_error = e.what();
    auto cut = last_error.find("\nException raised from");
    if (cut != std::string::npos) last_error.resize(cut);
  } catch (...) {
    last_error = "unknown C++ exception in c10d";
  }
  return 1;
}

std::vector<at::Tensor> tensors(at::Tensor** ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

void wait(Group* g, const c10::intrusive_ptr<c10d::Work>& work) {
  if (!work->wait(g->timeout)) {
    throw std::runtime_error("c10d collective timed out");
  }
}

// Sum over ranks, in place (Gloo has no AVG; averaging divides afterwards).
void allreduce_sum(Group* g, at::Tensor& t) {
  std::vector<at::Tensor> one{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  wait(g, g->backend->allreduce(one, opts));
}

c10::intrusive_ptr<c10d::Backend> make_gloo(Group* g) {
  auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, g->rank, g->size, opts);
}

c10::intrusive_ptr<c10d::Backend> make_nccl(Group* g) {
#ifdef RCCR_WITH_NCCL
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = g->timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(g->store, g->rank, g->size, opts);
#else
  (void)g;
  throw std::runtime_error(
      "this rccr-train was built without the NCCL backend: rebuild with RCCR_CUDA_INCLUDE "
      "naming complete CUDA 13 headers (README, Multi-GPU), or use --dist-backend gloo");
#endif
}

// y = sum over ranks of x, differentiable: the gradient of a sum is the sum of the
// ranks' gradients (what synchronised batch norm needs).
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::Tensor x, int64_t handle) {
    ctx->saved_data["group"] = handle;
    auto y = x.detach().clone();
    allreduce_sum(reinterpret_cast<Group*>(handle), y);
    return y;
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto* g = reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
    auto dx = grads[0].contiguous().clone();
    allreduce_sum(g, dx);
    return {dx, at::Tensor()};
  }
};

} // namespace

extern "C" {

const char* rccr_dist_last_error() {
  return last_error.c_str();
}

// backend: "gloo" | "nccl"; is_server: host the TCPStore; prefix: "" or a key prefix
// (torchrun's agent store: "/worker/attempt_<n>").
int rccr_dist_init(const char* backend, const char* host, int port, int rank, int size,
                   int timeout_s, int is_server, const char* prefix, void** out) {
  return guarded([&] {
    auto g = std::make_unique<Group>();
    g->rank = rank;
    g->size = size;
    g->timeout = std::chrono::milliseconds(int64_t(timeout_s) * 1000);
    c10d::TCPStoreOptions o;
    o.port = static_cast<std::uint16_t>(port);
    o.isServer = is_server != 0;
    o.numWorkers = static_cast<std::size_t>(size);
    // Every rank (clients included) counts itself in and waits for the others here.
    o.waitWorkers = true;
    o.timeout = g->timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(std::string(host), o);
    if (prefix != nullptr && *prefix != '\0') {
      store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store);
    }
    g->store = c10::make_intrusive<c10d::PrefixStore>("rccr/", store);
    std::string b(backend);
    if (b == "gloo") {
      g->backend = make_gloo(g.get());
    } else if (b == "nccl") {
      g->backend = make_nccl(g.get());
    } else {
      throw std::runtime_error("unknown backend `" + b + "` (gloo or nccl)");
    }
    *out = g.release();
  });
}

void rccr_dist_free(void* group) {
  delete static_cast<Group*>(group);
}

// op 0: sum, 1: average. One collective per tensor (callers pass flat buckets).
int rccr_dist_allreduce(void* group, at::Tensor** ts, int n, int op) {
  return guarded([&] {
    auto* g = static_cast<Group*>(group);
    for (auto& t : tensors(ts, n)) {
      allreduce_sum(g, t);
      if (op == 1) t.div_(g->size);
    }
  });
}

int rccr_dist_broadcast(void* group, at::Tensor** ts, int n, int root) {
  return guarded([&] {
    auto* g = static_cast<Group*>(group);
    for (auto& t : tensors(ts, n)) {
      std::vector<at::Tensor> one{t};
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      wait(g, g->backend->broadcast(one, opts));
    }
  });
}

// outs: `size` tensors shaped like `in`, receiving every rank's `in` in rank order.
int rccr_dist_allgather(void* group, at::Tensor* in, at::Tensor** outs) {
  return guarded([&] {
    auto* g = static_cast<Group*>(group);
    std::vector<std::vector<at::Tensor>> o{tensors(outs, g->size)};
    std::vector<at::Tensor> i{*in};
    wait(g, g->backend->allgather(o, i));
  });
}

int rccr_dist_barrier(void* group) {
  return guarded([&] {
    auto* g = static_cast<Group*>(group);
    wait(g, g->backend->barrier());
  });
}

// *out = a new tensor: the differentiable sum over ranks of x.
int rccr_dist_allreduce_sum_autograd(void* group, at::Tensor* x, at::Tensor** out) {
  return guarded([&] {
    auto y = AllReduceSum::apply(*x, reinterpret_cast<int64_t>(group));
    *out = new at::Tensor(y);
  });
}

} // extern "C"
