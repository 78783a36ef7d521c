// The precision of a model's forward passes (model.dtype): float32, or bfloat16 matrix products
// under autocast with float32 weights, gradients and optimizer state.
#pragma once

#include <array>
#include <string>

#include <ATen/ATen.h>

#include "ouroboros/core/config.h"

namespace ouroboros {

// For the lifetime of the scope, this thread's forward ops run in `dtype`: "bfloat16" turns on
// CPU and CUDA autocast to bfloat16 (matrix products in bfloat16, reductions, softmax and losses in
// float32, as autocast lists them), "float32" changes nothing. Autocast state is per thread, so
// every worker thread opens its own scope: the models open one in each entry point. The scope
// restores what it found, and the outermost one clears autocast's cache of casted weights, so a
// weight updated in place is never read through a stale bfloat16 copy.
class PrecisionScope {
 public:
  explicit PrecisionScope(DType dtype);
  ~PrecisionScope();
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;

 private:
  static constexpr std::array<at::DeviceType, 2> kDevices = {at::kCPU, at::kCUDA};
  bool active_ = false;
  std::array<bool, 2> was_enabled_{};
  std::array<at::ScalarType, 2> was_dtype_{};
};

}  // namespace ouroboros
