// label: unit
// The pipeline clock both Ouroboros engines walk: tick windows of the synchronous warm-up and the
// delayed pipeline, the drain after the last forward, and the positions a resume restores.
#include "ouroboros/engine/clock.h"

#include <gtest/gtest.h>

#include "ouroboros/core/errors.h"
#include "ouroboros/train/optim.h"
#include "test_util.h"

namespace ouroboros {
namespace {

TEST(PipelineClock, RunsWalkTheTicksInOrderAndRefuseGaps) {
  const Config cfg = ouroboros_test::tiny_config(3);
  PipelineClock clock(cfg);
  ClockJob job = clock.run(0, 5);
  EXPECT_EQ(job.first, 0);
  EXPECT_EQ(job.count, 5);
  EXPECT_FALSE(job.drain);
  EXPECT_EQ(job.start, 0);
  clock.finished(job);
  EXPECT_EQ(clock.next_tick(), 5);
  EXPECT_THROW(clock.run(4, 1), Error);  // tick 5 comes next
  const TickWindow w = clock.window(clock.run(5, 2), 6);
  EXPECT_EQ(w.tick, 6);
  EXPECT_EQ(w.start, 0);
  EXPECT_FALSE(w.synchronous);
  EXPECT_DOUBLE_EQ(w.lr, learning_rate(cfg.train, 6));
}

// Ticks t < M run synchronously: the window holds batch t alone. At M the delayed pipeline
// starts empty.
TEST(PipelineClock, SynchronousWarmUpWindowsHoldOneBatch) {
  Config cfg = ouroboros_test::tiny_config(3);
  cfg.engine.sync_warmup = 4;
  PipelineClock clock(cfg);
  const ClockJob job = clock.run(0, 8);
  EXPECT_EQ(job.start, 4);
  for (int64_t t = 0; t < 4; ++t) {
    const TickWindow w = clock.window(job, t);
    EXPECT_TRUE(w.synchronous) << t;
    EXPECT_EQ(w.start, t);
    EXPECT_EQ(w.horizon, t + 1);
  }
  const TickWindow w = clock.window(job, 4);
  EXPECT_FALSE(w.synchronous);
  EXPECT_EQ(w.start, 4);
  // Nothing delayed is in flight before the warm-up ends: no drain ticks.
  PipelineClock early(cfg);
  early.finished(early.run(0, 3));
  EXPECT_EQ(early.drain().count, 0);
}

// A drain runs K - 1 ticks with the horizon at the last forward and that tick's learning rate;
// afterwards the pipeline restarts empty there, and a second drain has nothing to do.
TEST(PipelineClock, DrainAppliesWhatIsInFlightThenRestartsThePipeline) {
  const Config cfg = ouroboros_test::tiny_config(4);
  PipelineClock clock(cfg);
  clock.finished(clock.run(0, 7));
  const ClockJob drain = clock.drain();
  EXPECT_TRUE(drain.drain);
  EXPECT_EQ(drain.first, 7);
  EXPECT_EQ(drain.count, 3);
  EXPECT_EQ(drain.horizon, 7);
  for (int64_t t = 7; t < 10; ++t) {
    const TickWindow w = clock.window(drain, t);
    EXPECT_FALSE(w.synchronous);
    EXPECT_EQ(w.horizon, 7);
    EXPECT_DOUBLE_EQ(w.lr, learning_rate(cfg.train, 6));
  }
  clock.finished(drain);
  EXPECT_EQ(clock.next_tick(), 7);  // drain ticks forward nothing
  EXPECT_EQ(clock.drain().count, 0);
  EXPECT_EQ(clock.run(7, 1).start, 7);
}

// A checkpoint is written drained, so a resumed run starts a fresh pipeline at its step (or at
// the end of the synchronous warm-up, if that is later).
TEST(PipelineClock, ResumeStartsAFreshPipelineAtTheCheckpoint) {
  Config cfg = ouroboros_test::tiny_config(3);
  cfg.engine.sync_warmup = 10;
  PipelineClock clock(cfg);
  clock.resume(12);
  EXPECT_EQ(clock.next_tick(), 12);
  EXPECT_EQ(clock.run(12, 1).start, 12);
  clock.resume(5);
  EXPECT_EQ(clock.run(5, 1).start, 10);
  EXPECT_TRUE(clock.window(clock.run(5, 1), 5).synchronous);
}

}  // namespace
}  // namespace ouroboros
