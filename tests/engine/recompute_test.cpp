// label: equivalence
// Recomputation (--recompute delayed): a module whose backward waits for a later tick keeps its
// input instead of its activations and runs the forward again before the backward. The threaded
// runtime then equals itself without recomputation and the serial simulator, bit for bit after
// every tick: GPT with K = 2, 3, 4, whole batches and micro-batches, dropout, weight prediction,
// the delay correction and a synchronous warm-up; Transformer-XL with its segment memories.
#include <gtest/gtest.h>

#include "engine_util.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/engine/ouroboros_simulator.h"
#include "ouroboros/engine/ouroboros_threads.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/model/transformer_xl.h"
#include "test_util.h"

using namespace ouroboros;

namespace {

using ouroboros_test::expect_identical;
using ouroboros_test::Recording;

struct Case {
  int64_t K, M;
  std::string optimizer;
  bool tolerant;  // dropout, weight prediction, the delay correction, a synchronous warm-up
  bool xl = false;
};

std::string name_of(const Case& c) {
  return std::string(c.xl ? "XL_" : "") + "K" + std::to_string(c.K) + "_M" + std::to_string(c.M) +
         "_" + c.optimizer + (c.tolerant ? "_dropout_predicted" : "");
}

void PrintTo(const Case& c, std::ostream* os) { *os << name_of(c); }

Config case_config(const Case& c) {
  Config cfg = ouroboros_test::tiny_config(c.K, c.optimizer);
  cfg.train.batch_size = 4;
  cfg.engine.micro_batches = c.M;
  if (c.tolerant) {
    cfg.model.dropout = 0.1;
    cfg.engine.weight_predict = WeightPredict::kOptimizer;
    cfg.engine.sync_warmup = 2;
    if (c.optimizer == "muon") cfg.engine.delay_correction = DelayCorrection::kExtrapolate;
  }
  if (c.xl) {
    cfg.model.model = ModelKind::kTransformerXl;
    cfg.model.d_inner = 24;
    cfg.model.block_size = 6;
    cfg.model.mem_len = 6;
    cfg.model.attn_dropout = cfg.model.dropout;
  }
  return cfg;
}

Recording record(Method& m, const Config& c, int64_t ticks) {
  return ouroboros_test::record(
      m, [&](int64_t t) { return ouroboros_test::segment(c, t); }, ticks);
}

std::unique_ptr<LanguageModel> make_model(const Config& c) {
  if (c.model.model == ModelKind::kTransformerXl) return std::make_unique<TransformerXL>(c.model);
  return std::make_unique<GPT>(c.model);
}

class RecomputeRuns : public ::testing::TestWithParam<Case> {};

TEST_P(RecomputeRuns, EqualsKeepingTheActivationsAndTheSimulator) {
  const Case c = GetParam();
  at::set_num_threads(1);
  Config keep = case_config(c);
  Config again = keep;
  again.engine.recompute = Recompute::kDelayed;
  auto model = make_model(keep);
  const int64_t ticks = 3 * c.K + 3;
  OuroborosThreads kept(*model, model->init_params(7), keep);
  OuroborosThreads recomputed(*model, model->init_params(7), again);
  OuroborosSimulator sim(*model, model->init_params(7), again);
  const Recording a = record(kept, keep, ticks);
  const Recording b = record(recomputed, again, ticks);
  expect_identical(a, b, kept.params().names());
  expect_identical(b, record(sim, again, ticks), kept.params().names());
  if (c.xl) {
    EXPECT_EQ(static_cast<int64_t>(b.memory.back().size()), keep.model.n_layer);
  }
  ParamSet init = model->init_params(7);
  for (size_t i = 0; i < init.size(); ++i) {
    EXPECT_FALSE(torch::equal(init.tensors()[i], b.params_after_tick.back()[i]))
        << init.names()[i] << " never updated";
  }
}

INSTANTIATE_TEST_SUITE_P(Engine, RecomputeRuns,
                         ::testing::Values(Case{2, 1, "sgd", false}, Case{3, 1, "adam", true},
                                           Case{3, 4, "adamw", false}, Case{4, 2, "muon", true},
                                           Case{4, 2, "adam", true, true}),
                         [](const auto& info) { return name_of(info.param); });

// Recomputation needs a backward that waits; the methods without one refuse the flag.
TEST(RecomputeConfig, MethodsWithoutDelayedBackwardsRefuseIt) {
  for (const std::string mode : {"sequential", "gpipe", "data-parallel"}) {
    Config c = ouroboros_test::tiny_config(mode == "gpipe" ? 3 : 1);
    c.engine.mode = parse_option<Mode>(mode);
    c.engine.recompute = Recompute::kDelayed;
    try {
      c.validate();
      ADD_FAILURE() << mode << " accepted --recompute delayed";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("--recompute delayed"), std::string::npos) << e.what();
    }
  }
  Config ok = ouroboros_test::tiny_config(3);
  ok.engine.recompute = Recompute::kDelayed;
  EXPECT_NO_THROW(ok.validate());
  Config back;
  back.set_from_string("engine.recompute", "delayed");
  EXPECT_EQ(back.engine.recompute, Recompute::kDelayed);
  back.merge_json(Config{}.to_json());
  EXPECT_EQ(back.engine.recompute, Recompute::kNone);
}

}  // namespace
