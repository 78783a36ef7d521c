// label: equivalence
// Ouroboros with micro-batches (--micro-batches M): the threaded runtime equals the serial
// simulator's own micro-batched update bit for bit (dropout, weight prediction, synchronous
// warm-up, Adam and Muon, K = 2, 3 and 4); M pieces give the whole batch's update up to float
// rounding; in synchronous mode they give plain backprop's; the traffic is M messages of B / M
// rows per boundary and direction.
#include <gtest/gtest.h>

#include "engine_util.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/engine/ouroboros_simulator.h"
#include "ouroboros/engine/ouroboros_threads.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/train/sequential_backprop.h"
#include "test_util.h"

using namespace ouroboros;

namespace {

using ouroboros_test::expect_identical;
using ouroboros_test::Recording;

// The tests' tiny GPT with a batch of 4 rows, so that it splits into 2 or 4 pieces.
Config micro_config(int64_t K, const std::string& optimizer, int64_t M) {
  Config c = ouroboros_test::tiny_config(K, optimizer);
  c.train.batch_size = 4;
  c.engine.micro_batches = M;
  return c;
}

Recording record(Method& m, const Config& c, int64_t ticks) {
  return ouroboros_test::record(
      m,
      [&](int64_t t) { return ouroboros_test::random_batch(c, 1000 + static_cast<uint64_t>(t)); },
      ticks);
}

struct Case {
  int64_t K, M;
  std::string optimizer;
  bool tolerant;  // dropout, weight prediction and a synchronous warm-up
};

std::string name_of(const Case& c) {
  return "K" + std::to_string(c.K) + "_M" + std::to_string(c.M) + "_" + c.optimizer +
         (c.tolerant ? "_dropout_predicted" : "");
}

class MicroBatchesVsSimulator : public ::testing::TestWithParam<Case> {};

TEST_P(MicroBatchesVsSimulator, BitForBitEveryTick) {
  const Case c = GetParam();
  at::set_num_threads(1);
  Config cfg = micro_config(c.K, c.optimizer, c.M);
  if (c.tolerant) {
    cfg.model.dropout = 0.1;
    cfg.engine.weight_predict = WeightPredict::kOptimizer;
    cfg.engine.sync_warmup = 2;
  }
  GPT model(cfg.model);
  OuroborosThreads engine(model, model.init_params(7), cfg);
  EXPECT_NE(engine.describe().find("[" + std::to_string(c.M) + "]"), std::string::npos)
      << engine.describe();
  OuroborosSimulator sim(model, model.init_params(7), cfg);
  const Recording a = record(engine, cfg, 3 * c.K + 3);
  expect_identical(a, record(sim, cfg, 3 * c.K + 3), engine.params().names());
  ParamSet init = model.init_params(7);
  for (size_t i = 0; i < init.size(); ++i) {
    EXPECT_FALSE(torch::equal(init.tensors()[i], a.params_after_tick.back()[i]))
        << init.names()[i] << " never updated";
  }
}

INSTANTIATE_TEST_SUITE_P(Engine, MicroBatchesVsSimulator,
                         ::testing::Values(Case{2, 2, "adam", false}, Case{3, 2, "adam", false},
                                           Case{3, 4, "sgd", false}, Case{3, 2, "adam", true},
                                           Case{4, 4, "muon", true}, Case{4, 2, "adamw", false}),
                         [](const auto& info) { return name_of(info.param); });

// Without dropout the pieces' gradients sum to the whole batch's: the runs agree to float
// rounding. Plain SGD keeps the comparison linear (Adam would rescale rounding-sized differences
// of small gradients); the observed difference is about 1e-8 after 10 ticks.
TEST(MicroBatches, EqualTheWholeBatchUpToRounding) {
  at::set_num_threads(1);
  for (int64_t M : {2, 4}) {
    Config one = micro_config(3, "sgd", 1), many = micro_config(3, "sgd", M);
    GPT model(one.model);
    OuroborosThreads a(model, model.init_params(11), one);
    OuroborosThreads b(model, model.init_params(11), many);
    const Recording ra = record(a, one, 10), rb = record(b, many, 10);
    ASSERT_EQ(ra.losses.size(), rb.losses.size());
    for (size_t t = 0; t < ra.losses.size(); ++t) {
      EXPECT_NEAR(ra.losses[t], rb.losses[t], 1e-6) << "M=" << M << " tick " << t;
    }
    double worst = 0.0;
    for (size_t i = 0; i < ra.params_after_tick.back().size(); ++i) {
      const Tensor d = ra.params_after_tick.back()[i] - rb.params_after_tick.back()[i];
      worst = std::max(worst, d.abs().max().item<double>());
    }
    EXPECT_LT(worst, 1e-6) << "M=" << M;
    EXPECT_GT(worst, 0.0) << "M=" << M << ": the pieces change the rounding, not nothing";
  }
}

// Synchronous ticks with micro-batches are GPipe's: plain backprop's update up to rounding.
TEST(MicroBatches, SynchronousModeFollowsTheReferenceTrainer) {
  at::set_num_threads(1);
  Config cfg = micro_config(3, "sgd", 2);
  cfg.engine.sync_warmup = 1000;
  cfg.train.grad_clip = 0.0;  // clipping is per worker
  GPT model(cfg.model);
  OuroborosThreads engine(model, model.init_params(9), cfg);
  SequentialBackprop ref(model, model.init_params(9), cfg.train);
  const Recording a = record(engine, cfg, 6), b = record(ref, cfg, 6);
  for (size_t i = 0; i < b.params_after_tick.back().size(); ++i) {
    EXPECT_TRUE(
        torch::allclose(a.params_after_tick.back()[i], b.params_after_tick.back()[i], 0, 1e-6))
        << ref.params().names()[i];
  }
}

// Each piece crosses each boundary as its own message of B / M rows.
TEST(MicroBatches, TrafficIsOneMessagePerPiece) {
  at::set_num_threads(1);
  const int64_t K = 4, M = 2, ticks = 6;
  for (int64_t pieces : {int64_t{1}, M}) {
    Config cfg = micro_config(K, "adam", pieces);
    GPT model(cfg.model);
    OuroborosThreads engine(model, model.init_params(3), cfg);
    record(engine, cfg, ticks);
    int64_t messages = 0, bytes = 0;
    for (int64_t w = 0; w < K - 1; ++w) {
      messages += engine.transport(w).stats().messages;
      bytes += engine.transport(w).stats().bytes;
    }
    EXPECT_EQ(engine.undelivered_messages(), 0u);
    // K-1 boundaries, an activation and an error per batch: all ticks' batches, drained.
    EXPECT_EQ(messages, 2 * (K - 1) * ticks * pieces) << "M=" << pieces;
    EXPECT_EQ(bytes, 2 * (K - 1) * ticks * cfg.train.batch_size * cfg.model.block_size *
                         cfg.model.n_embd * 4)
        << "M=" << pieces;
  }
}

TEST(MicroBatches, CountsThatCannotSplitTheBatchAreRefused) {
  Config cfg = micro_config(3, "adam", 3);
  try {
    cfg.validate();
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              "ouroboros: --micro-batches 3 must be >= 1 and divide --batch-size 4 (hint: choose "
              "a divisor of the batch size, or auto)");
  }
  cfg.engine.micro_batches = 0;  // auto
  EXPECT_NO_THROW(cfg.validate());
  cfg.engine.modules = 1;
  cfg.engine.micro_batches = 2;
  EXPECT_THROW(cfg.validate(), ConfigError);
}

}  // namespace
