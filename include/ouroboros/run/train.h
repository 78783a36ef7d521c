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
  // One process holds the whole model (threads); processes each hold their modules.
  bool single_process = true;
  int64_t world = 1;       // processes in the run (all rings)
  int64_t local_rank = 0;  // this process's index on its machine (--device cuda: its GPU)
  // Processes: called with this rank's value of what every rank must agree on ("vocab": the
  // vocabulary size rank 0 read; "stop": a stop request; "piece": the length of the next piece
  // of a run), returns rank 0's. Each call on a topic is the next value. Unset: one process,
  // whose own value stands.
  std::function<int64_t(const std::string& topic, int64_t mine)> lead_value;
  // Processes: every rank reports its value; rank 0 waits for all of them (within the timeout)
  // and gets their sum, the others their own. Unset: one process.
  std::function<int64_t(const std::string& topic, int64_t mine)> sum_at_lead;
};

struct TrainOptions {
  std::string resume;           // checkpoint to continue from; "" = fresh start
  int64_t stop_after = -1;      // stop (with a checkpoint) after this tick count; -1 = cfg.steps
  std::ostream* log = nullptr;  // progress lines; nullptr = std::cout
  bool quiet = false;           // no progress lines (tests)
  // Builds the method instead of make_method (worker processes, the serial simulator).
  MethodFactory method_factory;
  RankRole role;
  // Replace the run out_dir holds, also on resume: its metrics and event files start afresh, its
  // checkpoint is replaced at the first save. Otherwise a fresh run is refused an out-dir holding
  // a run, and a resumed one an out-dir holding another run (check_out_dir).
  bool overwrite = false;
  // Answer request_stop() within about this many seconds (runs are cut into pieces that long;
  // 0 = never look): the run drains, writes its checkpoint and returns with stopped set.
  double stop_check_seconds = 0.0;
};

struct TrainResult {
  int64_t steps = 0;
  double final_train_loss = 0.0;  // mean of the last log interval
  EvalResult valid;
  std::string checkpoint;
  ParamSet params;             // final weights (detached)
  std::vector<double> losses;  // loss of every tick run
  bool stopped = false;        // ended early by request_stop(), with a checkpoint
};

// Asks the running train() to stop at its next check (async-signal-safe: a signal handler may
// call it); the first request's signal number is kept. stop_requested() returns it (0: none).
void request_stop(int signal_number);
int stop_requested();

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

struct Plan;

// Bytes a run in one process needs, estimated from the config before anything is allocated:
// weights, gradients, optimizer state and the delayed modules' weight versions, the graphs (and,
// recomputed, the inputs) the method holds at once, and the process's own runtime. train()
// refuses a run that needs more than the machine; Ouroboros' is taken on its plan.
double estimated_memory_bytes(const Config& cfg, const LanguageModel& model);
// The same for Ouroboros on a given plan (its cut and micro-batches); other methods ignore it.
double estimated_memory_bytes(const Config& cfg, const LanguageModel& model, const Plan& plan);

// One rank of `ouroboros train` in a process group: train() with a OuroborosProcesses on every
// rank, rank 0 leading; then rank 0 reports every rank's traffic. Returns rank 0's result.
TrainResult train_distributed(const Config& cfg, const TrainOptions& opts, const DistEnv& env);

}  // namespace ouroboros
