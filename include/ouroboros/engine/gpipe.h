// GPipe, the synchronous micro-batched pipeline Ouroboros is measured against, on the Ouroboros
// ring placement and in the same runtime (docs/BENCHMARKS.md).
#pragma once

#include <memory>
#include <vector>

#include "ouroboros/core/config.h"
#include "ouroboros/engine/thread_team.h"
#include "ouroboros/engine/transport.h"
#include "ouroboros/plan/planner.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

// GPipe (Huang et al. 2019) on the Ouroboros placement: K modules on K-1 workers, worker 0 holding
// modules 1 and K (so the tied wte never crosses), middle module k on worker k-1. Each step splits
// the batch into M micro-batches; worker 0 forwards all M through module 1 back to back while the
// others work, every module back-propagates micro-batches as their errors arrive, and the pipeline
// flushes: one update per step on the mean gradient at the step's weights, exactly as sequential
// backprop on the whole batch (up to the order of floating-point sums). Clipping is per worker, as
// in the Ouroboros engine (docs/DESIGN.md), so it equals global clipping for K = 2 only.
class GPipeTrainer : public Method {
 public:
  GPipeTrainer(const LanguageModel& model, ParamSet params, const Config& cfg);
  ~GPipeTrainer() override;

  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override {}  // every step flushes
  const ParamSet& params() const override { return params_; }
  MethodState state() const override;
  void restore(const MethodState& s, int64_t tick) override;
  std::string describe() const override;

  const Plan& plan() const { return plan_; }
  const Transport& transport(int64_t w) const { return *transports_.at(w); }
  size_t undelivered_messages() const { return hub_.pending(); }

 private:
  struct Stage;  // one worker's modules, optimizer and generators
  void run_worker(int64_t w, int64_t first, int64_t count, const BatchFn* batch,
                  const LossFn* on_loss);

  const LanguageModel& model_;
  Config cfg_;
  ParamSet params_;
  Plan plan_;
  InProcessHub hub_;
  std::vector<std::unique_ptr<Transport>> transports_;
  std::vector<std::unique_ptr<Stage>> stages_;
  std::unique_ptr<ThreadTeam> team_;
};

}  // namespace ouroboros
