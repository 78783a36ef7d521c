// label: equivalence
// Transformer-XL under Ouroboros: the threaded runtime equals the serial simulator bit for bit
// (weights after every tick, losses, every module's memories), synchronous mode equals the
// reference trainer, the tied embedding stays on worker 0, and a resumed run (memories and
// stream position from the checkpoint) continues exactly.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "engine_util.h"
#include "test_util.h"

#include "ouroboros/engine/ouroboros_simulator.h"
#include "ouroboros/engine/ouroboros_threads.h"
#include "ouroboros/model/transformer_xl.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/checkpoint.h"
#include "ouroboros/train/sequential_backprop.h"

using namespace ouroboros;

namespace {

using ouroboros_test::Recording;

Config xl_config(int64_t K) {
  Config c = ouroboros_test::tiny_config(K);
  c.model.model = ModelKind::kTransformerXl;
  c.model.d_inner = 24;
  c.model.block_size = 6;
  c.model.mem_len = 6;
  c.model.dropout = 0.1;
  c.model.attn_dropout = 0.1;
  c.train.warmup_steps = 2;
  c.train.weight_decay = 0.0;
  c.train.grad_clip = 0.25;
  return c;
}

Recording record(Method& m, const Config& c, int64_t ticks) {
  return ouroboros_test::record(
      m, [&](int64_t t) { return ouroboros_test::segment(c, t); }, ticks);
}

// Bit for bit, and every one of the L layers has its memory after every tick.
void expect_identical(const Recording& a, const Recording& b, const ParamSet& names, int64_t L) {
  ouroboros_test::expect_identical(a, b, names.names());
  for (size_t t = 0; t < a.memory.size(); ++t) {
    ASSERT_EQ(static_cast<int64_t>(a.memory[t].size()), L) << "after tick " << t;
  }
}

TEST(XLEngine, RuntimeEqualsSimulatorBitForBitK3) {
  at::set_num_threads(1);
  Config cfg = xl_config(3);
  TransformerXL model(cfg.model);
  const int64_t ticks = 12;
  OuroborosThreads engine(model, model.init_params(5), cfg);
  OuroborosSimulator sim(model, model.init_params(5), cfg);
  Recording a = record(engine, cfg, ticks);
  Recording b = record(sim, cfg, ticks);
  expect_identical(a, b, engine.params(), cfg.model.n_layer);
  // Memories reach their full length and the weights of every module moved.
  EXPECT_EQ(a.memory.back().at(0).size(1), cfg.model.mem_len);
  ParamSet init = model.init_params(5);
  for (size_t i = 0; i < init.size(); ++i) {
    EXPECT_FALSE(torch::equal(a.params_after_tick.back()[i], init.tensors()[i])) << init.names()[i];
  }
  // The tied embedding lives on worker 0 only; the middle worker holds layers only.
  const auto& w0 = engine.worker(0).params();
  const auto& w1 = engine.worker(1).params();
  EXPECT_TRUE(w0.contains("word_emb.weight"));
  EXPECT_FALSE(w1.contains("word_emb.weight"));
  for (const auto& n : w1.names()) EXPECT_EQ(n.rfind("layers.", 0), 0u) << n;
}

TEST(XLEngine, RuntimeEqualsSimulatorWithSyncWarmupK4) {
  at::set_num_threads(1);
  Config cfg = xl_config(4);
  cfg.engine.sync_warmup = 3;
  cfg.model.pre_lnorm = 1;
  cfg.model.same_length = 1;
  TransformerXL model(cfg.model);
  OuroborosThreads engine(model, model.init_params(6), cfg);
  OuroborosSimulator sim(model, model.init_params(6), cfg);
  expect_identical(record(engine, cfg, 10), record(sim, cfg, 10), engine.params(),
                   cfg.model.n_layer);
}

// Muon (the qkv_net and r_net matrices among its own), weight prediction along its update and
// the delay correction: still the simulator, bit for bit.
TEST(XLEngine, RuntimeEqualsSimulatorWithMuonAndCorrectionK3) {
  at::set_num_threads(1);
  Config cfg = xl_config(3);
  cfg.train.optimizer = OptimizerKind::kMuon;
  cfg.engine.weight_predict = WeightPredict::kOptimizer;
  cfg.engine.delay_correction = DelayCorrection::kExtrapolate;
  TransformerXL model(cfg.model);
  OuroborosThreads engine(model, model.init_params(7), cfg);
  OuroborosSimulator sim(model, model.init_params(7), cfg);
  Recording a = record(engine, cfg, 10);
  expect_identical(a, record(sim, cfg, 10), engine.params(), cfg.model.n_layer);
  EXPECT_NE(a.losses.front(), a.losses.back());
}

// With micro-batches each piece reads and advances its own streams' rows of the memories: the
// simulator's own micro-batched run, bit for bit, with a synchronous warm-up and prediction.
TEST(XLEngine, MicroBatchesEqualTheSimulatorK4) {
  at::set_num_threads(1);
  Config cfg = xl_config(4);
  cfg.train.batch_size = 4;
  cfg.engine.micro_batches = 2;
  cfg.engine.sync_warmup = 2;
  cfg.engine.weight_predict = WeightPredict::kOptimizer;
  TransformerXL model(cfg.model);
  OuroborosThreads engine(model, model.init_params(8), cfg);
  OuroborosSimulator sim(model, model.init_params(8), cfg);
  Recording a = record(engine, cfg, 10);
  expect_identical(a, record(sim, cfg, 10), engine.params(), cfg.model.n_layer);
  EXPECT_EQ(a.memory.back().at(0).size(0), 4);  // every stream's row
}

// Without dropout (whose masks come from per-module generators) and clipping (per worker in the
// engine), synchronous Ouroboros is plain backprop on the same segments: the reference trainer,
// bit for bit, memories included.
TEST(XLEngine, SynchronousModeEqualsReferenceTrainer) {
  at::set_num_threads(1);
  Config cfg = xl_config(3);
  cfg.model.dropout = 0.0;
  cfg.model.attn_dropout = 0.0;
  cfg.train.grad_clip = 0.0;
  cfg.engine.sync_warmup = 1000;
  cfg.engine.micro_batches = 1;  // whole batches: the reference's sums, in its order
  TransformerXL model(cfg.model);
  OuroborosThreads engine(model, model.init_params(8), cfg);
  SequentialBackprop ref(model, model.init_params(8), cfg.train);
  expect_identical(record(engine, cfg, 8), record(ref, cfg, 8), engine.params(), cfg.model.n_layer);
}

// train(): N steps, checkpoint, resume for M more == N + M straight, bit for bit, with K = 3 and
// dropout: memories and the stream position come back from the checkpoint.
TEST(XLEngine, ResumeIsExactWithMemories) {
  ouroboros_test::TempDir dir;
  std::mt19937 rng(3);
  std::string text;
  const std::vector<std::string> words = {"cat ", "dog ", "sat ", "on ", "the ", "mat. "};
  while (text.size() < 4000) text += words[rng() % words.size()];
  auto corpus = dir.write("corpus.txt", text);
  for (int64_t K : {1, 3}) {
    Config cfg = xl_config(K);
    cfg.model.vocab_size = 0;
    cfg.data.data = corpus.string();
    cfg.data.format = DataFormat::kText;
    cfg.train.steps = 12;
    cfg.train.checkpoint_interval = 5;  // the straight run drains where the other stops
    cfg.train.eval_interval = 0;
    cfg.model.eval_tgt_len = 5;
    cfg.model.eval_mem_len = 9;
    const std::string tag = "k" + std::to_string(K);
    TrainOptions quiet;
    quiet.quiet = true;
    cfg.train.out_dir = (dir.path() / tag / "straight").string();
    TrainResult straight = train(cfg, quiet);
    cfg.train.out_dir = (dir.path() / tag / "interrupted").string();
    TrainOptions first = quiet;
    first.stop_after = 5;
    train(cfg, first);
    Checkpoint ck = load_checkpoint((dir.path() / tag / "interrupted" / "ckpt.pt").string());
    EXPECT_EQ(static_cast<int64_t>(ck.memory.size()), cfg.model.n_layer);
    EXPECT_EQ(ck.sampler_state, 5u);
    TrainOptions second = quiet;
    second.resume = (dir.path() / tag / "interrupted" / "ckpt.pt").string();
    TrainResult resumed = train(cfg, second);
    EXPECT_EQ(std::vector<double>(straight.losses.begin() + 5, straight.losses.end()),
              resumed.losses);
    for (size_t i = 0; i < straight.params.size(); ++i) {
      EXPECT_TRUE(torch::equal(straight.params.tensors()[i], resumed.params.tensors()[i]))
          << straight.params.names()[i];
    }
    EXPECT_EQ(straight.valid.loss, resumed.valid.loss);
    EXPECT_GT(straight.valid.tokens, 0);
  }
}

}  // namespace
