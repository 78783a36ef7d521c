// label: unit
// The learning-rate schedule (warm-up, cosine, constant) and evaluation over windows.
#include <gtest/gtest.h>

#include <cmath>

#include "ouroboros/core/errors.h"
#include "ouroboros/data/dataset.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/train/evaluate.h"
#include "ouroboros/train/optim.h"
#include "test_util.h"

namespace ouroboros {
namespace {

TEST(OptimTest, LearningRateWarmsUpThenFollowsTheCosine) {
  TrainConfig cfg;
  cfg.lr = 1e-2;
  cfg.min_lr = 1e-3;
  cfg.warmup_steps = 10;
  cfg.steps = 110;
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 0), 1e-2 / 10);
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 4), 1e-2 * 5 / 10);
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 9), 1e-2);
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 10), 1e-2);               // cosine starts at the peak
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 60), (1e-2 + 1e-3) / 2);  // halfway
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 110), 1e-3);              // ends at min_lr
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 500), 1e-3);              // and stays there
  EXPECT_GT(learning_rate(cfg, 30), learning_rate(cfg, 31));

  cfg.schedule = LrSchedule::kConstant;
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 0), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 10), 1e-2);
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 110), 1e-2);

  cfg.schedule = LrSchedule::kCosine;
  cfg.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 0), 1e-2);
}

// evaluate() against the windows of data/dataset.h written out by hand: 15 tokens at T = 4 give
// windows x[0,4) x[4,8) x[8,12) with targets shifted by one; token 14 is never a target.
TEST(EvaluateTest, EvaluateIsTheMeanCrossEntropyOverEvalWindows) {
  ModelConfig mc;
  mc.n_layer = 1;
  mc.n_head = 2;
  mc.n_embd = 8;
  mc.block_size = 4;
  mc.vocab_size = 11;
  GPT model(mc);
  ParamSet p = model.init_params(3);
  at::Generator gen = make_generator(4);
  for (Tensor t : p.tensors()) {  // shares storage with p
    torch::NoGradGuard no_grad;
    t.add_(at::normal(0.0, 0.3, t.sizes(), gen));  // logits far from uniform
  }
  const std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 10};
  ASSERT_EQ(num_eval_windows(15, 4), 3);

  torch::NoGradGuard no_grad;
  ForwardContext ctx;
  std::vector<double> window_loss;
  for (int64_t j = 0; j < 3; ++j) {
    std::vector<int64_t> x(tokens.begin() + 4 * j, tokens.begin() + 4 * j + 4);
    std::vector<int64_t> y(tokens.begin() + 4 * j + 1, tokens.begin() + 4 * j + 5);
    Tensor lg = model.logits(p, model.hidden(p, torch::tensor(x).view({1, 4}), ctx))[0];
    window_loss.push_back(at::cross_entropy_loss(lg, torch::tensor(y)).item<double>());
  }
  EvalResult all = evaluate(model, p, tokens, 2);  // batches of 2 and 1 windows
  EXPECT_EQ(all.tokens, 12);
  EXPECT_NEAR(all.loss, (window_loss[0] + window_loss[1] + window_loss[2]) / 3, 1e-6);
  EXPECT_GT(std::abs(all.loss - std::log(11.0)), 0.05);  // not trivially uniform
  EXPECT_NEAR(all.bpc(), all.loss / std::log(2.0), 1e-12);

  EvalResult two = evaluate(model, p, tokens, 16, 2);
  EXPECT_EQ(two.tokens, 8);
  EXPECT_NEAR(two.loss, (window_loss[0] + window_loss[1]) / 2, 1e-6);

  const std::vector<int32_t> too_short = {1, 2, 3, 4};
  EXPECT_THROW(evaluate(model, p, too_short, 2), DataError);
}

// A gradient with a nan is dropped without touching the weights or the optimizer state while
// the skip budget lasts; the next one stops with the parameter named.
TEST(OptimTest, NonFiniteGradientsAreSkippedThenStop) {
  TrainConfig cfg;
  cfg.optimizer = OptimizerKind::kAdam;
  cfg.skip_nonfinite = 1;
  ParamSet p;
  p.add("h.0.mlp.c_fc.weight", torch::ones({3}).requires_grad_(true));
  p.add("h.0.mlp.c_fc.bias", torch::ones({2}).requires_grad_(true));
  Optimizer opt(cfg, p);
  auto set_grads = [&](float bias_grad) {
    p.at("h.0.mlp.c_fc.weight").mutable_grad() = torch::full({3}, 0.5f);
    p.at("h.0.mlp.c_fc.bias").mutable_grad() = torch::full({2}, bias_grad);
  };
  set_grads(std::nanf(""));
  EXPECT_FALSE(opt.apply(1e-2, 1.0));
  EXPECT_EQ(opt.skipped(), 1);
  EXPECT_TRUE(torch::equal(p.at("h.0.mlp.c_fc.weight"), torch::ones({3})));
  EXPECT_EQ(opt.state_dict().size(), 0u);
  EXPECT_FALSE(p.at("h.0.mlp.c_fc.weight").grad().defined());
  set_grads(0.25f);  // finite: applied
  EXPECT_TRUE(opt.apply(1e-2, 1.0));
  EXPECT_FALSE(torch::equal(p.at("h.0.mlp.c_fc.weight"), torch::ones({3})));
  set_grads(INFINITY);
  try {
    opt.apply(1e-2, 0.0);
    FAIL() << "a second non-finite gradient was applied";
  } catch (const NumericError& e) {
    EXPECT_NE(std::string(e.what()).find("of h.0.mlp.c_fc.bias"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ouroboros
