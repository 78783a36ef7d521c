// label: equivalence
// The delay-tolerant options (docs/DELAY.md) against the serial simulator, which implements
// each on its own: QHAdam, NAdam, Muon, weight prediction, the PipeMare learning rate, the delay
// correction, and their combinations, with dropout and a synchronous warm-up; and what each
// option changes.
#include <gtest/gtest.h>

#include "engine_util.h"
#include "ouroboros/engine/ouroboros_simulator.h"
#include "ouroboros/engine/ouroboros_threads.h"
#include "ouroboros/model/gpt.h"
#include "test_util.h"

using namespace ouroboros;

namespace {

using ouroboros_test::expect_identical;
using ouroboros_test::Recording;
using ouroboros_test::tiny_config;

Recording record(Method& m, const Config& c, int64_t ticks) {
  return ouroboros_test::record(
      m,
      [&](int64_t t) { return ouroboros_test::random_batch(c, 2000 + static_cast<uint64_t>(t)); },
      ticks);
}

struct Case {
  int64_t K;
  std::string optimizer, predict, stale_lr;
  int64_t sync_warmup;
  double predict_scale = EngineConfig{}.predict_scale;
  double correction = 0.0;  // delay correction's scale; 0 = none
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << "K " << c.K << ", " << c.optimizer << ", predict " << c.predict << ", lr " << c.stale_lr
      << ", sync " << c.sync_warmup << ", scale " << c.predict_scale << ", correction "
      << c.correction;
}

Config config_of(const Case& c) {
  Config cfg = tiny_config(c.K, c.optimizer);
  cfg.train.beta1 = 0.95;
  cfg.engine.weight_predict = parse_option<WeightPredict>(c.predict);
  cfg.engine.stale_lr = parse_option<StaleLr>(c.stale_lr);
  cfg.engine.stale_lr_ticks = 8;
  cfg.engine.sync_warmup = c.sync_warmup;
  cfg.engine.predict_scale = c.predict_scale;
  if (c.correction > 0.0) {
    cfg.engine.delay_correction = DelayCorrection::kExtrapolate;
    cfg.engine.correction_scale = c.correction;
  }
  cfg.model.dropout = 0.1;
  return cfg;
}

class DelayTolerance : public ::testing::TestWithParam<Case> {};

TEST_P(DelayTolerance, RuntimeEqualsSimulatorBitForBit) {
  at::set_num_threads(1);
  const Config cfg = config_of(GetParam());
  GPT model(cfg.model);
  const int64_t ticks = 3 * cfg.engine.modules + 4;
  OuroborosThreads engine(model, model.init_params(11), cfg);
  OuroborosSimulator sim(model, model.init_params(11), cfg);
  Recording a = record(engine, cfg, ticks);
  Recording b = record(sim, cfg, ticks);
  expect_identical(a, b, engine.params().names());
  EXPECT_NE(a.losses.front(), a.losses.back());
}

INSTANTIATE_TEST_SUITE_P(
    Engine, DelayTolerance,
    ::testing::Values(
        Case{3, "qhadam", "none", "none", 0}, Case{4, "nadam", "none", "none", 0},
        Case{3, "adam", "optimizer", "none", 0}, Case{4, "adam", "optimizer", "none", 0},
        Case{3, "sgd", "optimizer", "none", 0}, Case{3, "adam", "none", "pipemare", 0},
        Case{4, "adamw", "none", "pipemare", 3}, Case{3, "qhadam", "optimizer", "pipemare", 3},
        Case{4, "nadam", "optimizer", "pipemare", 0}, Case{3, "adam", "optimizer", "none", 0, 1.0},
        Case{4, "adam", "optimizer", "pipemare", 3, 2.0}, Case{3, "muon", "optimizer", "none", 0},
        Case{4, "muon", "optimizer", "none", 3, 1.5, 1.0},
        Case{3, "muon", "none", "none", 0, 1.5, 0.5},
        Case{4, "adam", "optimizer", "pipemare", 0, 1.5, 1.0}),
    [](const auto& info) {
      const Case& c = info.param;
      return "K" + std::to_string(c.K) + "_" + c.optimizer + "_predict_" + c.predict + "_lr_" +
             c.stale_lr + "_sync" + std::to_string(c.sync_warmup) +
             (c.predict == "none"
                  ? ""
                  : "_scale" + std::to_string(static_cast<int>(c.predict_scale * 10))) +
             (c.correction > 0.0
                  ? "_correction" + std::to_string(static_cast<int>(c.correction * 10))
                  : "");
    });

// Each option changes the trajectory (so the equalities above are not about a no-op), and the
// synchronous warm-up is untouched by them: its ticks have no delay to predict or scale for.
TEST(DelayTolerance, OptionsChangeTheRunOnlyOnceDelaysStart) {
  at::set_num_threads(1);
  const Case base{3, "adam", "none", "none", 4};
  const Case predicting{3, "adam", "optimizer", "none", 4};
  // Each option against the same run without it.
  const std::vector<std::pair<Case, Case>> pairs = {
      {base, predicting},
      {base, Case{3, "adam", "none", "pipemare", 4}},
      {predicting, Case{3, "adam", "optimizer", "none", 4, 2.0}},
      {base, Case{3, "adam", "none", "none", 4, 1.5, 1.0}},
      {Case{3, "muon", "none", "none", 4}, Case{3, "muon", "optimizer", "none", 4}}};
  for (const auto& [from, c] : pairs) {
    const Config a_cfg = config_of(from), b_cfg = config_of(c);
    GPT model(a_cfg.model);
    OuroborosThreads a(model, model.init_params(5), a_cfg);
    OuroborosThreads b(model, model.init_params(5), b_cfg);
    Recording ra = record(a, a_cfg, 10), rb = record(b, b_cfg, 10);
    for (size_t t = 0; t < 4; ++t)
      EXPECT_EQ(ra.losses[t], rb.losses[t]) << "synchronous tick " << t;
    bool differs = false;
    for (size_t t = 4; t < ra.losses.size(); ++t) differs = differs || ra.losses[t] != rb.losses[t];
    EXPECT_TRUE(differs) << c.optimizer << " " << c.predict << " " << c.stale_lr << " scale "
                         << c.predict_scale << " correction " << c.correction << " changed nothing";
  }
}

// The default ("auto") predicts in mode ouroboros and nowhere else.
TEST(DelayTolerance, AutoPredictsInModeOuroborosOnly) {
  at::set_num_threads(1);
  Config automatic = tiny_config(3, "adam");
  automatic.engine.weight_predict = Config{}.engine.weight_predict;
  ASSERT_EQ(automatic.engine.weight_predict, WeightPredict::kAuto);
  Config explicit_on = tiny_config(3, "adam");
  explicit_on.engine.weight_predict = WeightPredict::kOptimizer;
  GPT model(automatic.model);
  OuroborosThreads a(model, model.init_params(5), automatic);
  OuroborosThreads b(model, model.init_params(5), explicit_on);
  expect_identical(record(a, automatic, 8), record(b, explicit_on, 8), a.params().names());
  EXPECT_TRUE(predicts_weights(automatic.engine));
  Config one = Config{};
  EXPECT_FALSE(predicts_weights(one.engine));  // sequential: nothing is delayed
  one.engine.modules = 3;
  one.engine.mode = Mode::kGPipe;
  EXPECT_FALSE(predicts_weights(one.engine));
  EXPECT_NO_THROW(one.validate());
}

// Diagnostics: one record per module every N steps, from the update's own numbers.
TEST(DelayTolerance, DiagnosticsReportEveryModule) {
  at::set_num_threads(1);
  Config cfg = tiny_config(3, "adam");
  cfg.train.diagnostics_interval = 2;
  GPT model(cfg.model);
  OuroborosThreads engine(model, model.init_params(5), cfg);
  Recording r = record(engine, cfg, 8);
  const std::vector<ModuleStats> d = engine.take_diagnostics();
  // A record at every even step a module updates: module 1 (delay 2) first updates at step 3;
  // the drain's last tick (step 10) updates module 1 and the input side of the tied V, which
  // counts with module 3; module 2's last update is at step 9.
  std::map<int64_t, std::vector<int64_t>> steps;
  for (const ModuleStats& m : d) {
    steps[m.module].push_back(m.step);
    EXPECT_GT(m.grad_norm, 0.0);
    EXPECT_GT(m.update_rms, 0.0);
    if (m.has_cos) {
      EXPECT_GE(m.update_cos, -1.0);
      EXPECT_LE(m.update_cos, 1.0);
    }
  }
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[3], (std::vector<int64_t>{2, 4, 6, 8, 10}));
  EXPECT_EQ(steps[1], (std::vector<int64_t>{4, 6, 8, 10}));
  EXPECT_EQ(steps[2], (std::vector<int64_t>{2, 4, 6, 8}));
  EXPECT_TRUE(engine.take_diagnostics().empty());
  // Tracking changes no number.
  Config plain = cfg;
  plain.train.diagnostics_interval = 0;
  OuroborosThreads quiet(model, model.init_params(5), plain);
  expect_identical(r, record(quiet, plain, 8), engine.params().names());
}

}  // namespace
