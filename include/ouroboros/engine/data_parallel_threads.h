// Data parallelism with one full replica per worker thread, the other baseline Ouroboros is
// measured against (docs/BENCHMARKS.md).
#pragma once

#include <memory>
#include <vector>

#include "ouroboros/core/config.h"
#include "ouroboros/engine/thread_team.h"
#include "ouroboros/train/method.h"
#include "ouroboros/train/optim.h"

namespace ouroboros {

// Data parallelism: W replicas on W threads share the weights; replica r computes the gradient of
// its B/W rows of the batch (its own dropout generator), the gradients are averaged in a fixed
// order (deterministic), and one optimizer applies the update with global clipping, exactly as
// sequential backprop on the whole batch up to the order of floating-point sums (bit for bit for
// W = 1). The average is split across the workers; the optimizer step runs once, on the caller's
// thread, which costs what each replica's own update costs in an all-reduce data-parallel run.
class DataParallelThreads : public Method {
 public:
  DataParallelThreads(const LanguageModel& model, ParamSet params, const Config& cfg);
  ~DataParallelThreads() override;

  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override {}
  const ParamSet& params() const override { return params_; }
  MethodState state() const override;
  void restore(const MethodState& s, int64_t tick) override;
  std::string describe() const override;

 private:
  const LanguageModel& model_;
  Config cfg_;
  ParamSet params_;
  Optimizer optimizer_;
  std::vector<ParamSet> replicas_;  // per replica: aliases of params_ (same storage, own .grad)
  std::vector<ForwardContext> contexts_;
  std::unique_ptr<ThreadTeam> team_;
};

}  // namespace ouroboros
