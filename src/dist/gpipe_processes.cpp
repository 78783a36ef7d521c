// GPipe with one worker per process: the threaded GPipe's stage, the c10d transport, and rank
// 0's view of the whole model for evaluation.
#include "ouroboros/dist/gpipe_processes.h"

#include "ouroboros/engine/worker.h"

namespace ouroboros {

GPipeProcesses::GPipeProcesses(const LanguageModel& model, ParamSet params, const Config& cfg,
                               DistContext& ctx)
    : ProcessMethod(model, std::move(params), cfg, ctx) {
  stage_ = std::make_unique<GPipeStage>(model_, plan_, ctx_.worker(), params_, cfg_);
}

GPipeProcesses::~GPipeProcesses() = default;

void GPipeProcesses::run(int64_t first, int64_t count, const BatchFn& batch,
                         const LossFn& on_loss) {
  ctx_.open_job(jobs_++);  // rank 0 may have been evaluating
  stage_->run(*transport_, first, count, &batch, &on_loss);
  ticks_run_ += count;
}

// This worker's entries over what a restore gave for the others (rank 0 reads it only through
// the shards, so it serves a threaded resume of the same run).
MethodState GPipeProcesses::state() const {
  MethodState s = peers_state();
  stage_->collect_state(s);
  return s;
}

std::optional<CheckpointShard> GPipeProcesses::shard() const {
  CheckpointShard out;
  out.rank = ctx_.rank();
  out.world = ctx_.world_size();
  MethodState mine;
  mine.generators.resize(static_cast<size_t>(plan_.partition.K));
  stage_->collect_state(mine);
  for (int64_t k : plan_.partition.modules_of_worker(ctx_.worker())) {
    out.generators[k] = mine.generators[static_cast<size_t>(k - 1)];
  }
  out.model = stage_->params();
  out.optimizer = mine.optimizer;
  return out;
}

void GPipeProcesses::restore(const MethodState& s, int64_t /*tick*/) {
  check_generator_count(s, static_cast<size_t>(plan_.partition.K), "modules");
  stage_->restore_state(s);
  peers_ = s;
}

std::string GPipeProcesses::describe() const {
  return "gpipe: " + std::to_string(plan_.micro_batches) + " micro-batches per step\n" +
         plan_.partition.describe(plan_.cost) + processes_line("one worker each");
}

}  // namespace ouroboros
