// Autocast scopes for the models' forward passes. libtorch 2.4 replaced the per-device autocast
// functions (set_cpu_enabled, set_autocast_cpu_dtype) by ones taking the device type; the two
// spellings are kept here, in one place.
#include "ouroboros/model/precision.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace ouroboros {
namespace {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool cpu_autocast_enabled() { return at::autocast::is_autocast_enabled(at::kCPU); }
void set_cpu_autocast(bool on) { at::autocast::set_autocast_enabled(at::kCPU, on); }
at::ScalarType cpu_autocast_dtype() { return at::autocast::get_autocast_dtype(at::kCPU); }
void set_cpu_autocast_dtype(at::ScalarType t) { at::autocast::set_autocast_dtype(at::kCPU, t); }
#else
bool cpu_autocast_enabled() { return at::autocast::is_cpu_enabled(); }
void set_cpu_autocast(bool on) { at::autocast::set_cpu_enabled(on); }
at::ScalarType cpu_autocast_dtype() { return at::autocast::get_autocast_cpu_dtype(); }
void set_cpu_autocast_dtype(at::ScalarType t) { at::autocast::set_autocast_cpu_dtype(t); }
#endif

}  // namespace

PrecisionScope::PrecisionScope(const std::string& dtype) {
  if (dtype != "bfloat16") return;
  active_ = true;
  was_enabled_ = cpu_autocast_enabled();
  was_dtype_ = cpu_autocast_dtype();
  set_cpu_autocast_dtype(at::kBFloat16);
  set_cpu_autocast(true);
  at::autocast::increment_nesting();
}

PrecisionScope::~PrecisionScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_cpu_autocast(was_enabled_);
  set_cpu_autocast_dtype(was_dtype_);
}

}  // namespace ouroboros
