// The Ouroboros engine on threads: K modules on K-1 worker threads exchanging activations and
// errors through in-process channels, each module back-propagating a one-tick-old error
// (docs/ALGORITHM.md sections 2-5).
#pragma once

#include <memory>
#include <vector>

#include "ouroboros/core/config.h"
#include "ouroboros/engine/clock.h"
#include "ouroboros/engine/thread_team.h"
#include "ouroboros/engine/transport.h"
#include "ouroboros/engine/worker.h"
#include "ouroboros/plan/planner.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

// At the end of training the batches in flight are drained: K-1 extra ticks run every pending
// backward and update (at the last tick's learning rate) without new forwards (engine/clock.h). A
// checkpoint keeps them instead (state() holds the pipeline, train/pipeline_state.h), so a run
// resumed from it continues exactly as the same run without interruption.
class OuroborosThreads : public Method {
 public:
  OuroborosThreads(const LanguageModel& model, ParamSet params, const Config& cfg);
  // With the config's plan made already (make_plan(cfg, model.cost_model(batch_size))).
  OuroborosThreads(const LanguageModel& model, ParamSet params, const Config& cfg, Plan plan);
  ~OuroborosThreads() override;

  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override;
  bool saves_in_flight() const override { return true; }
  // The whole model on the first worker's device (gathered from the workers' GPUs when they are
  // spread over several, once per job).
  const ParamSet& params() const override;
  MethodState state() const override;
  void restore(const MethodState& s, int64_t tick) override;
  std::string describe() const override;
  std::vector<ModuleStats> take_diagnostics() override;

  const Plan& plan() const { return plan_; }
  const Worker& worker(int64_t w) const { return *workers_.at(w); }
  const Transport& transport(int64_t w) const { return *transports_.at(w); }
  size_t undelivered_messages() const { return hub_.pending(); }

 private:
  void run_job(const ClockJob& job, const BatchFn* batch, const LossFn* on_loss);

  const LanguageModel& model_;
  Config cfg_;
  ParamSet params_;
  // Worker w's device: every worker on the process's device, or with --device cuda (or auto)
  // and several GPUs, worker w on cuda:(w mod n); a worker elsewhere than worker 0 trains on its
  // own copy of its weights, which params() gathers back.
  std::vector<c10::Device> devices_;
  mutable bool gathered_ = true;
  Plan plan_;
  PipelineClock clock_;
  InProcessHub hub_;
  std::vector<std::unique_ptr<Transport>> transports_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<ThreadTeam> team_;  // worker 0 on the caller's thread
};

}  // namespace ouroboros
