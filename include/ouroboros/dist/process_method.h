// What every method with one worker per process shares (Ouroboros and GPipe on processes): the
// process group, the transport, the plan, rank 0's view of the whole model, evaluation through
// the ring, and the traffic report.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "ouroboros/core/config.h"
#include "ouroboros/dist/context.h"
#include "ouroboros/dist/process_transport.h"
#include "ouroboros/engine/transport.h"
#include "ouroboros/plan/planner.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

// What one process's transport did, reported by rank 0 at the end of a run.
struct RankStats {
  int64_t messages = 0, bytes = 0, ticks = 0;
  double wait_s = 0.0, allreduce_s = 0.0;
};

// What every method with one worker per process shares: the process group, the c10d transport,
// the plan, the whole model's weights (rank 0's view, for evaluations), the collection of ring
// 0's weights at rank 0, and the traffic report.
class ProcessMethod : public Method {
 public:
  ~ProcessMethod() override;  // fills the stats sink
  const ParamSet& params() const override { return params_; }
  // Ring 0's workers send their weights to rank 0 over Gloo (every rank calls it where the lead
  // is about to read the whole model): worker w > 0 sends its own, one flat tensor in the order
  // of worker_param_names. The tag's low byte, 0xff, belongs to no pipeline message, so messages
  // in flight are untouched.
  void collect_params() override;
  // Evaluation batches through ring 0: module 1 at rank 0 sends its activation round the ring
  // and module K there returns the summed loss, as the whole model's loss_sum would, bit for bit.
  // Its messages carry the error bit on an activation's boundary, which no pipeline message
  // between the same two ranks in that direction has, so batches in flight stay untouched. None
  // for other rings and for rings of one worker (the lead holds the whole model there).
  std::optional<LossSumFn> ring_loss_sum() override;
  const Plan& plan() const { return plan_; }
  const ProcessTransport& transport() const { return *transport_; }
  // Filled in when the method is destroyed.
  void set_stats_sink(RankStats* sink) { sink_ = sink; }

 protected:
  ProcessMethod(const LanguageModel& model, ParamSet params, const Config& cfg, DistContext& ctx);
  // This rank's own weights (a subset of params_ at rank 0).
  virtual const ParamSet& own_params() const = 0;
  // "processes: N (...), c10d gloo|nccl, store A:P" for describe().
  std::string processes_line(const std::string& layout) const;
  // What a restore gave for the other workers' modules (optimizer entries, generators; before one,
  // every module's fresh generator in every ring), as a copy with its own optimizer dict: state()
  // adds this worker's part to it.
  MethodState peers_state() const;

  const LanguageModel& model_;
  Config cfg_;
  DistContext& ctx_;
  ParamSet params_;
  Plan plan_;
  std::unique_ptr<ProcessTransport> transport_;  // C10dTransport, or PairTransport over NCCL
  // The last thing done was a checkpoint that keeps the batches in flight (shard()); if the
  // method ends here, every rank stopped at that tick, and the messages still on their way are in
  // the checkpoint: they are released, not waited for (no peer will take them).
  mutable bool pipeline_saved_ = false;
  int64_t jobs_ = 0;  // run() and drain() calls so far (DistContext::open_job)
  int64_t ticks_run_ = 0;
  int64_t allreduce_ns_ = 0;
  RankStats* sink_ = nullptr;
  MethodState peers_;
};

}  // namespace ouroboros
