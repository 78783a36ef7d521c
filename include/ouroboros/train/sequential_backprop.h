// The reference trainer: the whole model on one worker with plain backprop (docs/ALGORITHM.md
// section 6), the oracle every other method is checked against.
#pragma once

#include <utility>

#include "ouroboros/core/config.h"
#include "ouroboros/train/method.h"
#include "ouroboros/train/optim.h"

namespace ouroboros {

class SequentialBackprop : public Method {
 public:
  SequentialBackprop(const LanguageModel& model, ParamSet params, const TrainConfig& cfg);
  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override {}
  const ParamSet& params() const override { return params_; }
  MethodState state() const override;
  void restore(const MethodState& s, int64_t tick) override;
  std::string describe() const override { return "sequential: plain backprop on one worker\n"; }
  // The whole model's statistics, as module 0.
  std::vector<ModuleStats> take_diagnostics() override { return std::exchange(diagnostics_, {}); }

 private:
  const LanguageModel& model_;
  ParamSet params_;
  TrainConfig cfg_;
  Optimizer optimizer_;
  ForwardContext ctx_;
  std::vector<ModuleStats> diagnostics_;
};

}  // namespace ouroboros
