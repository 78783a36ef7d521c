// The training loop every method and every rank walks: data, model, method, the list of jobs
// (run N ticks, evaluate, checkpoint, final drain), progress, metrics, checkpoints and the one
// restore path. Processes (docs/DISTRIBUTED.md) run the same loop on every rank.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "ouroboros/core/config.h"
#include "ouroboros/dist/env.h"
#include "ouroboros/train/evaluate.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

using MethodFactory =
    std::function<std::unique_ptr<Method>(const Config&, const LanguageModel&, ParamSet)>;

// What this process does in a run; the defaults are those of a run in one process.
struct RankRole {
  // Rank 0: checks the data against the config, logs, evaluates, writes metrics and checkpoints.
  bool lead = true;
  // Worker 0 of a ring: reads the corpus and draws the batches (middle workers never open it).
  bool draws_batches = true;
  // Processes: rank 0 publishes the vocabulary size it read, the others receive it.
  std::function<int64_t(int64_t)> share_vocab;
};

struct TrainOptions {
  std::string resume;         // checkpoint to continue from; "" = fresh start
  int64_t stop_after = -1;    // stop (with a checkpoint) after this tick count; -1 = cfg.steps
  std::ostream* log = nullptr;  // progress lines; nullptr = std::cout
  bool quiet = false;         // no progress lines (tests)
  // Builds the method instead of make_method (worker processes, the serial simulator).
  MethodFactory method_factory;
  RankRole role;
};

struct TrainResult {
  int64_t steps = 0;
  double final_train_loss = 0.0;  // mean of the last log interval
  EvalResult valid;
  std::string checkpoint;
  ParamSet params;                // final weights (detached)
  std::vector<double> losses;     // loss of every tick run
};

// One step of a run. Every rank walks the same list, so collective jobs line up.
struct TrainJob {
  enum Kind { kRun, kEvaluate, kCheckpoint, kFinal } kind = kRun;
  int64_t first = 0, count = 0;  // kRun: ticks [first, first + count); else the step it is at
};
// The jobs from step `from` to `end` (<= cfg.steps): runs between evaluation and checkpoint
// boundaries, an evaluation at every eval_interval before cfg.steps, a checkpoint at every
// checkpoint_interval before end, and the final checkpoint (with an evaluation at cfg.steps).
std::vector<TrainJob> training_jobs(const TrainConfig& cfg, int64_t from, int64_t end);

// The whole job: data, model, method, progress, evaluation, metrics, checkpoints, resume.
// Returns the lead's result (other ranks: steps and losses only).
TrainResult train(Config cfg, const TrainOptions& opts);

// One rank of `ouroboros train` in a process group: train() with a DistributedEngine on every
// rank, rank 0 leading; then rank 0 reports every rank's traffic. Returns rank 0's result.
TrainResult train_distributed(const Config& cfg, const TrainOptions& opts, const DistEnv& env);

}  // namespace ouroboros
