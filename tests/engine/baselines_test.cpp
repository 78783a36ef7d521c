// label: equivalence
// The baselines against sequential backprop on the whole batch: GPipe with M micro-batches and
// data parallelism with W replicas compute the same mean gradient, so their first steps equal the
// reference trainer's (within floating-point tolerance: the sums run in another order), and bit
// for bit where the order is the same (one replica). Plus exact resume, GPipe's exact traffic, and
// one-line errors for impossible mode combinations.
#include <gtest/gtest.h>

#include "test_util.h"

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>

#include "ouroboros/core/errors.h"
#include "ouroboros/engine/data_parallel_threads.h"
#include "ouroboros/engine/gpipe_threads.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/run/methods.h"
#include "ouroboros/run/train.h"

using namespace ouroboros;

namespace {
namespace fs = std::filesystem;
using ouroboros_test::TempDir;

Config tiny_config(const std::string& optimizer) {
  Config c = ouroboros_test::tiny_config(1, optimizer);
  c.train.batch_size = 4;
  c.train.lr = optimizer == "sgd" ? 0.1 : 1e-2;
  c.train.warmup_steps = 2;
  c.train.steps = 6;
  c.train.grad_clip = 0.0;
  return c;
}

// Batch t is a pure function of t, so every method sees the same data.
Batch batch_for(const Config& c, int64_t t) {
  return ouroboros_test::random_batch(c, 500 + static_cast<uint64_t>(t));
}

struct Recording {
  std::vector<std::vector<Tensor>> params_after_step;
  std::vector<double> losses;
};

Recording record(const Config& c, int64_t steps) {
  c.validate();
  // Every thread at train.threads intra-op threads, as train() sets them: the worker threads of
  // GPipe and data parallelism run there, and a reduction splits its sum by the thread count
  // (LayerNorm's bias gradient does), so the sequential run on this thread must too. libtorch's
  // default is not 1 everywhere (the 2.x wheel takes 2 on these cores, Debian's 1.13 takes 1).
  at::set_num_threads(static_cast<int>(c.train.threads));
  GPT model(c.model);
  auto method = make_method(c, model, model.init_params(static_cast<uint64_t>(c.train.seed)));
  Recording r;
  BatchFn batch = [&](int64_t t) { return batch_for(c, t); };
  LossFn loss = [&](int64_t, double v) { r.losses.push_back(v); };
  for (int64_t t = 0; t < steps; ++t) {
    method->run(t, 1, batch, loss);
    std::vector<Tensor> v;
    for (const auto& p : method->params().tensors()) v.push_back(p.detach().clone());
    r.params_after_step.push_back(v);
  }
  return r;
}

// Largest |a - b| over every weight after every step; losses compared relatively.
void expect_close(const Recording& a, const Recording& b, double weight_tol, double loss_rtol) {
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i) {
    EXPECT_NEAR(a.losses[i], b.losses[i], loss_rtol * std::abs(b.losses[i])) << "step " << i;
  }
  double worst = 0.0;
  for (size_t t = 0; t < a.params_after_step.size(); ++t) {
    for (size_t i = 0; i < a.params_after_step[t].size(); ++i) {
      worst = std::max(
          worst,
          (a.params_after_step[t][i] - b.params_after_step[t][i]).abs().max().item<double>());
    }
  }
  EXPECT_LE(worst, weight_tol);
  std::cout << "  largest weight difference " << worst << std::endl;
  // The methods must really have trained: the weights moved well beyond the tolerance.
  const double moved =
      (a.params_after_step.back()[0] - a.params_after_step.front()[0]).abs().max().item<double>();
  EXPECT_GT(moved, 100 * weight_tol);
}

void expect_identical(const Recording& a, const Recording& b) {
  EXPECT_EQ(a.losses, b.losses);
  for (size_t t = 0; t < a.params_after_step.size(); ++t) {
    for (size_t i = 0; i < a.params_after_step[t].size(); ++i) {
      ASSERT_TRUE(torch::equal(a.params_after_step[t][i], b.params_after_step[t][i]))
          << "parameter " << i << " differs after step " << t;
    }
  }
}

Config sequential(Config c) {
  c.engine.mode = Mode::kSequential;
  c.engine.modules = 1;
  return c;
}

Config gpipe(Config c, int64_t K, int64_t M) {
  c.engine.mode = Mode::kGPipe;
  c.engine.modules = K;
  c.engine.micro_batches = M;
  return c;
}

Config data_parallel(Config c, int64_t W) {
  c.engine.mode = Mode::kDataParallel;
  c.engine.modules = 1;
  c.engine.workers = W;
  return c;
}

// Float32 sums in another order: after 6 steps at lr 0.1 (SGD) the weights agree to ~3e-8, at
// lr 1e-2 (Adam, AdamW) to ~5e-6 (Adam scales tiny gradients up); 2e-5 leaves a margin while a
// real error (a missing 1/M or 1/W, a stale weight, a lost micro-batch) moves them by > 5e-4.
constexpr double kWeightTol = 2e-5;
constexpr double kLossRtol = 1e-5;

TEST(GPipeTest, MicroBatchesEqualSequentialOnTheWholeBatch) {
  for (const std::string opt : {"sgd", "adam"}) {
    Config c = tiny_config(opt);
    Recording ref = record(sequential(c), c.train.steps);
    for (auto [K, M] : {std::pair<int64_t, int64_t>{3, 2}, {3, 4}, {4, 4}, {2, 2}}) {
      SCOPED_TRACE(opt + " K=" + std::to_string(K) + " M=" + std::to_string(M));
      expect_close(record(gpipe(c, K, M), c.train.steps), ref, kWeightTol, kLossRtol);
    }
  }
}

// With one worker (K = 2) the per-worker clipping is global clipping: equal with clipping on too.
TEST(GPipeTest, ClippingOnOneWorkerEqualsSequential) {
  Config c = tiny_config("adam");
  c.train.grad_clip = 0.05;  // active at every step
  expect_close(record(gpipe(c, 2, 4), c.train.steps), record(sequential(c), c.train.steps),
               kWeightTol, kLossRtol);
}

// One micro-batch and no dropout: the same ops in the same order as backprop, bit for bit.
TEST(GPipeTest, OneMicroBatchIsBitForBitSequential) {
  Config c = tiny_config("adam");
  expect_identical(record(gpipe(c, 3, 1), c.train.steps), record(sequential(c), c.train.steps));
}

// Every boundary carries M activations forward and M errors back per step, nothing else (the
// tied embedding stays on worker 0), and every message is received.
TEST(GPipeTest, TrafficIsExactlyTheMicroBatchesAtEachBoundary) {
  Config c = gpipe(tiny_config("adam"), 4, 2);
  c.validate();
  GPT model(c.model);
  GPipeThreads g(model, model.init_params(1), c);
  BatchFn batch = [&](int64_t t) { return batch_for(c, t); };
  LossFn loss = [](int64_t, double) {};
  const int64_t steps = 3, M = 2;
  g.run(0, steps, batch, loss);
  const int64_t message_bytes = (c.train.batch_size / M) * c.model.block_size * c.model.n_embd * 4;
  // K = 4 on 3 workers: worker 0 sends A1 and E3, worker 1 sends A2 and E1, worker 2 A3 and E2.
  for (int64_t w = 0; w < 3; ++w) {
    EXPECT_EQ(g.transport(w).stats().messages, steps * 2 * M) << "worker " << w;
    EXPECT_EQ(g.transport(w).stats().bytes, steps * 2 * M * message_bytes) << "worker " << w;
  }
  EXPECT_EQ(g.undelivered_messages(), 0u);
}

TEST(DataParallelTest, OneReplicaIsBitForBitSequentialWithDropoutAndClipping) {
  Config c = tiny_config("adam");
  c.model.dropout = 0.2;
  c.train.grad_clip = 0.05;
  expect_identical(record(data_parallel(c, 1), c.train.steps),
                   record(sequential(c), c.train.steps));
}

// Without clipping (SGD sees the gradient's scale: a wrong average fails) and with global
// clipping on the averaged gradient active, as sequential.
TEST(DataParallelTest, ReplicasEqualSequentialOnTheWholeBatch) {
  for (const std::string opt : {"sgd", "adamw"}) {
    for (double clip : {0.0, 0.05}) {
      Config c = tiny_config(opt);
      c.train.grad_clip = clip;
      Recording ref = record(sequential(c), c.train.steps);
      for (int64_t W : {2, 4}) {
        SCOPED_TRACE(opt + " clip " + std::to_string(clip) + " W=" + std::to_string(W));
        expect_close(record(data_parallel(c, W), c.train.steps), ref, kWeightTol, kLossRtol);
      }
    }
  }
}

// ---- training loop: resume ------------------------------------------------------------------

std::string tiny_corpus(size_t bytes) {
  const std::vector<std::string> words = {"the cat sat on the mat.\n", "a dog ran to the park.\n",
                                          "my bird looked at a tree.\n"};
  std::mt19937 rng(5);
  std::string text;
  while (text.size() < bytes) text += words[rng() % words.size()];
  return text;
}

Config loop_config(const fs::path& corpus) {
  Config cfg = ouroboros_test::on_corpus(ouroboros_test::tiny_config(), corpus);
  cfg.model.n_layer = 3;
  cfg.model.block_size = 16;
  cfg.model.dropout = 0.1;
  cfg.train.batch_size = 4;
  cfg.train.log_interval = 4;
  cfg.train.seed = 3;
  cfg.train.weight_decay = 0.0;
  cfg.train.grad_clip = 1.0;
  cfg.engine.partition = "auto";
  return cfg;
}

// N steps, checkpoint, resume for M more == N + M straight, bit for bit (dropout on: every
// module's or replica's generator comes back from the checkpoint).
void expect_exact_resume(Config cfg, const fs::path& root) {
  const int64_t N = 8, M = 8;
  cfg.train.steps = N + M;
  TrainOptions quiet;
  quiet.quiet = true;
  cfg.train.out_dir = (root / "straight").string();
  TrainResult straight = train(cfg, quiet);
  cfg.train.out_dir = (root / "interrupted").string();
  TrainOptions first = quiet;
  first.stop_after = N;
  train(cfg, first);
  TrainOptions second = quiet;
  second.resume = (root / "interrupted" / "ckpt.pt").string();
  TrainResult resumed = train(cfg, second);
  EXPECT_EQ(resumed.losses,
            std::vector<double>(straight.losses.begin() + N, straight.losses.end()));
  for (size_t i = 0; i < straight.params.size(); ++i) {
    EXPECT_TRUE(torch::equal(resumed.params.tensors()[i], straight.params.tensors()[i]))
        << straight.params.names()[i];
  }
  EXPECT_EQ(resumed.valid.loss, straight.valid.loss);
}

TEST(BaselinesLoopTest, ResumeIsExactForGPipeAndDataParallel) {
  TempDir dir;
  const fs::path corpus = dir.write("corpus.txt", tiny_corpus(3000));
  Config g = loop_config(corpus);
  g.engine.mode = Mode::kGPipe;
  g.engine.modules = 3;
  g.engine.micro_batches = 2;
  expect_exact_resume(g, dir.path() / "gpipe");
  Config d = loop_config(corpus);
  d.engine.mode = Mode::kDataParallel;
  d.engine.workers = 2;
  expect_exact_resume(d, dir.path() / "dp");
}

// ---- errors ---------------------------------------------------------------------------------

std::string config_error(const Config& c) {
  try {
    c.validate();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ModeConfigTest, DefaultModeFollowsModules) {
  Config c;
  EXPECT_EQ(resolved_mode(c.engine), Mode::kSequential);
  c.engine.modules = 3;
  EXPECT_EQ(resolved_mode(c.engine), Mode::kOuroboros);
  c.engine.mode = Mode::kGPipe;
  EXPECT_EQ(resolved_mode(c.engine), Mode::kGPipe);
}

TEST(ModeConfigTest, ImpossibleCombinationsAreOneLineErrors) {
  struct Case {
    std::string mode;
    int64_t modules, micro_batches, workers, batch;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"pipedream", 1, 4, 2, 8, "unknown mode 'pipedream'"},
      {"gpipe", 1, 4, 2, 8, "mode gpipe needs --modules >= 2"},
      {"ouroboros", 1, 4, 2, 8, "mode ouroboros needs --modules >= 2"},
      {"sequential", 3, 4, 2, 8, "mode sequential trains the whole model per worker"},
      {"data-parallel", 3, 4, 2, 8, "mode data-parallel trains the whole model per worker"},
      {"gpipe", 3, 3, 2, 8, "gpipe: --micro-batches 3 must be >= 1 and divide --batch-size 8"},
      {"ouroboros", 3, 3, 2, 8, "ouroboros: --micro-batches 3 must be >= 1 and divide"},
      {"ouroboros", 3, 4096, 2, 4096, "ouroboros: --micro-batches 4096 is more than 4095"},
      {"sequential", 1, 2, 2, 8, "--micro-batches applies to modes gpipe and ouroboros, not"},
      {"data-parallel", 1, 0, 3, 8, "data-parallel: --workers 3 must be >= 1 and divide"},
      {"data-parallel", 1, 0, 0, 8, "data-parallel: --workers 0"},
      {"data-parallel", 1, 4, 2, 8, "--micro-batches applies to modes gpipe and ouroboros, not"},
  };
  for (const auto& k : cases) {
    Config c;
    c.engine.modules = k.modules;
    c.engine.micro_batches = k.micro_batches;
    c.engine.workers = k.workers;
    c.train.batch_size = k.batch;
    std::string msg;
    try {  // as from a flag or a config file: the name is read first, then the whole is checked
      c.set_from_string("engine.mode", k.mode);
      msg = config_error(c);
    } catch (const ConfigError& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find(k.expected), std::string::npos) << k.mode << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // Valid combinations pass.
  Config ok;
  ok.engine.mode = Mode::kGPipe;
  ok.engine.modules = 3;
  EXPECT_EQ(config_error(ok), "");
  ok.engine.mode = Mode::kDataParallel;
  ok.engine.modules = 1;
  EXPECT_EQ(config_error(ok), "");
}

TEST(ModeConfigTest, CliPrintsOneLineAndFails) {
  const std::string cmd = std::string(OUROBOROS_BINARY) +
                          " train --mode data-parallel --workers 3 --batch-size 8 --steps 1 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[1024];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_EQ(out.rfind("error: data-parallel: --workers 3", 0), 0u) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

}  // namespace
