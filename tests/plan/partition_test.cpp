// label: unit
// Partition layout (docs/ALGORITHM.md section 2), the "even" and "auto" cuts, and the cost model.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "ouroboros/core/errors.h"
#include "ouroboros/core/presets.h"
#include "ouroboros/plan/partition.h"
#include "ouroboros/plan/planner.h"
#include "ouroboros/plan/schedule.h"
#include "plan_util.h"

namespace ouroboros {
namespace {

using Bounds = std::vector<int64_t>;

// Expects a PlanError whose message contains `needle`.
template <typename F>
void expect_plan_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no PlanError; expected one mentioning '" << needle << "'";
  } catch (const PlanError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' lacks '" << needle << "'";
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line only";
  }
}

void expect_module(const ModulePlan& m, int64_t index, int64_t first, int64_t end, int64_t worker,
                   bool embed, bool head, int64_t delay) {
  SCOPED_TRACE("module " + std::to_string(index));
  EXPECT_EQ(m.index, index);
  EXPECT_EQ(m.first_block, first);
  EXPECT_EQ(m.end_block, end);
  EXPECT_EQ(m.worker, worker);
  EXPECT_EQ(m.embed, embed);
  EXPECT_EQ(m.head, head);
  EXPECT_EQ(m.delay(), delay);
}

// Every block costs 1; the embedding is free, the head costs `head`, updates are free.
CostModel flat_cost(int64_t L, double head) {
  CostModel c;
  c.block_forward.assign(L, 1.0);
  c.head_forward = head;
  return c;
}

const CostModel kNoCost;  // "even" and explicit cuts never read the cost model

TEST(Partition, EvenBoundaries) {
  EXPECT_EQ(plan_partition(6, 3, "even", kNoCost).boundaries, (Bounds{2, 4}));     // 2,2,2
  EXPECT_EQ(plan_partition(4, 3, "even", kNoCost).boundaries, (Bounds{1, 3}));     // 1,2,1
  EXPECT_EQ(plan_partition(2, 4, "even", kNoCost).boundaries, (Bounds{0, 1, 2}));  // 0,1,1,0
  EXPECT_EQ(plan_partition(7, 4, "even", kNoCost).boundaries, (Bounds{2, 4, 6}));  // 2,2,2,1
  EXPECT_EQ(plan_partition(12, 4, "even", kNoCost).boundaries, (Bounds{3, 6, 9}));
  EXPECT_EQ(plan_partition(5, 2, "even", kNoCost).boundaries, (Bounds{3}));  // remainder to 1
  EXPECT_EQ(plan_partition(0, 2, "even", kNoCost).boundaries, (Bounds{0}));
  EXPECT_EQ(plan_partition(5, 1, "even", kNoCost).boundaries, (Bounds{}));
  // Every middle module holds a block even when L is barely enough.
  const Partition p = plan_partition(3, 5, "even", kNoCost);
  EXPECT_EQ(p.boundaries, (Bounds{0, 1, 2, 3}));
}

TEST(Partition, ModulePlansK1) {
  const Partition p = make_partition(4, 1, {});
  EXPECT_EQ(p.num_workers(), 1);
  ASSERT_EQ(p.modules.size(), 1u);
  expect_module(p.module(1), 1, 0, 4, 0, true, true, 0);
  EXPECT_EQ(p.modules_of_worker(0), (Bounds{1}));
}

TEST(Partition, ModulePlansK2) {
  const Partition p = make_partition(4, 2, {1});
  EXPECT_EQ(p.num_workers(), 1);
  ASSERT_EQ(p.modules.size(), 2u);
  expect_module(p.module(1), 1, 0, 1, 0, true, false, 1);
  expect_module(p.module(2), 2, 1, 4, 0, false, true, 0);
  EXPECT_EQ(p.modules_of_worker(0), (Bounds{1, 2}));
}

TEST(Partition, ModulePlansK3) {
  const Partition p = make_partition(6, 3, {2, 4});
  EXPECT_EQ(p.num_workers(), 2);
  expect_module(p.module(1), 1, 0, 2, 0, true, false, 2);
  expect_module(p.module(2), 2, 2, 4, 1, false, false, 1);
  expect_module(p.module(3), 3, 4, 6, 0, false, true, 0);
  EXPECT_EQ(p.modules_of_worker(0), (Bounds{1, 3}));
  EXPECT_EQ(p.modules_of_worker(1), (Bounds{2}));
}

TEST(Partition, ModulePlansK4WithEmptyEnds) {
  const Partition p = make_partition(2, 4, {0, 1, 2});
  EXPECT_EQ(p.num_workers(), 3);
  expect_module(p.module(1), 1, 0, 0, 0, true, false, 3);
  expect_module(p.module(2), 2, 0, 1, 1, false, false, 2);
  expect_module(p.module(3), 3, 1, 2, 2, false, false, 1);
  expect_module(p.module(4), 4, 2, 2, 0, false, true, 0);
  EXPECT_EQ(p.modules_of_worker(0), (Bounds{1, 4}));
  EXPECT_EQ(p.modules_of_worker(2), (Bounds{3}));
  EXPECT_EQ(module_worker(4, 1), 0);
  EXPECT_EQ(module_worker(4, 3), 2);
  EXPECT_EQ(module_worker(4, 4), 0);
}

TEST(Partition, ExplicitSpec) {
  EXPECT_EQ(plan_partition(6, 3, "1,5", kNoCost).boundaries, (Bounds{1, 5}));
  EXPECT_EQ(plan_partition(6, 3, " 1 , 5 ", kNoCost).boundaries, (Bounds{1, 5}));
  EXPECT_EQ(plan_partition(6, 2, "0", kNoCost).boundaries, (Bounds{0}));
  EXPECT_EQ(plan_partition(6, 1, "", kNoCost).boundaries, (Bounds{}));
}

TEST(Partition, Errors) {
  expect_plan_error([] { make_partition(4, 0, {}); }, "K=0");
  expect_plan_error([] { plan_partition(4, -1, "even", kNoCost); }, "K=-1");
  expect_plan_error([] { plan_partition(2, 5, "even", kNoCost); }, "n_layer=2");
  expect_plan_error([] { plan_partition(2, 5, "even", kNoCost); }, "more middle modules");
  expect_plan_error([] { make_partition(6, 3, {4, 2}); }, "a1=4 > a2=2");
  expect_plan_error([] { make_partition(6, 3, {2, 7}); }, "a2=7");
  expect_plan_error([] { make_partition(6, 3, {-1, 2}); }, "a1=-1");
  expect_plan_error([] { make_partition(6, 3, {2}); }, "got 1 (2)");
  expect_plan_error([] { make_partition(6, 3, {1, 2, 3}); }, "needs 2 boundaries");
  expect_plan_error([] { make_partition(6, 4, {1, 3, 3}); }, "module 3 would hold no blocks");
  expect_plan_error([] { plan_partition(6, 3, "2,x", kNoCost); }, "'x'");
  expect_plan_error([] { plan_partition(6, 3, "2,,4", kNoCost); }, "'2,,4'");
  expect_plan_error([] { plan_partition(6, 3, "2,4,", kNoCost); }, "'2,4,'");
  expect_plan_error([] { plan_partition(6, 3, "evenly", kNoCost); }, "'evenly'");
  expect_plan_error([] { plan_partition(6, 3, "auto", flat_cost(5, 1.0)); }, "5 block costs");
  expect_plan_error([] { make_partition(6, 3, {2, 4}).modules_of_worker(2); }, "worker 2");
}

TEST(CostModel, HandComputedTinyShape) {
  // L=2, C=64, T=8, V=16, B=2: N = 16 tokens, one head of 64.
  const CostModel c = ouroboros_test::gpt_cost_model(2, 64, 8, 16, 2);
  ASSERT_EQ(c.block_forward.size(), 2u);
  // matmul 16*24*64*64 + 4*2*8*8*64 = 1605632; elementwise 16*64*20 + 2*8*8*1*4 = 20992.
  EXPECT_DOUBLE_EQ(c.block_forward[0], 1605632 / 60e9 + 20992 / 1.5e9);
  EXPECT_DOUBLE_EQ(c.block_forward[1], c.block_forward[0]);
  EXPECT_DOUBLE_EQ(c.embed_forward, 3072 / 1.5e9);                // 16*64*3
  EXPECT_DOUBLE_EQ(c.head_forward, 32768 / 60e9 + 9728 / 1.5e9);  // 2*16*64*16; 1536+8192
  EXPECT_DOUBLE_EQ(c.update_per_block, 491520 / 1.5e9);           // 12*64*64*10
  EXPECT_DOUBLE_EQ(c.update_embed_head, 15360 / 1.5e9);           // (16*64+8*64)*10
  EXPECT_DOUBLE_EQ(c.backward_ratio, 2.0);
  EXPECT_DOUBLE_EQ(c.module_forward(0, 2, true, true),
                   2 * c.block_forward[0] + c.embed_forward + c.head_forward);
  EXPECT_DOUBLE_EQ(c.module_forward(1, 1, false, false), 0.0);
}

TEST(CostModel, Relations) {
  const CostModel base = ouroboros_test::gpt_cost_model(4, 128, 64, 256, 4);
  const CostModel wide = ouroboros_test::gpt_cost_model(4, 256, 64, 256, 4);
  const CostModel big_vocab = ouroboros_test::gpt_cost_model(4, 128, 64, 4096, 4);
  const CostModel double_batch = ouroboros_test::gpt_cost_model(4, 128, 64, 256, 8);
  EXPECT_GT(wide.block_forward[0], 3.0 * base.block_forward[0]);  // matmuls ~C^2
  EXPECT_GT(big_vocab.head_forward, 10 * base.head_forward);
  EXPECT_DOUBLE_EQ(big_vocab.block_forward[0], base.block_forward[0]);
  EXPECT_NEAR(double_batch.block_forward[0], 2 * base.block_forward[0], 1e-15);
  EXPECT_DOUBLE_EQ(double_batch.update_per_block, base.update_per_block);  // batch-free
  EXPECT_GT(base.block_forward[0], base.embed_forward);
  expect_plan_error([] { ouroboros_test::gpt_cost_model(4, 0, 64, 256, 4); }, "C=0");
  expect_plan_error(
      [] { ouroboros_test::gpt_cost_model(4, 8, 8, 8, 1).module_forward(2, 5, false, false); },
      "[2,5)");
}

TEST(Partition, AutoMovesBlocksOffAnExpensiveHead) {
  // Blocks cost 1, the head 3, K=3, module sizes a, b, c. Worker 1 forwards then back-propagates
  // module 2 (3b per tick); worker 0 runs F1, B1, F3, B3 (3a + 3(c + 3)). Worker 0's head work
  // follows F2 on the critical path, so the best cut gives module 2 the blocks: a=1, b=5, c=0
  // ticks max(15, 3 + 3 + 9) = 15, against even's (2, 2, 2): 6 + 15 = 21.
  const CostModel cost = flat_cost(6, 3.0);
  const Partition a = plan_partition(6, 3, "auto", cost);
  EXPECT_EQ(a.boundaries, (Bounds{1, 6}));
  const Partition e = plan_partition(6, 3, "even", cost);
  EXPECT_NEAR(simulate(build_schedule(a), a, cost).tick_time, 15.0, 1e-9);
  EXPECT_NEAR(simulate(build_schedule(e), e, cost).tick_time, 21.0, 1e-9);
}

// With recomputation a delayed backward runs its forward again first. The cut {1, 6} above:
// worker 1 forwards module 2 (5) and back-propagates it with its forward again (15), 20 per
// tick; module 3's backward follows its forward in the same tick and is not recomputed.
TEST(Partition, RecomputeAddsTheDelayedForwardsToTheTick) {
  CostModel cost = flat_cost(6, 3.0);
  cost.recompute_delayed = true;
  const Partition a = make_partition(6, 3, {1, 6});
  EXPECT_NEAR(simulate(build_schedule(a), a, cost).tick_time, 20.0, 1e-9);
  const Partition best = plan_partition(6, 3, "auto", cost);
  EXPECT_LT(simulate(build_schedule(best), best, cost).tick_time, 20.0);
}

TEST(Partition, AutoTieBreaks) {
  // K=2 runs everything on one worker: every cut ties on tick time and per-worker forward, so
  // the lexicographically smallest wins.
  EXPECT_EQ(plan_partition(4, 2, "auto", flat_cost(4, 1.0)).boundaries, (Bounds{0}));
  EXPECT_EQ(plan_partition(4, 1, "auto", flat_cost(4, 1.0)).boundaries, (Bounds{}));
}

TEST(Partition, AutoNeverWorseThanEven) {
  struct Case {
    int64_t L, K, C, T, V, B;
  };
  // The last case has C(31, 4) = 31465 cuts, so it takes the coordinate-descent path.
  const std::vector<Case> cases = {{4, 2, 64, 32, 256, 8},    {6, 3, 128, 64, 65, 4},
                                   {8, 4, 64, 128, 50257, 2}, {12, 5, 256, 64, 256, 8},
                                   {3, 5, 32, 16, 300, 1},    {30, 5, 128, 64, 8000, 4}};
  for (const Case& c : cases) {
    SCOPED_TRACE("L=" + std::to_string(c.L) + " K=" + std::to_string(c.K));
    const CostModel cost = ouroboros_test::gpt_cost_model(c.L, c.C, c.T, c.V, c.B);
    const Partition a = plan_partition(c.L, c.K, "auto", cost);
    const Partition e = plan_partition(c.L, c.K, "even", cost);
    const double ta = simulate(build_schedule(a), a, cost).tick_time;
    const double te = simulate(build_schedule(e), e, cost).tick_time;
    EXPECT_LE(ta, te * (1 + 1e-9));
    EXPECT_NO_THROW(build_schedule(a).validate());
  }
}

TEST(Partition, Describe) {
  const CostModel cost = flat_cost(6, 3.0);  // module work 2, 2, 5 of 9
  const Partition p = make_partition(6, 3, {2, 4});
  EXPECT_EQ(p.describe(cost),
            "module 1  blocks [0,2)  worker 0  ~22% of work\n"
            "module 2  blocks [2,4)  worker 1  ~22% of work\n"
            "module 3  blocks [4,6)  worker 0  ~56% of work\n");
  const std::string four = make_partition(8, 4, {2, 4, 6}).describe(flat_cost(8, 0.0));
  EXPECT_EQ(std::count(four.begin(), four.end(), '\n'), 4);
  EXPECT_NE(four.find("module 4  blocks [6,8)  worker 0  ~25% of work"), std::string::npos);
}

// The link model: Ouroboros sends one activation and one error [B, T, C] per worker and tick;
// data parallelism a ring all-reduce of every float32 gradient, 2 (R - 1) / R of them per rank.
TEST(LinkCost, TrafficAndSeconds) {
  const LinkTraffic t = link_traffic(4837376, 8, 128, 256, 2);
  EXPECT_EQ(t.ouroboros_bytes, 2.0 * 8 * 128 * 256 * 4);
  EXPECT_EQ(t.ouroboros_messages, 2);
  EXPECT_EQ(t.allreduce_bytes, 4837376.0 * 4);
  EXPECT_EQ(t.allreduce_rounds, 2);
  const LinkTraffic four = link_traffic(1000, 1, 1, 1, 4);
  EXPECT_EQ(four.allreduce_bytes, 1.5 * 1000 * 4);
  EXPECT_EQ(four.allreduce_rounds, 6);
  EXPECT_EQ(link_traffic(1000, 1, 1, 1, 1).allreduce_bytes, 0.0);
  expect_plan_error([] { link_traffic(1000, 1, 1, 1, 0); }, "replicas must be >= 1, got 0");

  Link link;
  link.gbit_per_s = 1.0;
  link.latency_s = 0.001;
  EXPECT_DOUBLE_EQ(link.seconds(125e6, 0), 1.0);  // 1 Gbit in 1 s
  EXPECT_DOUBLE_EQ(link.seconds(0, 3), 0.003);

  const Config cfg = benchmark_config();
  link.latency_s = 0.0;
  const std::string s = link_summary(cfg, 4837376, link);
  EXPECT_NE(s.find("ouroboros K = 3: 2.000 MiB per worker per tick (2 messages): +0.017 s per "
                   "step at most"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("data parallelism on 2 replicas: 18.453 MiB of the 4837376 weights' "
                   "gradients per rank (2 rounds): +0.155 s per step"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("sends 9.227x the bytes of Ouroboros"), std::string::npos) << s;
  EXPECT_NE(s.find("gpipe K = 3, M = 4: the same bytes in 8 messages: +0.017 s per step"),
            std::string::npos)
      << s;
}

}  // namespace
}  // namespace ouroboros
