// Autocast scopes for the models' forward passes. libtorch 2.4 replaced the per-device autocast
// functions (set_cpu_enabled, set_autocast_cpu_dtype) by ones taking the device type; the two
// spellings are kept here, in one place.
#include "ouroboros/model/precision.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace ouroboros {
namespace {

// Autocast state of one device type (CPU or CUDA) on this thread.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool autocast_enabled(at::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
void set_autocast(at::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
at::ScalarType autocast_dtype(at::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
void set_autocast_dtype(at::DeviceType d, at::ScalarType t) { at::autocast::set_autocast_dtype(d, t); }
#else
bool autocast_enabled(at::DeviceType d) {
  return d == at::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
}
void set_autocast(at::DeviceType d, bool on) {
  d == at::kCPU ? at::autocast::set_cpu_enabled(on) : at::autocast::set_enabled(on);
}
at::ScalarType autocast_dtype(at::DeviceType d) {
  return d == at::kCPU ? at::autocast::get_autocast_cpu_dtype()
                       : at::autocast::get_autocast_gpu_dtype();
}
void set_autocast_dtype(at::DeviceType d, at::ScalarType t) {
  d == at::kCPU ? at::autocast::set_autocast_cpu_dtype(t) : at::autocast::set_autocast_gpu_dtype(t);
}
#endif

}  // namespace

PrecisionScope::PrecisionScope(const std::string& dtype) {
  if (dtype != "bfloat16") return;
  active_ = true;
  for (size_t i = 0; i < kDevices.size(); ++i) {
    was_enabled_[i] = autocast_enabled(kDevices[i]);
    was_dtype_[i] = autocast_dtype(kDevices[i]);
    set_autocast_dtype(kDevices[i], at::kBFloat16);
    set_autocast(kDevices[i], true);
  }
  at::autocast::increment_nesting();
}

PrecisionScope::~PrecisionScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  for (size_t i = 0; i < kDevices.size(); ++i) {
    set_autocast(kDevices[i], was_enabled_[i]);
    set_autocast_dtype(kDevices[i], was_dtype_[i]);
  }
}

}  // namespace ouroboros
