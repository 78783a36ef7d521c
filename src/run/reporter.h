// The progress lines, JSONL metrics file and TensorBoard event files of a training run (the lead
// rank's), private to the run layer.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <optional>
#include <ostream>
#include <set>
#include <string>

#include "ouroboros/core/config.h"
#include "ouroboros/run/tensorboard.h"
#include "ouroboros/train/evaluate.h"
#include "ouroboros/train/optim.h"

namespace ouroboros {

// The metrics file of a run: train.metrics, else out_dir/metrics.jsonl.
// A file a run may write its metrics over: none yet, empty, or JSON objects one per line (the last
// one may be cut by a crash). Anything else is a ConfigError: it is never truncated.
void check_is_metrics(const std::string& path);
std::string metrics_path(const Config& cfg);
// The run ids of a metrics file's records, "" for records written before runs had ids (none for
// a file that is missing or empty).
std::set<std::string> metrics_runs(const std::string& path);

class Reporter {
 public:
  using Clock = std::chrono::steady_clock;
  // Every record, with the run's id, goes to the metrics file and, as scalars "<group>/<field>",
  // to a new TensorBoard event file in the out-dir, named with the id. `replace` (a fresh run, or
  // --overwrite) first empties the metrics file and removes the event files there; otherwise the
  // run continues the metrics and the curves from first_step: records past it, written after the
  // checkpoint by the run that stopped, are dropped from both so none appears twice.
  Reporter(const Config& cfg, const std::string& run, std::ostream& log, bool quiet, bool replace,
           int64_t first_step);

  void loss(int64_t tick, double value);
  void eval(int64_t step, const std::string& split, const EvalResult& r, bool chars);
  // One module's update statistics (train.diagnostics_interval): one record per module.
  void module_stats(const ModuleStats& m);
  // A checkpoint written: its size, the seconds it took and the batches it holds in flight.
  void checkpoint(int64_t step, const std::string& path, double bytes, double seconds,
                  int64_t in_flight);

  // Time spent evaluating or checkpointing does not count as training speed.
  void pause_clock() { paused_at_ = Clock::now(); }
  void resume_clock() { last_time_ += Clock::now() - paused_at_; }

  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  double last_mean() const { return last_mean_; }

 private:
  // One record: a line of the metrics file and one event of scalars "<group>/<field>".
  void record(nlohmann::json j, const std::string& group);

  const Config& cfg_;
  const std::string run_;
  std::ostream& log_;
  bool quiet_;
  std::ofstream metrics_;
  std::optional<EventFileWriter> events_;
  Clock::time_point start_, last_time_, paused_at_;
  int64_t last_step_;
  double window_sum_ = 0.0, last_mean_ = 0.0;
  int64_t window_count_ = 0;
};

}  // namespace ouroboros
