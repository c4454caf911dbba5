#pragma once
// Declarations for torch's ProcessGroupGloo.hpp; see ../README.md.
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
