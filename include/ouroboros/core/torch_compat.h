// What differs between the libtorch versions ouroboros builds against, Debian's 1.13 and the 2.x
// of the PyPI wheel (scripts/build-torch2.sh), in one place: call sites use these names and never
// test the version themselves. (CMakeLists.txt holds the build's differences.)
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#define OUROBOROS_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||            \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace c10d {
class Backend;
class ProcessGroup;
}  // namespace c10d

namespace ouroboros {

// What a process group's sends, receives and all-reduces go through (Gloo's, and NCCL's in 2.x).
// ProcessGroupGloo is a c10d::ProcessGroup in 1.13; in 2.x it and ProcessGroupNCCL are
// c10d::Backends, which a ProcessGroup would only dispatch to.
// <torch/csrc/distributed/c10d/ProcessGroup.hpp> defines either.
#if OUROBOROS_TORCH_AT_LEAST(2, 0)
using CommGroup = c10d::Backend;
#else
using CommGroup = c10d::ProcessGroup;
#endif

namespace compat {

// This thread's autocast state for one device type (CPU or CUDA). libtorch 2.4 replaced the
// per-device functions (set_cpu_enabled, set_autocast_cpu_dtype, ...) by ones taking the type.
#if OUROBOROS_TORCH_AT_LEAST(2, 4)
inline bool autocast_enabled(at::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
inline void set_autocast(at::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
inline at::ScalarType autocast_dtype(at::DeviceType d) {
  return at::autocast::get_autocast_dtype(d);
}
inline void set_autocast_dtype(at::DeviceType d, at::ScalarType t) {
  at::autocast::set_autocast_dtype(d, t);
}
#else
inline bool autocast_enabled(at::DeviceType d) {
  return d == at::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
}
inline void set_autocast(at::DeviceType d, bool on) {
  d == at::kCPU ? at::autocast::set_cpu_enabled(on) : at::autocast::set_enabled(on);
}
inline at::ScalarType autocast_dtype(at::DeviceType d) {
  return d == at::kCPU ? at::autocast::get_autocast_cpu_dtype()
                       : at::autocast::get_autocast_gpu_dtype();
}
inline void set_autocast_dtype(at::DeviceType d, at::ScalarType t) {
  d == at::kCPU ? at::autocast::set_autocast_cpu_dtype(t) : at::autocast::set_autocast_gpu_dtype(t);
}
#endif

}  // namespace compat
}  // namespace ouroboros
