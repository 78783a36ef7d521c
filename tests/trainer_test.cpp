// label: unit
// The training loop on tiny corpora written to a temporary directory: learning, determinism, exact
// resume (Adam, SGD with momentum, dropout), the learning-rate schedule, evaluation and metrics.
#include "ouroboros/trainer.h"

#include <gtest/gtest.h>

#include "test_util.h"

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "ouroboros/errors.h"

namespace ouroboros {
namespace {
namespace fs = std::filesystem;

using ouroboros_test::TempDir;

// Sentences from a tiny grammar (4 x 3 x 3 choices): repetitive, yet not a single cycle.
std::string tiny_corpus(size_t bytes) {
  const std::vector<std::string> subjects = {"the cat", "a dog", "my bird", "the fox"};
  const std::vector<std::string> verbs = {" sat on ", " ran to ", " looked at "};
  const std::vector<std::string> objects = {"the mat.\n", "the park.\n", "a tree.\n"};
  std::mt19937 rng(7);
  std::string text;
  while (text.size() < bytes) {
    text += subjects[rng() % subjects.size()];
    text += verbs[rng() % verbs.size()];
    text += objects[rng() % objects.size()];
  }
  return text;
}

fs::path write_corpus(const TempDir& dir, size_t bytes) {
  fs::path file = dir.path() / "corpus.txt";
  std::ofstream(file, std::ios::binary) << tiny_corpus(bytes);
  return file;
}

// A model small enough that a step takes milliseconds on one core.
Config tiny_config(const fs::path& data, const fs::path& out_dir) {
  Config cfg;
  cfg.model.n_layer = 2;
  cfg.model.n_head = 2;
  cfg.model.n_embd = 16;
  cfg.model.block_size = 16;
  cfg.data.data = data.string();
  cfg.data.format = "text";  // char tokenizer
  cfg.train.steps = 30;
  cfg.train.batch_size = 4;
  cfg.train.lr = 1e-2;
  cfg.train.min_lr = 1e-3;
  cfg.train.warmup_steps = 5;
  cfg.train.eval_interval = 0;
  cfg.train.log_interval = 5;
  cfg.train.seed = 11;
  cfg.train.out_dir = out_dir.string();
  return cfg;
}

TrainOptions quiet() {
  TrainOptions opts;
  opts.quiet = true;
  return opts;
}

void expect_same_params(const ParamSet& a, const ParamSet& b) {
  ASSERT_EQ(a.names(), b.names());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.tensors()[i], b.tensors()[i])) << a.names()[i] << " differs";
  }
}

// 150 steps on ~6 kB of grammar sentences (char vocabulary V = 24 with <unk>, ln V = 3.18). A unigram model
// already reaches ~2.8 nats; the bigram/trigram structure of the words brings a small model
// below 1.2 nats within 150 steps, so 0.5 ln V = 1.59 leaves a wide margin while still
// requiring more than letter frequencies.
TEST(TrainerTest, ShortRunBringsLossClearlyDown) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 6000), dir.path() / "run");
  cfg.model.n_embd = 32;
  cfg.model.block_size = 32;
  cfg.train.batch_size = 8;
  cfg.train.steps = 150;
  cfg.train.warmup_steps = 10;
  TrainResult r = train(cfg, quiet());

  const double log_v = std::log(static_cast<double>(
      load_dataset(cfg.data.data, "text", "char").tokenizer.vocab_size()));
  ASSERT_EQ(r.steps, 150);
  ASSERT_EQ(r.losses.size(), 150u);
  EXPECT_NEAR(r.losses.front(), log_v, 0.3);  // GPT-2 init starts near uniform
  EXPECT_GT(r.valid.tokens, 0);
  RecordProperty("valid_loss", std::to_string(r.valid.loss));
  EXPECT_LT(r.valid.loss, 0.5 * log_v) << "valid loss " << r.valid.loss;
  EXPECT_LT(r.final_train_loss, 0.5 * log_v);
  EXPECT_TRUE(fs::exists(dir.path() / "run" / "ckpt.pt"));
}

TEST(TrainerTest, SameSeedGivesTheSameRunBitForBit) {
  TempDir dir;
  const fs::path data = write_corpus(dir, 3000);
  Config cfg = tiny_config(data, dir.path() / "a");
  cfg.model.dropout = 0.1;
  TrainResult a = train(cfg, quiet());
  cfg.train.out_dir = (dir.path() / "b").string();
  TrainResult b = train(cfg, quiet());
  expect_same_params(a.params, b.params);
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_EQ(a.valid.loss, b.valid.loss);

  cfg.train.seed = 12;
  cfg.train.out_dir = (dir.path() / "c").string();
  TrainResult c = train(cfg, quiet());
  EXPECT_FALSE(torch::equal(a.params.at("wte.weight"), c.params.at("wte.weight")));
}

// N steps, checkpoint, resume for M more == N + M straight, bit for bit: weights, optimizer
// moments, batch sampler and dropout generators all come back from the checkpoint.
void expect_exact_resume(Config cfg, const fs::path& root) {
  const int64_t N = 12, M = 12;
  cfg.train.steps = N + M;
  cfg.train.checkpoint_interval = N;

  cfg.train.out_dir = (root / "straight").string();
  TrainResult straight = train(cfg, quiet());
  ASSERT_EQ(straight.losses.size(), static_cast<size_t>(N + M));

  cfg.train.out_dir = (root / "interrupted").string();
  TrainOptions first = quiet();
  first.stop_after = N;
  TrainResult part = train(cfg, first);
  ASSERT_EQ(part.steps, N);
  ASSERT_EQ(part.losses.size(), static_cast<size_t>(N));
  EXPECT_EQ(part.losses, std::vector<double>(straight.losses.begin(),
                                             straight.losses.begin() + N));

  TrainOptions second = quiet();
  second.resume = (root / "interrupted" / "ckpt.pt").string();
  TrainResult resumed = train(cfg, second);
  EXPECT_EQ(resumed.steps, N + M);
  EXPECT_EQ(resumed.losses,
            std::vector<double>(straight.losses.begin() + N, straight.losses.end()));
  expect_same_params(resumed.params, straight.params);
  EXPECT_EQ(resumed.valid.loss, straight.valid.loss);
}

TEST(TrainerTest, ResumeIsExactWithAdam) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.train.optimizer = "adam";
  expect_exact_resume(cfg, dir.path());
}

TEST(TrainerTest, ResumeIsExactWithAdamWAndWeightDecay) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.train.optimizer = "adamw";
  cfg.train.weight_decay = 0.1;
  expect_exact_resume(cfg, dir.path());
}

TEST(TrainerTest, ResumeIsExactWithSgdMomentum) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.train.optimizer = "sgd";
  cfg.train.momentum = 0.9;
  cfg.train.lr = 0.1;
  cfg.train.min_lr = 0.01;
  expect_exact_resume(cfg, dir.path());
}

// The engine drains its pipeline at a checkpoint (docs/DESIGN.md); the straight run drains at
// the same tick, so resuming continues it exactly, dropout generators of every module included.
TEST(TrainerTest, ResumeIsExactWithOuroboros) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.engine.modules = 3;
  cfg.model.dropout = 0.1;
  expect_exact_resume(cfg, dir.path() / "k3");
  cfg.engine.modules = 4;
  cfg.engine.sync_warmup = 3;
  expect_exact_resume(cfg, dir.path() / "k4");
}

TEST(TrainerTest, ResumeIsExactWithDropout) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.model.dropout = 0.2;
  expect_exact_resume(cfg, dir.path());
}

TEST(TrainerTest, LearningRateWarmsUpThenFollowsTheCosine) {
  TrainConfig cfg;
  cfg.lr = 1e-2;
  cfg.min_lr = 1e-3;
  cfg.warmup_steps = 10;
  cfg.steps = 110;
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 0), 1e-2 / 10);
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 4), 1e-2 * 5 / 10);
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 9), 1e-2);
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 10), 1e-2);          // cosine starts at the peak
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 60), (1e-2 + 1e-3) / 2);  // halfway
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 110), 1e-3);         // ends at min_lr
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 500), 1e-3);         // and stays there
  EXPECT_GT(learning_rate(cfg, 30), learning_rate(cfg, 31));

  cfg.schedule = "constant";
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 0), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 10), 1e-2);
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 110), 1e-2);

  cfg.schedule = "cosine";
  cfg.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(learning_rate(cfg, 0), 1e-2);
}

// evaluate() against the windows of data.h written out by hand: 15 tokens at T = 4 give windows
// x[0,4) x[4,8) x[8,12) with targets shifted by one; token 14 is never a target.
TEST(TrainerTest, EvaluateIsTheMeanCrossEntropyOverEvalWindows) {
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

// One JSON object per line: a progress record every log_interval steps, an eval record at each
// eval_interval and at the end.
TEST(TrainerTest, MetricsFileHasOneJsonObjectPerLine) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path() / "run");
  cfg.train.steps = 20;
  cfg.train.log_interval = 5;
  cfg.train.eval_interval = 10;
  cfg.train.eval_batches = 1;
  TrainResult r = train(cfg, quiet());

  std::ifstream in(dir.path() / "run" / "metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) {
    ASSERT_NO_THROW(lines.push_back(nlohmann::json::parse(line))) << line;
    ASSERT_TRUE(lines.back().is_object()) << line;
  }
  ASSERT_EQ(lines.size(), 6u);
  auto keys = [](const nlohmann::json& j) {
    std::set<std::string> k;
    for (const auto& item : j.items()) k.insert(item.key());
    return k;
  };
  const std::set<std::string> progress = {"step", "loss", "lr", "tokens_per_s", "elapsed_s"};
  const std::set<std::string> eval = {"step", "split", "loss", "tokens", "bpc", "elapsed_s"};
  const std::vector<std::pair<int64_t, bool>> expected = {
      {5, false}, {10, false}, {10, true}, {15, false}, {20, false}, {20, true}};
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["step"].get<int64_t>(), expected[i].first) << lines[i].dump();
    EXPECT_EQ(keys(lines[i]), expected[i].second ? eval : progress) << lines[i].dump();
  }
  EXPECT_EQ(lines[2]["tokens"].get<int64_t>(), 4 * 16);  // eval_batches 1 x batch 4 x T 16
  EXPECT_EQ(lines[5]["loss"].get<double>(), r.valid.loss);
  EXPECT_EQ(lines[5]["split"].get<std::string>(), "valid");
  EXPECT_DOUBLE_EQ(lines[0]["lr"].get<double>(), learning_rate(cfg.train, 4));
}

}  // namespace
}  // namespace ouroboros
