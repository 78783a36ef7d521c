// Autocast scopes for the models' forward passes.
#include "ouroboros/model/precision.h"

#include <ATen/autocast_mode.h>

#include "ouroboros/core/torch_compat.h"

namespace ouroboros {

using compat::autocast_dtype;
using compat::autocast_enabled;
using compat::set_autocast;
using compat::set_autocast_dtype;

PrecisionScope::PrecisionScope(DType dtype) {
  if (dtype != DType::kBfloat16) return;
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
