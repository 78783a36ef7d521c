// The pipeline clock: run, drain and resume positions, and the window of every tick.
#include "ouroboros/engine/clock.h"

#include <algorithm>
#include <string>

#include "ouroboros/core/errors.h"
#include "ouroboros/train/optim.h"

namespace ouroboros {

PipelineClock::PipelineClock(const Config& cfg)
    : train_(cfg.train),
      K_(cfg.engine.modules),
      sync_warmup_(cfg.engine.sync_warmup),
      pipeline_start_(cfg.engine.sync_warmup) {}

ClockJob PipelineClock::run(int64_t first, int64_t count) const {
  if (first != next_tick_) {
    throw Error("engine expected tick " + std::to_string(next_tick_) + ", got " +
                std::to_string(first));
  }
  ClockJob job;
  job.first = first;
  job.count = count;
  job.start = pipeline_start_;
  return job;
}

ClockJob PipelineClock::drain() const {
  ClockJob job;
  job.first = next_tick_;
  job.count = next_tick_ > pipeline_start_ ? K_ - 1 : 0;  // nothing delayed in flight: no ticks
  job.drain = true;
  job.start = pipeline_start_;
  job.horizon = next_tick_;
  return job;
}

TickWindow PipelineClock::window(const ClockJob& job, int64_t t) const {
  TickWindow w;
  w.tick = t;
  w.start = job.start;
  w.horizon = job.horizon;
  w.synchronous = !job.drain && t < sync_warmup_;
  if (w.synchronous) {
    w.start = t;
    w.horizon = t + 1;
  }
  // Drain ticks apply what is left at the last forward tick's learning rate.
  w.lr = learning_rate(train_, job.drain ? job.horizon - 1 : t);
  return w;
}

void PipelineClock::finished(const ClockJob& job) {
  if (job.drain) {
    if (job.count > 0) pipeline_start_ = job.horizon;
  } else {
    next_tick_ = job.first + job.count;
  }
}

void PipelineClock::resume(int64_t tick) {
  next_tick_ = tick;
  pipeline_start_ = std::max(tick, sync_warmup_);
}

void PipelineClock::resume(int64_t tick, int64_t start) {
  next_tick_ = tick;
  pipeline_start_ = start;
}

}  // namespace ouroboros
