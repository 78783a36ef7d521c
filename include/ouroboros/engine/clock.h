// The pipeline clock of the Ouroboros engines (threads and processes alike): which tick comes
// next, where the delayed pipeline last (re)started, the synchronous warm-up window, the drain
// after the last forward, and where a resumed run picks up. Engines walk the ticks of the jobs it
// hands out; the serial simulator keeps its own clock, so it checks this one.
#pragma once

#include <cstdint>
#include <limits>

#include "ouroboros/core/config.h"

namespace ouroboros {

// The batches a tick may touch: ops on a batch outside [start, horizon) are skipped. start is
// where the pipeline last (re)started (tick 0, end of synchronous warm-up, a drain); horizon is
// the first batch not forwarded (no limit while training, the last tick + 1 while draining).
struct TickWindow {
  int64_t tick = 0;
  int64_t start = 0;
  int64_t horizon = std::numeric_limits<int64_t>::max();
  double lr = 0.0;
  bool synchronous = false;  // no delay: every module uses the live weights
};

// Ticks [first, first + count) that every worker walks.
struct ClockJob {
  int64_t first = 0, count = 0;
  bool drain = false;  // no new forwards: apply what is in flight
  int64_t start = 0;   // first batch of the current delayed pipeline
  int64_t horizon = std::numeric_limits<int64_t>::max();  // first batch not forwarded
};

class PipelineClock {
 public:
  // K modules; the first cfg.engine.sync_warmup ticks run synchronously.
  explicit PipelineClock(const Config& cfg);

  // The job of Method::run(first, count); throws Error unless first is the next tick.
  ClockJob run(int64_t first, int64_t count) const;
  // The drain: K-1 ticks after the last forward that run every pending backward and update at
  // the last forward tick's learning rate; count 0 when nothing delayed is in flight.
  ClockJob drain() const;
  // Tick t of a job.
  TickWindow window(const ClockJob& job, int64_t t) const;
  // After every worker walked the job: the next run continues after it, and after a drain the
  // pipeline refills from empty.
  void finished(const ClockJob& job);
  // A run resumed from a checkpoint written after `tick` ticks: drained (the pipeline refills from
  // empty), or holding its pipeline, which started at `start`.
  void resume(int64_t tick);
  void resume(int64_t tick, int64_t start);
  int64_t next_tick() const { return next_tick_; }
  int64_t pipeline_start() const { return pipeline_start_; }

 private:
  TrainConfig train_;
  int64_t K_, sync_warmup_;
  int64_t next_tick_ = 0;       // first tick not yet run
  int64_t pipeline_start_ = 0;  // first batch of the current delayed pipeline
};

}  // namespace ouroboros
