// label: unit
// The training loop on tiny corpora written to a temporary directory: learning, determinism, exact
// resume (Adam, SGD with momentum, dropout), the job list every rank walks, and metrics.
#include "ouroboros/run/train.h"

#include <gtest/gtest.h>

#include "test_util.h"

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <tuple>

#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"
#include "ouroboros/data/dataset.h"
#include "ouroboros/train/checkpoint.h"
#include "ouroboros/train/optim.h"

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
  Config cfg = ouroboros_test::on_corpus(ouroboros_test::tiny_config(), data);  // char tokenizer
  cfg.model.n_layer = 2;
  cfg.model.block_size = 16;
  cfg.train.steps = 30;
  cfg.train.batch_size = 4;
  cfg.train.warmup_steps = 5;
  cfg.train.log_interval = 5;
  cfg.train.seed = 11;
  cfg.train.weight_decay = 0.0;
  cfg.train.grad_clip = 1.0;
  cfg.train.out_dir = out_dir.string();
  cfg.engine.partition = "auto";
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

// 150 steps on ~6 kB of grammar sentences (char vocabulary V = 24 with <unk>, ln V = 3.18). A
// unigram model already reaches ~2.8 nats; the bigram/trigram structure of the words brings a small
// model below 1.2 nats within 150 steps, so 0.5 ln V = 1.59 leaves a wide margin while still
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

  const double log_v = std::log(
      static_cast<double>(load_dataset(cfg.data.data, "text", "char").tokenizer.vocab_size()));
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
// moments, batch sampler, dropout generators and the batches in flight all come back from the
// checkpoint; and the straight run with its checkpoint equals one without.
void expect_exact_resume(Config cfg, const fs::path& root) {
  const int64_t N = 12, M = 12;
  cfg.train.steps = N + M;
  cfg.train.out_dir = (root / "no-checkpoints").string();
  TrainResult plain = train(cfg, quiet());
  cfg.train.checkpoint_interval = N;

  cfg.train.out_dir = (root / "straight").string();
  TrainResult straight = train(cfg, quiet());
  ASSERT_EQ(straight.losses.size(), static_cast<size_t>(N + M));
  EXPECT_EQ(straight.losses, plain.losses);
  expect_same_params(straight.params, plain.params);

  cfg.train.out_dir = (root / "interrupted").string();
  TrainOptions first = quiet();
  first.stop_after = N;
  TrainResult part = train(cfg, first);
  ASSERT_EQ(part.steps, N);
  ASSERT_EQ(part.losses.size(), static_cast<size_t>(N));
  EXPECT_EQ(part.losses, std::vector<double>(straight.losses.begin(), straight.losses.begin() + N));
  MethodState saved;
  saved.pipeline = load_checkpoint((root / "interrupted" / "ckpt.pt").string()).pipeline;
  if (cfg.engine.modules >= 2) {  // the delayed modules' batches are in the file, not drained
    EXPECT_EQ(saved.pipeline.batches(), cfg.engine.modules * (cfg.engine.modules - 1) / 2);
  }

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
  cfg.train.optimizer = OptimizerKind::kAdam;
  expect_exact_resume(cfg, dir.path());
}

TEST(TrainerTest, ResumeIsExactWithAdamWAndWeightDecay) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.train.optimizer = OptimizerKind::kAdamW;
  cfg.train.weight_decay = 0.1;
  expect_exact_resume(cfg, dir.path());
}

TEST(TrainerTest, ResumeIsExactWithSgdMomentum) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.train.optimizer = OptimizerKind::kSgd;
  cfg.train.momentum = 0.9;
  cfg.train.lr = 0.1;
  cfg.train.min_lr = 0.01;
  expect_exact_resume(cfg, dir.path());
}

// A checkpoint keeps the engine's pipeline (docs/DESIGN.md): resuming runs the saved forwards
// again and continues the very same run, dropout generators and weight predictions included.
TEST(TrainerTest, ResumeIsExactWithOuroboros) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.model.dropout = 0.1;
  cfg.engine.modules = 2;
  expect_exact_resume(cfg, dir.path() / "k2");
  cfg.engine.modules = 3;
  expect_exact_resume(cfg, dir.path() / "k3");
  cfg.engine.modules = 4;
  cfg.engine.sync_warmup = 3;
  cfg.engine.weight_predict = WeightPredict::kAuto;
  expect_exact_resume(cfg, dir.path() / "k4");
}

// Transformer-XL: each module's memories before every saved forward come back with it.
TEST(TrainerTest, ResumeIsExactWithOuroborosTransformerXL) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.model.model = ModelKind::kTransformerXl;
  cfg.model.mem_len = 8;
  cfg.model.dropout = 0.1;
  cfg.engine.modules = 3;
  expect_exact_resume(cfg, dir.path() / "xl3");
}

// With recomputation a checkpoint holds the same pipeline (inputs, weights, generators and
// memories); resuming keeps the inputs and recomputes before each backward: GPT with K = 4 and
// two micro-batches, Transformer-XL with K = 3.
TEST(TrainerTest, ResumeIsExactWithRecompute) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.model.dropout = 0.1;
  cfg.engine.modules = 4;
  cfg.engine.micro_batches = 2;
  cfg.engine.weight_predict = WeightPredict::kAuto;
  cfg.engine.recompute = Recompute::kDelayed;
  expect_exact_resume(cfg, dir.path() / "gpt4");
  cfg.model.model = ModelKind::kTransformerXl;
  cfg.model.mem_len = 8;
  cfg.engine.modules = 3;
  expect_exact_resume(cfg, dir.path() / "xl3");
}

TEST(TrainerTest, ResumeIsExactWithDropout) {
  TempDir dir;
  Config cfg = tiny_config(write_corpus(dir, 3000), dir.path());
  cfg.model.dropout = 0.2;
  expect_exact_resume(cfg, dir.path());
}

// Every rank walks this list: runs up to each evaluation and checkpoint boundary, evaluations
// before the last step only, checkpoints before the stop only, then the final drain.
TEST(TrainerTest, TrainingJobsSplitTheRunAtEveryBoundary) {
  TrainConfig t;
  t.steps = 10;
  t.eval_interval = 4;
  t.checkpoint_interval = 6;
  using J = TrainJob;
  const std::vector<TrainJob> jobs = training_jobs(t, 0, 10);
  const std::vector<std::tuple<int, int64_t, int64_t>> expected = {
      {J::kRun, 0, 4}, {J::kEvaluate, 4, 0}, {J::kRun, 4, 2}, {J::kCheckpoint, 6, 0},
      {J::kRun, 6, 2}, {J::kEvaluate, 8, 0}, {J::kRun, 8, 2}, {J::kFinal, 10, 0}};
  ASSERT_EQ(jobs.size(), expected.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(jobs[i].kind, std::get<0>(expected[i])) << "job " << i;
    EXPECT_EQ(jobs[i].first, std::get<1>(expected[i])) << "job " << i;
    EXPECT_EQ(jobs[i].count, std::get<2>(expected[i])) << "job " << i;
  }
  // Resumed at 6 and stopped at 8 (before the last step): the evaluation at 8 still runs, but no
  // checkpoint job at the stop itself, where the final one writes it.
  const std::vector<TrainJob> part = training_jobs(t, 6, 8);
  ASSERT_EQ(part.size(), 3u);
  EXPECT_EQ(part[0].kind, J::kRun);
  EXPECT_EQ(part[0].count, 2);
  EXPECT_EQ(part[1].kind, J::kEvaluate);
  EXPECT_EQ(part[2].kind, J::kFinal);
  EXPECT_EQ(part[2].first, 8);
}

// One JSON object per line: a progress record every log_interval steps, an eval record at each
// eval_interval and at the end, and a record of each checkpoint written.
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
  ASSERT_EQ(lines.size(), 7u);
  auto keys = [](const nlohmann::json& j) {
    std::set<std::string> k;
    for (const auto& item : j.items()) k.insert(item.key());
    return k;
  };
  const std::set<std::string> progress = {"run", "step", "loss", "lr", "tokens_per_s", "elapsed_s"};
  const std::set<std::string> eval = {"run",    "step", "split", "loss",
                                      "tokens", "bpc",  "bpb",   "elapsed_s"};
  const std::set<std::string> saved = {"run", "step", "checkpoint_mib", "checkpoint_s",
                                       "in_flight"};
  const std::vector<std::pair<int64_t, const std::set<std::string>*>> expected = {
      {5, &progress},  {10, &progress}, {10, &eval}, {15, &progress},
      {20, &progress}, {20, &saved},    {20, &eval}};
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["step"].get<int64_t>(), expected[i].first) << lines[i].dump();
    EXPECT_EQ(keys(lines[i]), *expected[i].second) << lines[i].dump();
    // Every record names the run its checkpoint names.
    EXPECT_EQ(lines[i]["run"].get<std::string>(), load_checkpoint(r.checkpoint).run);
  }
  EXPECT_EQ(lines[2]["tokens"].get<int64_t>(), 4 * 16);  // eval_batches 1 x batch 4 x T 16
  EXPECT_EQ(lines[5]["in_flight"].get<int64_t>(), 0);    // the last checkpoint drains
  EXPECT_GT(lines[5]["checkpoint_mib"].get<double>(), 0.0);
  EXPECT_EQ(lines[6]["loss"].get<double>(), r.valid.loss);
  EXPECT_EQ(lines[6]["split"].get<std::string>(), "valid");
  EXPECT_DOUBLE_EQ(lines[0]["lr"].get<double>(), learning_rate(cfg.train, 4));
}

// Device flags that cannot take effect are refused with the reason: CUDA where none is visible,
// TF32 on the CPU, and values outside their range.
TEST(Train, DeviceAndTf32AreRefusedWhereTheyCannotTakeEffect) {
  if (!torch::cuda::is_available()) {
    try {
      run_device("cuda");
      ADD_FAILURE() << "--device cuda accepted without a GPU";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("no CUDA device is visible"), std::string::npos);
    }
    EXPECT_EQ(run_device("auto"), c10::Device(c10::kCPU));
    EXPECT_THROW(set_tf32(true, run_device("auto")), ConfigError);
  }
  EXPECT_THROW(run_device("gpu"), ConfigError);
  // Threads stay on the process's device unless it is a GPU and several are visible.
  EXPECT_EQ(worker_device("auto", c10::Device(c10::kCPU), 3), c10::Device(c10::kCPU));
  EXPECT_EQ(worker_device("cuda:1", c10::Device(c10::kCUDA, 1), 2), c10::Device(c10::kCUDA, 1));
  EXPECT_THROW(set_tf32(true, c10::Device(c10::kCPU)), ConfigError);
  EXPECT_NO_THROW(set_tf32(false, c10::Device(c10::kCPU)));
  Config c;
  c.train.tf32 = 2;
  EXPECT_THROW(c.validate(), ConfigError);
  c.train.tf32 = 1;
  c.train.device = "cpu";
  EXPECT_THROW(c.validate(), ConfigError);
  c.train.device = "auto";
  EXPECT_NO_THROW(c.validate());
}

}  // namespace
}  // namespace ouroboros
