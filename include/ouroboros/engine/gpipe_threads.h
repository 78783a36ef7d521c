// GPipe, the synchronous micro-batched pipeline Ouroboros is measured against, on the Ouroboros
// ring placement and in the same runtime (docs/BENCHMARKS.md).
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "ouroboros/core/config.h"
#include "ouroboros/engine/thread_team.h"
#include "ouroboros/engine/transport.h"
#include "ouroboros/plan/planner.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

// One GPipe worker: its modules' weights, optimizer and dropout generators, and its part of each
// step (GPipeThreads below), over any transport: a thread's channels or a process's c10d group.
class GPipeStage {
 public:
  GPipeStage(const LanguageModel& model, const Plan& plan, int64_t worker, const ParamSet& all,
             const Config& cfg);
  // Steps [first, first + count): worker 0 draws each batch, reports each step's loss and holds
  // modules 1 and K; the others their middle module. Every step flushes, so nothing stays in
  // flight between calls.
  void run(Transport& tr, int64_t first, int64_t count, const BatchFn* batch,
           const LossFn* on_loss);
  const ParamSet& params() const { return params_; }
  // Its optimizer entries and its modules' generators (slot k - 1 of a K-slot vector) into s.
  void collect_state(MethodState& s) const;
  void restore_state(const MethodState& s);

 private:
  const LanguageModel& model_;
  const Plan& plan_;
  const Config& cfg_;
  int64_t worker_;
  ParamSet params_;
  Optimizer optimizer_;
  std::map<int64_t, ParamSet> module_params_;
  std::map<int64_t, ForwardContext> contexts_;
};

// GPipe (Huang et al. 2019) on the Ouroboros placement: K modules on K-1 workers, worker 0 holding
// modules 1 and K (so the tied wte never crosses), middle module k on worker k-1. Each step splits
// the batch into M micro-batches; worker 0 forwards all M through module 1 back to back while the
// others work, every module back-propagates micro-batches as their errors arrive, and the pipeline
// flushes: one update per step on the mean gradient at the step's weights, exactly as sequential
// backprop on the whole batch (up to the order of floating-point sums). Clipping is per worker, as
// in the Ouroboros engine (docs/DESIGN.md), so it equals global clipping for K = 2 only.
class GPipeThreads : public Method {
 public:
  GPipeThreads(const LanguageModel& model, ParamSet params, const Config& cfg);
  ~GPipeThreads() override;

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
  const LanguageModel& model_;
  Config cfg_;
  ParamSet params_;
  Plan plan_;
  InProcessHub hub_;
  std::vector<std::unique_ptr<Transport>> transports_;
  std::vector<std::unique_ptr<GPipeStage>> stages_;
  std::unique_ptr<ThreadTeam> team_;
};

}  // namespace ouroboros
