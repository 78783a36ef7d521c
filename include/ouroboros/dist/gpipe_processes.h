// GPipe with one worker per process: this rank's GPipeStage over the c10d transport.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "ouroboros/core/config.h"
#include "ouroboros/dist/context.h"
#include "ouroboros/dist/process_method.h"
#include "ouroboros/engine/gpipe_threads.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

// GPipe (engine/gpipe_threads.h) as one process per worker: the same stage code as on threads, so
// the run equals the threaded GPipe bit for bit. One ring (GPipe's steps are synchronous: more
// replicas would be data parallelism over pipelines, which this does not offer). Each step
// flushes, so checkpoints hold no batches in flight; each rank writes its weights, optimizer
// entries and generators as its shard.
class GPipeProcesses : public ProcessMethod {
 public:
  GPipeProcesses(const LanguageModel& model, ParamSet params, const Config& cfg, DistContext& ctx);
  ~GPipeProcesses() override;

  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override {}  // every step flushes
  MethodState state() const override;
  std::optional<CheckpointShard> shard() const override;
  void restore(const MethodState& s, int64_t tick) override;
  std::string describe() const override;

 private:
  const ParamSet& own_params() const override { return stage_->params(); }

  std::unique_ptr<GPipeStage> stage_;
};

}  // namespace ouroboros
