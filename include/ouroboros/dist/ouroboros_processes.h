// Ouroboros on processes, one worker per process: this rank's Worker, the transport, the pipeline
// clock every Ouroboros method shares, and (R > 1 rings) the gradient average across rings.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ouroboros/core/config.h"
#include "ouroboros/dist/context.h"
#include "ouroboros/dist/process_method.h"
#include "ouroboros/engine/clock.h"
#include "ouroboros/engine/worker.h"
#include "ouroboros/plan/planner.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

// The engine as one worker process: this rank's Worker, the c10d transport, and (R > 1) the
// gradient average across rings before each update. params() holds this worker's weights, and
// at rank 0 the whole model as of the last collect_params(); state() is this worker's part
// (checkpoints take shard()).
class OuroborosProcesses : public ProcessMethod {
 public:
  OuroborosProcesses(const LanguageModel& model, ParamSet params, const Config& cfg,
                     DistContext& ctx);
  ~OuroborosProcesses() override;

  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override;
  MethodState state() const override;
  bool saves_in_flight() const override { return true; }
  std::optional<CheckpointShard> shard() const override;
  // Takes this rank's entry of s.pipeline ("workers"[rank]), so a checkpoint of threads with the
  // same layout resumes on processes and the reverse.
  void restore(const MethodState& s, int64_t tick) override;
  std::string describe() const override;

  // Seconds spent in the gradient all-reduce (R > 1).
  double allreduce_seconds() const { return allreduce_ns_ * 1e-9; }

 private:
  void run_job(const ClockJob& job, const BatchFn* batch, const LossFn* on_loss);
  void average_gradients(const ParamSet& params);
  void end_job();
  // This worker's optimizer entries, memories and its modules' generators (K slots, this ring's).
  MethodState own_state() const;

  const ParamSet& own_params() const override;

  std::unique_ptr<Worker> worker_;
  PipelineClock clock_;
};

}  // namespace ouroboros
