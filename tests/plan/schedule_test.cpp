// label: unit
// The schedule as a value (docs/ALGORITHM.md section 5): exact staircases, parse/print round trips,
// validation by symbolic execution, and the discrete-event simulation.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ouroboros/core/errors.h"
#include "ouroboros/plan/partition.h"
#include "ouroboros/plan/planner.h"
#include "ouroboros/plan/schedule.h"
#include "plan_util.h"

namespace ouroboros {
namespace {

template <typename F>
void expect_plan_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no PlanError";
  } catch (const PlanError& e) {
    const std::string what = e.what();
    for (const std::string& n : needles)
      EXPECT_NE(what.find(n), std::string::npos) << "message '" << what << "' lacks '" << n << "'";
    EXPECT_EQ(what.find('\n'), std::string::npos) << "one line only";
  }
}

// Enough blocks that every K up to 8 has a block in each middle module.
Schedule schedule_for(int64_t K, bool sync = false) {
  return build_schedule(plan_partition(2 * K, K, "even", CostModel{}), sync);
}

TEST(Schedule, DelayedK1) { EXPECT_EQ(schedule_for(1).to_string(), "w0: F1(t) B1(t) U\n"); }

TEST(Schedule, DelayedK2) {
  EXPECT_EQ(schedule_for(2).to_string(), "w0: F1(t) B1(t-1) F2(t) B2(t) U\n");
  EXPECT_EQ(schedule_for(2, true).to_string(), "w0: F1(t) F2(t) B2(t) B1(t) U\n");
}

TEST(Schedule, DelayedK3) {
  EXPECT_EQ(schedule_for(3).to_string(),
            "w0: F1(t) >A1(t):w1 <E1(t-2):w1 B1(t-2) <A2(t):w1 F3(t) B3(t) >E2(t):w1 U\n"
            "w1: <A1(t):w0 F2(t) >A2(t):w0 <E2(t-1):w0 B2(t-1) >E1(t-1):w0 U\n");
}

TEST(Schedule, DelayedK4) {
  EXPECT_EQ(schedule_for(4).to_string(),
            "w0: F1(t) >A1(t):w1 <E1(t-3):w1 B1(t-3) <A3(t):w2 F4(t) B4(t) >E3(t):w2 U\n"
            "w1: <A1(t):w0 F2(t) >A2(t):w2 <E2(t-2):w2 B2(t-2) >E1(t-2):w0 U\n"
            "w2: <A2(t):w1 F3(t) >A3(t):w0 <E3(t-1):w0 B3(t-1) >E2(t-1):w1 U\n");
}

TEST(Schedule, SynchronousK3) {
  const Schedule s = schedule_for(3, true);
  EXPECT_TRUE(s.synchronous);
  EXPECT_EQ(s.to_string(),
            "w0: F1(t) >A1(t):w1 <A2(t):w1 F3(t) B3(t) >E2(t):w1 <E1(t):w1 B1(t) U\n"
            "w1: <A1(t):w0 F2(t) >A2(t):w0 <E2(t):w0 B2(t) >E1(t):w0 U\n");
}

TEST(Schedule, OpsAndShape) {
  const Schedule s = schedule_for(5);
  EXPECT_EQ(s.K, 5);
  EXPECT_EQ(s.num_workers, 4);
  ASSERT_EQ(s.workers.size(), 4u);
  EXPECT_EQ(s.workers[0][3], (Op{OpKind::Backward, 1, 4, -1}));
  EXPECT_EQ(s.workers[2][0], (Op{OpKind::RecvAct, 2, 0, 1}));
  EXPECT_EQ(s.workers[2][0].to_string(), "<A2(t):w1");
  EXPECT_EQ(s.workers[2][3], (Op{OpKind::RecvErr, 3, 2, 3}));
  EXPECT_EQ(s.workers[2][3].to_string(), "<E3(t-2):w3");
  EXPECT_EQ((Op{OpKind::Update, 0, 0, -1}).to_string(), "U");
}

TEST(Schedule, ParseRoundTrip) {
  for (int64_t K = 1; K <= 6; ++K)
    for (bool sync : {false, true}) {
      SCOPED_TRACE("K=" + std::to_string(K) + (sync ? " sync" : " delayed"));
      const Schedule s = schedule_for(K, sync);
      const Schedule back = Schedule::parse(s.to_string(), K, sync);
      EXPECT_EQ(back, s);
      EXPECT_EQ(back.to_string(), s.to_string());
    }
}

TEST(Schedule, ParseErrors) {
  expect_plan_error([] { Schedule::parse("w0: F1(t) X2(t) U\n", 1); }, {"'X2(t)'"});
  expect_plan_error([] { Schedule::parse("w0: F1(t+1) B1(t) U\n", 1); }, {"'F1(t+1)'"});
  expect_plan_error([] { Schedule::parse("w0: F1(t) >A1(t) U\nw1: U\n", 3); }, {"'>A1(t)'"});
  expect_plan_error([] { Schedule::parse("w0: F1(t) >Q1(t):w1 U\nw1: U\n", 3); }, {"'>Q1(t):w1'"});
  expect_plan_error([] { Schedule::parse("w0: F4(t) U\nw1: U\n", 3); }, {"'F4(t)'", "K=3"});
  expect_plan_error([] { Schedule::parse("w0: >A1(t):w5 U\nw1: U\n", 3); }, {"'>A1(t):w5'"});
  expect_plan_error([] { Schedule::parse("w0: F1(t) B1(t) U\n", 3); }, {"no line for w1"});
  expect_plan_error([] { Schedule::parse("w0: U\nw0: U\n", 3); }, {"w0 is repeated"});
  expect_plan_error([] { Schedule::parse("x0: U\n", 1); }, {"'x0: U'"});
}

TEST(Schedule, GridK3) {
  // Backward of module k first appears at tick K-k: B3 at 0, B2 at 1, B1 at 2.
  EXPECT_EQ(schedule_for(3).grid(4),
            "tick  w0                                                                 w1\n"
            "0     F1(0) >A1(0):w1 <A2(0):w1 F3(0) B3(0) >E2(0):w1 U                  "
            "<A1(0):w0 F2(0) >A2(0):w0 U\n"
            "1     F1(1) >A1(1):w1 <A2(1):w1 F3(1) B3(1) >E2(1):w1 U                  "
            "<A1(1):w0 F2(1) >A2(1):w0 <E2(0):w0 B2(0) >E1(0):w0 U\n"
            "2     F1(2) >A1(2):w1 <E1(0):w1 B1(0) <A2(2):w1 F3(2) B3(2) >E2(2):w1 U  "
            "<A1(2):w0 F2(2) >A2(2):w0 <E2(1):w0 B2(1) >E1(1):w0 U\n"
            "3     F1(3) >A1(3):w1 <E1(1):w1 B1(1) <A2(3):w1 F3(3) B3(3) >E2(3):w1 U  "
            "<A1(3):w0 F2(3) >A2(3):w0 <E2(2):w0 B2(2) >E1(2):w0 U\n");
}

TEST(Schedule, GridK1) {
  EXPECT_EQ(schedule_for(1).grid(2),
            "tick  w0\n"
            "0     F1(0) B1(0) U\n"
            "1     F1(1) B1(1) U\n");
}

TEST(Schedule, ValidatePasses) {
  for (int64_t K = 1; K <= 8; ++K)
    for (bool sync : {false, true}) {
      SCOPED_TRACE("K=" + std::to_string(K) + (sync ? " sync" : " delayed"));
      EXPECT_NO_THROW(schedule_for(K, sync).validate());
    }
}

TEST(Schedule, ValidateBackwardBeforeForward) {
  expect_plan_error([] { Schedule::parse("w0: B1(t) F1(t) U\n", 1).validate(); },
                    {"B1(t) on w0 at tick 0", "before F1(0)"});
}

TEST(Schedule, ValidateMissingMailboxInput) {
  // Synchronous K=2 with B1 before B2: B1 has no error to back-propagate yet.
  expect_plan_error([] { Schedule::parse("w0: F1(t) F2(t) B1(t) B2(t) U\n", 2, true).validate(); },
                    {"B1(t) on w0", "no input E1(0)"});
  // Sending an activation before the forward that produces it.
  expect_plan_error(
      [] {
        Schedule::parse(
            "w0: >A1(t):w1 F1(t) <E1(t-2):w1 B1(t-2) <A2(t):w1 F3(t) B3(t) "
            ">E2(t):w1 U\n"
            "w1: <E2(t-1):w0 B2(t-1) >E1(t-1):w0 <A1(t):w0 F2(t) >A2(t):w0 U\n",
            3)
            .validate();
      },
      {">A1(t):w1 on w0", "A1(0) is not in the mailbox"});
}

TEST(Schedule, ValidateUnmatchedReceive) {
  // w0 forgets to send A1: w1's receive can never complete.
  expect_plan_error(
      [] {
        Schedule::parse(
            "w0: F1(t) <E1(t-2):w1 B1(t-2) <A2(t):w1 F3(t) B3(t) >E2(t):w1 U\n"
            "w1: <E2(t-1):w0 B2(t-1) >E1(t-1):w0 <A1(t):w0 F2(t) >A2(t):w0 U\n",
            3)
            .validate();
      },
      {"<A1(t):w0 on w1", "never matched", "w0 has no send of A1 to w1"});
}

TEST(Schedule, ValidateWrongWorker) {
  // Module 2 belongs on w1, not w0.
  expect_plan_error(
      [] {
        Schedule::parse(
            "w0: F1(t) F2(t) >A2(t):w1 <E2(t-1):w1 B2(t-1) U\n"
            "w1: <A2(t):w0 F3(t) B3(t) >E2(t):w0 B1(t-2) U\n",
            3)
            .validate();
      },
      {"F2(t) on w0", "module 2 lives on w1"});
}

TEST(Schedule, ValidateCyclicDeadlock) {
  // w0 waits for A2 before sending A1; w1 needs A1 to produce A2.
  expect_plan_error(
      [] {
        Schedule::parse(
            "w0: F1(t) <A2(t):w1 >A1(t):w1 <E1(t-2):w1 B1(t-2) F3(t) B3(t) "
            ">E2(t):w1 U\n"
            "w1: <E2(t-1):w0 B2(t-1) >E1(t-1):w0 <A1(t):w0 F2(t) >A2(t):w0 U\n",
            3)
            .validate();
      },
      {"deadlock", "w0 tick 0 waits at <A2(t):w1", "w1 tick 0 waits at <A1(t):w0"});
}

TEST(Schedule, ValidateStructure) {
  // The delayed schedule must back-propagate module 2 with delay K-2 = 1.
  expect_plan_error(
      [] {
        Schedule::parse(
            "w0: F1(t) >A1(t):w1 <E1(t-2):w1 B1(t-2) <A2(t):w1 F3(t) B3(t) "
            ">E2(t):w1 U\n"
            "w1: <A1(t):w0 F2(t) >A2(t):w0 <E2(t):w0 B2(t) >E1(t):w0 U\n",
            3)
            .validate();
      },
      {"B2(t) on w1 has lag 0 but needs 1"});
  expect_plan_error([] { Schedule::parse("w0: F1(t) B1(t)\n", 1).validate(); }, {"w0 has 0 U ops"});
  expect_plan_error([] { Schedule::parse("w0: F1(t) U\n", 1).validate(); },
                    {"module 1 has 1 forward and 0 backward"});
}

// Blocks cost 1 each, embed and updates free, head 0.2; K=3 cut 2/2/0: both workers carry
// about the same work (w0: 3*2 + 3*0.2, w1: 3*2).
CostModel balanced_cost() {
  CostModel c;
  c.block_forward.assign(4, 1.0);
  c.head_forward = 0.2;
  return c;
}

TEST(Simulate, K1IsSequential) {
  const CostModel cost = ouroboros_test::gpt_cost_model(4, 128, 64, 256, 4);
  const Partition p = make_partition(4, 1, {});
  const SimResult r = simulate(build_schedule(p), p, cost);
  EXPECT_NEAR(r.speedup(), 1.0, 1e-9);
  EXPECT_NEAR(r.tick_time,
              3 * cost.module_forward(0, 4, true, true) + 4 * cost.update_per_block +
                  cost.update_embed_head,
              1e-12);
  ASSERT_EQ(r.busy.size(), 1u);
  EXPECT_NEAR(r.busy[0], 1.0, 1e-9);
}

TEST(Simulate, K3BalancedSpeedup) {
  const CostModel cost = balanced_cost();
  const Partition p = make_partition(4, 3, {2, 4});
  const SimResult r = simulate(build_schedule(p), p, cost);
  // Per tick: w1 runs B2 (4) then F2 (2) while w0 runs F1 (2) and B1 (4); then F3, B3 (0.6).
  EXPECT_NEAR(r.tick_time, 6.6, 1e-9);
  EXPECT_NEAR(r.sequential_time, 12.6, 1e-9);
  EXPECT_GT(r.speedup(), 1.8);
  ASSERT_EQ(r.busy.size(), 2u);
  EXPECT_NEAR(r.busy[0], 1.0, 1e-9);
  EXPECT_NEAR(r.busy[1], 6.0 / 6.6, 1e-9);
}

TEST(Simulate, SynchronousNeverFaster) {
  CostModel cost = ouroboros_test::gpt_cost_model(8, 128, 64, 256, 4);
  cost.update_per_block = cost.update_embed_head = 0.0;
  for (int64_t K = 1; K <= 6; ++K) {
    SCOPED_TRACE("K=" + std::to_string(K));
    const Partition p = plan_partition(8, K, "even", cost);
    const SimResult sync = simulate(build_schedule(p, true), p, cost);
    EXPECT_LE(sync.speedup(), 1.0 + 1e-9);
    EXPECT_GE(simulate(build_schedule(p), p, cost).speedup(), sync.speedup() - 1e-9);
  }
  const Partition p3 = make_partition(4, 3, {2, 4});
  EXPECT_NEAR(simulate(build_schedule(p3, true), p3, balanced_cost()).speedup(), 1.0, 1e-9);
}

TEST(Simulate, SynchronousHidesOnlyMiddleUpdates) {
  // A middle worker's update overlaps the rest of the backward chain, so with update costs the
  // synchronous tick is the sequential time less the middle workers' updates.
  const CostModel cost = ouroboros_test::gpt_cost_model(8, 128, 64, 256, 4);
  const Partition p = plan_partition(8, 4, "even", cost);  // middle modules hold 2 + 2 blocks
  const SimResult r = simulate(build_schedule(p, true), p, cost);
  EXPECT_NEAR(r.tick_time, r.sequential_time - 4 * cost.update_per_block, 1e-9 * r.sequential_time);
}

TEST(Simulate, Errors) {
  const Partition p3 = make_partition(4, 3, {2, 4});
  const Partition p4 = make_partition(4, 4, {1, 2, 3});
  expect_plan_error([&] { simulate(build_schedule(p4), p3, balanced_cost()); }, {"K=4", "K=3"});
  expect_plan_error([&] { simulate(build_schedule(p3), p3, balanced_cost(), 0); }, {"0 ticks"});
}

}  // namespace
}  // namespace ouroboros

namespace ouroboros {
namespace {

// ---- micro-batches ------------------------------------------------------------------------------

Schedule micro_schedule_for(int64_t K, int64_t M, bool sync = false) {
  return build_schedule(plan_partition(2 * K, K, "even", CostModel{}), sync, M);
}

TEST(MicroBatches, DelayedK3TwoPieces) {
  const Schedule s = micro_schedule_for(3, 2);
  EXPECT_EQ(s.micro_batches, 2);
  EXPECT_EQ(
      s.to_string(),
      "w0: F1(t)[1] >A1(t)[1]:w1 F1(t)[2] >A1(t)[2]:w1 <E1(t-2)[1]:w1 B1(t-2)[1] "
      "<E1(t-2)[2]:w1 B1(t-2)[2] <A2(t)[1]:w1 F3(t)[1] B3(t)[1] >E2(t)[1]:w1 "
      "<A2(t)[2]:w1 F3(t)[2] B3(t)[2] >E2(t)[2]:w1 U\n"
      "w1: <A1(t)[1]:w0 F2(t)[1] >A2(t)[1]:w0 <A1(t)[2]:w0 F2(t)[2] >A2(t)[2]:w0 "
      "<E2(t-1)[1]:w0 B2(t-1)[1] >E1(t-1)[1]:w0 <E2(t-1)[2]:w0 B2(t-1)[2] >E1(t-1)[2]:w0 U\n");
}

TEST(MicroBatches, SynchronousK3IsGPipeOrder) {
  EXPECT_EQ(micro_schedule_for(3, 2, true).to_string(),
            "w0: F1(t)[1] >A1(t)[1]:w1 F1(t)[2] >A1(t)[2]:w1 <A2(t)[1]:w1 F3(t)[1] B3(t)[1] "
            ">E2(t)[1]:w1 <A2(t)[2]:w1 F3(t)[2] B3(t)[2] >E2(t)[2]:w1 <E1(t)[1]:w1 B1(t)[1] "
            "<E1(t)[2]:w1 B1(t)[2] U\n"
            "w1: <A1(t)[1]:w0 F2(t)[1] >A2(t)[1]:w0 <A1(t)[2]:w0 F2(t)[2] >A2(t)[2]:w0 "
            "<E2(t)[1]:w0 B2(t)[1] >E1(t)[1]:w0 <E2(t)[2]:w0 B2(t)[2] >E1(t)[2]:w0 U\n");
}

TEST(MicroBatches, OnePieceIsTheWholeBatchSchedule) {
  for (int64_t K = 1; K <= 6; ++K)
    for (bool sync : {false, true})
      EXPECT_EQ(micro_schedule_for(K, 1, sync), schedule_for(K, sync));
}

TEST(MicroBatches, EveryShapeValidatesAndRoundTrips) {
  for (int64_t K = 1; K <= 6; ++K)
    for (int64_t M : {2, 3, 4, 8})
      for (bool sync : {false, true}) {
        SCOPED_TRACE("K=" + std::to_string(K) + " M=" + std::to_string(M) +
                     (sync ? " sync" : " delayed"));
        const Schedule s = micro_schedule_for(K, M, sync);
        EXPECT_NO_THROW(s.validate());
        const Schedule back = Schedule::parse(s.to_string(), K, sync);
        EXPECT_EQ(back, s);
        EXPECT_EQ(back.micro_batches, M);
      }
}

TEST(MicroBatches, GridNamesThePieces) {
  const std::string g = micro_schedule_for(2, 2).grid(2);
  EXPECT_NE(g.find("F1(0)[1] F1(0)[2] F2(0)[1] B2(0)[1] F2(0)[2] B2(0)[2] U"), std::string::npos)
      << g;
  EXPECT_NE(g.find("B1(0)[1] B1(0)[2]"), std::string::npos) << g;
}

TEST(MicroBatches, MalformedPiecesAreOneLineErrors) {
  expect_plan_error([] { Schedule::parse("w0: F1(t)[0] B1(t)[1] U\n", 1); }, {"'F1(t)[0]'"});
  expect_plan_error([] { Schedule::parse("w0: F1(t)[1 B1(t)[1] U\n", 1); }, {"'F1(t)[1'"});
  // Piece 2 has a forward and no backward.
  expect_plan_error([] { Schedule::parse("w0: F1(t)[1] F1(t)[2] B1(t)[1] U\n", 1).validate(); },
                    {"module 1", "micro-batch 2", "one F and one B per micro-batch"});
  // A whole-batch op among pieces.
  expect_plan_error(
      [] { Schedule::parse("w0: F1(t)[1] F1(t)[2] B1(t) B1(t)[2] U\n", 1).validate(); },
      {"B1(t)", "micro-batch 0", "M=2"});
  // A piece's error is sent before its backward made it.
  expect_plan_error(
      [] {
        Schedule s = micro_schedule_for(3, 2);
        std::swap(s.workers[1][7], s.workers[1][8]);  // B2(t-1)[1] and >E1(t-1)[1]
        s.validate();
      },
      {"nothing to send", "E1(", ")[1]"});
  expect_plan_error(
      [] {
        build_schedule(make_partition(4, 3, {2, 4}), false, 0);
      },
      {"0 micro-batches"});
}

// Each piece's op costs 1/M of the batch's; with free messages the forward lock goes away. The
// benchmark model's blocks (C = 256, T = 128, V = 256) at 24 layers on W = 8 workers, each cut
// planned for its M.
TEST(MicroBatches, SimulatedSpeedupGrowsTowardTheWorkers) {
  CostModel cost = ouroboros_test::gpt_cost_model(24, 256, 128, 256, 8);
  cost.update_per_block = cost.update_embed_head = 0.0;
  const auto speedup = [&](int64_t M) {
    const Partition p = plan_partition(24, 9, "auto", cost, M);
    return simulate(build_schedule(p, false, M), p, cost).speedup();
  };
  EXPECT_LT(speedup(1), 3.0);
  EXPECT_GT(speedup(4), 6.0);
  EXPECT_GT(speedup(8), 6.0);
  EXPECT_LT(speedup(8), 8.0 + 1e-9);
  // K = 3 on 2 workers: pieces help an unbalanced cut, but the best cut of whole batches already
  // keeps both workers busy, so the best of either is the same.
  CostModel c6 = ouroboros_test::gpt_cost_model(6, 256, 128, 256, 8);
  c6.update_per_block = c6.update_embed_head = 0.0;
  const Partition q = make_partition(6, 3, {1, 4});
  EXPECT_LT(simulate(build_schedule(q, false, 4), q, c6).tick_time,
            simulate(build_schedule(q, false, 1), q, c6).tick_time);
  const Partition best1 = plan_partition(6, 3, "auto", c6, 1);
  const Partition best4 = plan_partition(6, 3, "auto", c6, 4);
  EXPECT_NEAR(simulate(build_schedule(best4, false, 4), best4, c6).tick_time,
              simulate(build_schedule(best1, false, 1), best1, c6).tick_time, 1e-12);
}

// Blocks times their delay: what the accuracy-minded choice of a cut minimises.
TEST(MicroBatches, DelayedBlockTicks) {
  EXPECT_EQ(delayed_block_ticks(make_partition(6, 3, {2, 4})), 6);
  EXPECT_EQ(delayed_block_ticks(make_partition(6, 3, {2, 5})), 7);
  EXPECT_EQ(delayed_block_ticks(make_partition(6, 3, {0, 3})), 3);
  EXPECT_EQ(delayed_block_ticks(make_partition(8, 4, {1, 3, 5})), 1 * 3 + 2 * 2 + 2 * 1);
  EXPECT_EQ(delayed_block_ticks(make_partition(4, 1, {})), 0);
}

// With a tolerance the planner gives up a little speed for fewer delayed blocks: on the
// benchmark model with 4 pieces, {0, 3} (3 block-ticks) is a few percent slower than the fastest.
TEST(MicroBatches, ToleranceTradesSpeedForFewerDelayedBlocks) {
  CostModel cost = ouroboros_test::gpt_cost_model(6, 256, 128, 256, 8);
  const Partition fastest = plan_partition(6, 3, "auto", cost, 4);
  const Partition accurate = plan_partition(6, 3, "auto", cost, 4, 0.08);
  EXPECT_EQ(accurate.boundaries, (std::vector<int64_t>{0, 3}));
  EXPECT_GT(delayed_block_ticks(fastest), delayed_block_ticks(accurate));
  const double t_fast = simulate(build_schedule(fastest, false, 4), fastest, cost).tick_time;
  const double t_acc = simulate(build_schedule(accurate, false, 4), accurate, cost).tick_time;
  EXPECT_GT(t_acc, t_fast);
  EXPECT_LE(t_acc, 1.08 * t_fast);
  // Whole batches: no cut with fewer delayed blocks is within 1% of the fastest.
  EXPECT_EQ(plan_partition(6, 3, "auto", cost, 1, 0.01).boundaries,
            plan_partition(6, 3, "auto", cost, 1).boundaries);
}

}  // namespace
}  // namespace ouroboros
