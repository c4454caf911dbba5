#pragma once
// Declarations for torch's ProcessGroupGloo.hpp; see ../../README.md.
namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo
