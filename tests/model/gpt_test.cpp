// label: unit
// The GPT model: gradients against finite differences in double precision, the tied embedding's
// two gradient contributions, the initial loss, GPT-2 names and shapes, config errors, causality.
#include "ouroboros/model/gpt.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "model_util.h"
#include "ouroboros/core/config.h"
#include "ouroboros/core/errors.h"
#include "test_util.h"

namespace ouroboros {
namespace {

using ouroboros_test::double_params;
using ouroboros_test::random_tokens;

ModelConfig tiny_config() {
  ModelConfig cfg = ouroboros_test::tiny_config().model;
  cfg.n_layer = 2;      // L
  cfg.n_embd = 8;       // C
  cfg.block_size = 5;   // T
  cfg.vocab_size = 11;  // V
  return cfg;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no ConfigError)";
}

// Central differences with h = 1e-6 in double precision: truncation error ~h^2 |f'''| ~ 1e-12,
// rounding error ~ 1e-16 |loss| / h ~ 1e-10. Autograd must agree to |a - n| <= 1e-8 + 1e-6 |n|,
// far below the typical gradient entry (~1e-3), so a wrong term in any backward would show.
TEST(ModelTest, GradientsMatchFiniteDifferencesInDouble) {
  const ModelConfig cfg = tiny_config();
  GPT model(cfg);
  ParamSet p = double_params(model, 7, 0.05);
  const Tensor x = random_tokens(2, 5, 11, 1);  // B = 2
  const Tensor y = random_tokens(2, 5, 11, 2);
  ForwardContext ctx;
  model.loss(p, x, y, ctx).backward();

  const double h = 1e-6;
  std::mt19937_64 rng(42);
  int checked = 0;
  double worst = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    const std::string& name = p.names()[i];
    Tensor w = p.tensors()[i];
    ASSERT_TRUE(w.grad().defined()) << name;
    Tensor flat = w.detach().view({-1});  // shares storage: nudging it changes the weight
    Tensor grad = w.grad().view({-1});
    for (int s = 0; s < 6; ++s) {
      const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(flat.numel()));
      double numeric;
      {
        torch::NoGradGuard no_grad;
        const double orig = flat[j].item<double>();
        flat[j] = orig + h;
        const double up = model.loss(p, x, y, ctx).item<double>();
        flat[j] = orig - h;
        const double down = model.loss(p, x, y, ctx).item<double>();
        flat[j] = orig;
        numeric = (up - down) / (2 * h);
      }
      const double analytic = grad[j].item<double>();
      const double err = std::abs(analytic - numeric);
      worst = std::max(worst, err / (1e-8 + 1e-6 * std::abs(numeric)));
      EXPECT_LE(err, 1e-8 + 1e-6 * std::abs(numeric))
          << name << "[" << j << "]: autograd " << analytic << ", finite difference " << numeric;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6 * (2 + 12 * 2 + 2));  // every tensor: wte, wpe, 12 per block, ln_f
  RecordProperty("worst_error_over_tolerance", std::to_string(worst));
}

// The tied wte gets the gradient of the input embedding plus that of the output projection:
// an untied copy (E for the input, O for the output, both equal to wte) must split it exactly.
TEST(ModelTest, TiedEmbeddingGetsBothContributions) {
  const ModelConfig cfg = tiny_config();
  GPT model(cfg);
  ParamSet tied = double_params(model, 3, 0.05);
  const Tensor x = random_tokens(2, 5, 11, 4);
  const Tensor y = random_tokens(2, 5, 11, 5);
  ForwardContext ctx;
  model.loss(tied, x, y, ctx).backward();

  ParamSet untied;
  Tensor E = tied.at("wte.weight").detach().clone().requires_grad_(true);  // [V, C]
  Tensor O = tied.at("wte.weight").detach().clone().requires_grad_(true);  // [V, C]
  for (size_t i = 0; i < tied.size(); ++i) {
    const std::string& name = tied.names()[i];
    untied.add(name, name == "wte.weight" ? E : tied.tensors()[i].detach());
  }
  Tensor hid = model.hidden(untied, x, ctx);  // [B, T, C]
  Tensor n =
      at::layer_norm(hid, {cfg.n_embd}, untied.at("ln_f.weight"), untied.at("ln_f.bias"), 1e-5);
  Tensor logits = at::linear(n, O);  // [B, T, V]
  Tensor loss = at::cross_entropy_loss(logits.view({-1, cfg.vocab_size}), y.reshape({-1}));
  EXPECT_NEAR(loss.item<double>(), model.loss(tied, x, y, ctx).item<double>(), 1e-14);
  loss.backward();

  EXPECT_GT(E.grad().abs().max().item<double>(), 1e-4);
  EXPECT_GT(O.grad().abs().max().item<double>(), 1e-4);
  const Tensor& wte_grad = tied.at("wte.weight").grad();
  EXPECT_TRUE(torch::allclose(wte_grad, E.grad() + O.grad(), 0.0, 1e-14))
      << "max difference " << (wte_grad - E.grad() - O.grad()).abs().max().item<double>();
}

// GPT-2 init makes the logits nearly uniform: the loss on random tokens is about ln V.
TEST(ModelTest, InitialLossIsCloseToLogVocabulary) {
  ModelConfig cfg;
  cfg.n_layer = 2;
  cfg.n_embd = 32;
  cfg.n_head = 4;
  cfg.block_size = 16;
  cfg.vocab_size = 256;
  GPT model(cfg);
  ForwardContext ctx;
  torch::NoGradGuard no_grad;
  for (uint64_t seed : {1u, 2u, 3u}) {
    ParamSet p = model.init_params(seed);
    const Tensor x = random_tokens(8, 16, 256, seed + 10);
    const Tensor y = random_tokens(8, 16, 256, seed + 20);
    const double loss = model.loss(p, x, y, ctx).item<double>();
    EXPECT_LT(std::abs(loss - std::log(256.0)), 0.1) << "seed " << seed << ": loss " << loss;
  }
}

TEST(ModelTest, ParametersHaveGpt2NamesShapesAndCount) {
  ModelConfig cfg;
  cfg.n_layer = 3;
  cfg.n_embd = 12;
  cfg.n_head = 3;
  cfg.block_size = 7;
  cfg.vocab_size = 13;
  GPT model(cfg);
  ParamSet p = model.init_params(1);
  const int64_t L = 3, C = 12, T = 7, V = 13;

  ASSERT_EQ(p.size(), static_cast<size_t>(2 + 12 * L + 2));
  EXPECT_EQ(p.names().front(), "wte.weight");
  EXPECT_EQ(p.names()[1], "wpe.weight");
  EXPECT_EQ(p.names()[2], "h.0.ln_1.weight");
  EXPECT_EQ(p.names()[p.size() - 2], "ln_f.weight");
  EXPECT_EQ(p.names().back(), "ln_f.bias");
  using Shape = std::vector<int64_t>;
  auto shape = [&](const std::string& n) { return p.at(n).sizes().vec(); };
  EXPECT_EQ(shape("wte.weight"), (Shape{V, C}));
  EXPECT_EQ(shape("wpe.weight"), (Shape{T, C}));
  for (int64_t i = 0; i < L; ++i) {
    const std::string h = "h." + std::to_string(i) + ".";
    EXPECT_EQ(shape(h + "ln_1.weight"), (Shape{C}));
    EXPECT_EQ(shape(h + "ln_1.bias"), (Shape{C}));
    EXPECT_EQ(shape(h + "attn.c_attn.weight"), (Shape{3 * C, C}));
    EXPECT_EQ(shape(h + "attn.c_attn.bias"), (Shape{3 * C}));
    EXPECT_EQ(shape(h + "attn.c_proj.weight"), (Shape{C, C}));
    EXPECT_EQ(shape(h + "attn.c_proj.bias"), (Shape{C}));
    EXPECT_EQ(shape(h + "ln_2.weight"), (Shape{C}));
    EXPECT_EQ(shape(h + "ln_2.bias"), (Shape{C}));
    EXPECT_EQ(shape(h + "mlp.c_fc.weight"), (Shape{4 * C, C}));
    EXPECT_EQ(shape(h + "mlp.c_fc.bias"), (Shape{4 * C}));
    EXPECT_EQ(shape(h + "mlp.c_proj.weight"), (Shape{C, 4 * C}));
    EXPECT_EQ(shape(h + "mlp.c_proj.bias"), (Shape{C}));
    EXPECT_EQ(model.block_param_names(i).front(), h + "ln_1.weight");
  }
  EXPECT_EQ(shape("ln_f.weight"), (Shape{C}));
  EXPECT_EQ(shape("ln_f.bias"), (Shape{C}));
  EXPECT_EQ(p.numel(), V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C);  // 2412

  // GPT-2 init: unit gains, zero biases, std 0.02 (residual projections 0.02 / sqrt(2L)).
  EXPECT_TRUE(torch::equal(p.at("h.1.ln_1.weight"), torch::ones({C})));
  EXPECT_TRUE(torch::equal(p.at("h.1.attn.c_attn.bias"), torch::zeros({3 * C})));
  EXPECT_NEAR(p.at("wte.weight").std().item<double>(), 0.02, 0.004);
  EXPECT_NEAR(p.at("h.0.mlp.c_proj.weight").std().item<double>(), 0.02 / std::sqrt(6.0), 0.002);
  EXPECT_TRUE(torch::equal(p.at("wte.weight"), model.init_params(1).at("wte.weight")));
  EXPECT_FALSE(torch::equal(p.at("wte.weight"), model.init_params(2).at("wte.weight")));
}

TEST(ModelTest, ImpossibleConfigsAreConfigErrors) {
  ModelConfig bad = tiny_config();
  bad.n_embd = 10;
  bad.n_head = 4;
  std::string msg = error_of([&] { GPT model(bad); });
  EXPECT_NE(msg.find("10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("n_head"), std::string::npos) << msg;

  Config cfg;
  cfg.model.n_embd = 10;
  cfg.model.n_head = 4;
  msg = error_of([&] { cfg.validate(); });
  EXPECT_NE(msg.find("n_embd 10 is not divisible by n_head 4"), std::string::npos) << msg;

  EXPECT_NO_THROW(Config{}.validate());
  auto invalid = [](const std::function<void(Config&)>& change, const std::string& expected) {
    Config c;
    const std::string m = error_of([&] {
      change(c);
      c.validate();
    });
    EXPECT_NE(m.find(expected), std::string::npos) << "expected '" << expected << "' in: " << m;
  };
  invalid([](Config& c) { c.model.n_layer = 0; }, "n_layer must be >= 1, got 0");
  invalid([](Config& c) { c.model.n_head = -2; }, "n_head must be >= 1, got -2");
  invalid([](Config& c) { c.model.block_size = 0; }, "block_size must be >= 1, got 0");
  invalid([](Config& c) { c.model.dropout = 1.0; }, "dropout must be in [0, 1)");
  invalid([](Config& c) { c.train.batch_size = 0; }, "batch_size must be >= 1, got 0");
  invalid([](Config& c) { c.train.lr = -1.0; }, "lr must be > 0");
  invalid([](Config& c) { c.train.min_lr = 1.0; }, "min_lr must be in [0, lr]");
  invalid([](Config& c) { c.set_from_string("train.optimizer", "lion"); },
          "unknown optimizer 'lion'");
  invalid([](Config& c) { c.set_from_string("data.format", "csv"); }, "unknown data format 'csv'");
  invalid([](Config& c) { c.engine.modules = 0; }, "modules must be >= 1, got 0");
  invalid([](Config& c) { c.train.qh_nu = 1.5; }, "qh_nu must be in [0, 1], got 1.5");
  invalid([](Config& c) { c.train.diagnostics_interval = -1; },
          "diagnostics_interval must be >= 0");
  invalid(
      [](Config& c) {
        c.engine.modules = 3;
        c.set_from_string("engine.weight_predict", "adam");
      },
      "unknown weight_predict 'adam'");
  invalid(
      [](Config& c) { c.engine.weight_predict = WeightPredict::kOptimizer; },
      "--weight-predict optimizer acts on delayed gradients, which mode sequential does not have");
  invalid(
      [](Config& c) {
        c.engine.modules = 3;
        c.engine.mode = Mode::kGPipe;
        c.engine.stale_lr = StaleLr::kPipeMare;
      },
      "--stale-lr pipemare acts on delayed gradients, which mode gpipe does not have");
  invalid(
      [](Config& c) {
        c.engine.modules = 3;
        c.engine.predict_scale = 0.0;
      },
      "predict_scale must be > 0, got 0");
  invalid([](Config& c) { c.engine.predict_scale = EngineConfig{}.predict_scale + 1.0; },
          "--predict-scale sets the horizon of weight prediction, which this run does not use");
  invalid(
      [](Config& c) {
        c.engine.modules = 3;
        c.engine.weight_predict = WeightPredict::kNone;
        c.engine.predict_scale = EngineConfig{}.predict_scale + 1.0;
      },
      "--predict-scale sets the horizon of weight prediction, which this run does not use");
  invalid(
      [](Config& c) {
        c.train.optimizer = OptimizerKind::kAdam;
        c.train.muon_momentum = 0.9;
      },
      "a --muon-* option is set but the optimizer is adam");
  invalid(
      [](Config& c) {
        c.train.optimizer = OptimizerKind::kMuon;
        c.train.muon_ns_steps = 0;
      },
      "muon_ns_steps must be in [1, 99], got 0");
  invalid([](Config& c) { c.engine.delay_correction = DelayCorrection::kExtrapolate; },
          "--delay-correction extrapolate acts on delayed gradients, which mode sequential does "
          "not have");
  invalid(
      [](Config& c) {
        c.engine.modules = 3;
        c.engine.correction_scale = 2.0;
      },
      "--correction-scale sets the delay correction, which this run does not use");
  invalid(
      [](Config& c) {
        c.engine.modules = 3;
        c.engine.delay_correction = DelayCorrection::kExtrapolate;
        c.engine.correction_scale = 1e300;
      },
      "correction_scale must be in (0, 16], got 1e+300");
  Config muon;
  muon.engine.modules = 4;
  muon.train.optimizer = OptimizerKind::kMuon;
  muon.train.muon_lr = 0.02;
  muon.train.muon_adjust_lr = MuonLrAdjust::kOriginal;
  muon.engine.delay_correction = DelayCorrection::kExtrapolate;
  muon.engine.correction_scale = 0.5;
  EXPECT_NO_THROW(muon.validate());
  Config tolerant;
  tolerant.engine.predict_scale = 2.0;
  tolerant.engine.modules = 3;
  tolerant.train.optimizer = OptimizerKind::kQhAdam;
  tolerant.engine.weight_predict = WeightPredict::kOptimizer;
  tolerant.engine.stale_lr = StaleLr::kPipeMare;
  EXPECT_NO_THROW(tolerant.validate());
}

// A checkpoint written before --predict-scale existed predicted at horizon 1 x delay, and
// resumes so; one without prediction keeps the default, which validates.
TEST(ModelTest, CheckpointConfigKeepsWhatAnOlderRunUsed) {
  Config ouro;
  ouro.engine.modules = 3;
  nlohmann::json j = ouro.to_json();
  j["engine"].erase("predict_scale");
  EXPECT_EQ(checkpoint_config(j).engine.predict_scale, 1.0);
  EXPECT_NO_THROW(checkpoint_config(j).validate());
  j["engine"]["weight_predict"] = "none";
  EXPECT_EQ(checkpoint_config(j).engine.predict_scale, EngineConfig{}.predict_scale);
  EXPECT_NO_THROW(checkpoint_config(j).validate());
  ouro.engine.predict_scale = 2.0;
  EXPECT_EQ(checkpoint_config(ouro.to_json()).engine.predict_scale, 2.0);
}

TEST(ModelTest, UnknownJsonKeysAndWrongTypesAreConfigErrors) {
  Config cfg;
  std::string msg = error_of([&] { cfg.merge_json({{"model", {{"n_layers", 3}}}}); });
  EXPECT_NE(msg.find("unknown config key: model.n_layers"), std::string::npos) << msg;
  msg = error_of([&] { cfg.merge_json({{"model", {{"n_layer", "four"}}}}); });
  EXPECT_NE(msg.find("model.n_layer must be an integer"), std::string::npos) << msg;
  msg = error_of([&] { cfg.merge_json({{"model", {{"n_layer", 2.5}}}}); });
  EXPECT_NE(msg.find("model.n_layer must be an integer"), std::string::npos) << msg;
  msg = error_of([&] { cfg.merge_json({{"train", {{"optimizer", 3}}}}); });
  EXPECT_NE(msg.find("train.optimizer must be a string"), std::string::npos) << msg;
  msg = error_of([&] { cfg.set_from_string("model.n_layer", "abc"); });
  EXPECT_NE(msg.find("--n-layer expects a number, got 'abc'"), std::string::npos) << msg;
  EXPECT_EQ(cfg.model.n_layer, Config{}.model.n_layer);  // failed merges changed nothing here

  cfg.merge_json({{"model", {{"n_layer", 6}}}, {"train", {{"lr", 0.5}}}});
  EXPECT_EQ(cfg.model.n_layer, 6);
  EXPECT_EQ(cfg.train.lr, 0.5);
  Config round;
  round.merge_json(cfg.to_json());
  EXPECT_EQ(round.to_json(), cfg.to_json());
}

// Token j influences only positions >= j: the logits before it are unchanged.
TEST(ModelTest, ChangingATokenDoesNotChangeEarlierLogits) {
  ModelConfig cfg = tiny_config();
  cfg.block_size = 8;
  GPT model(cfg);
  ParamSet p = model.init_params(5);
  ForwardContext ctx;
  torch::NoGradGuard no_grad;
  const Tensor x = random_tokens(1, 8, 11, 9);
  const Tensor before = model.logits(p, model.hidden(p, x, ctx));  // [1, T, V]
  for (int64_t j : {0, 3, 7}) {
    Tensor changed = x.clone();
    changed[0][j] = (x[0][j].item<int64_t>() + 1) % 11;
    const Tensor after = model.logits(p, model.hidden(p, changed, ctx));
    if (j > 0) {
      const double earlier =
          (after.narrow(1, 0, j) - before.narrow(1, 0, j)).abs().max().item<double>();
      EXPECT_LE(earlier, 1e-6) << "positions < " << j << " changed by " << earlier;
    }
    const double at_j = (after.select(1, j) - before.select(1, j)).abs().max().item<double>();
    EXPECT_GT(at_j, 1e-4) << "position " << j << " did not see its own token";
  }
}

}  // namespace
}  // namespace ouroboros
