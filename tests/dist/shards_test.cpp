// label: distributed
// Sharded checkpoints of processes: each rank writes its own part, the batches in flight
// included (GPT and Transformer-XL, whose memories and stream position travel too); a run killed
// (SIGKILL) after a checkpoint and resumed equals the uninterrupted run, which equals threads
// without any checkpoint; a writer killed mid-shard leaves the previous checkpoint whole; threads
// resume a processes' checkpoint, and processes one of another layout.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <tuple>

#include "dist_util.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/checkpoint.h"
#include "test_util.h"

using namespace ouroboros;
using namespace ouroboros_test;

namespace {

// K, model, micro-batches.
class ResumeAfterKill : public ::testing::TestWithParam<std::tuple<int64_t, std::string, int64_t>> {
};

Config shard_config(const fs::path& data, int64_t K, const std::string& model = "gpt") {
  Config cfg = tiny_config(data, K, "adam");
  cfg.model.model = parse_option<ModelKind>(model);
  cfg.model.mem_len = 8;  // Transformer-XL: each module's memories travel in its shard
  cfg.model.dropout = 0.1;
  cfg.train.schedule = LrSchedule::kConstant;  // the learning rate does not depend on train.steps
  cfg.train.eval_interval = 10;                // rank 0 collects the weights mid-run
  cfg.train.steps = 24;
  return cfg;
}

TEST_P(ResumeAfterKill, EqualsTheUninterruptedRunAndThreads) {
  const auto [K, model, M] = GetParam();
  const int world = static_cast<int>(K - 1);
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = shard_config(data, K, model);
  cfg.engine.micro_batches = M;

  Config plain = cfg;  // threads, no checkpoint before the last
  plain.train.out_dir = (dir.path() / "threads").string();
  TrainOptions quiet;
  quiet.quiet = true;
  const TrainResult t = train(plain, quiet);

  cfg.train.checkpoint_interval = 12;
  Config whole = cfg;
  whole.train.out_dir = (dir.path() / "whole").string();
  auto codes = run_processes(dir, write_config(dir, "whole.json", whole), world, "w");
  for (int r = 0; r < world; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "w", world);
  const Checkpoint a = load_checkpoint((dir.path() / "whole" / "ckpt").string());
  expect_same_checkpoint(a, load_checkpoint((dir.path() / "threads" / "ckpt.pt").string()));
  EXPECT_EQ(a.memory.size(), model == "gpt" ? 0u : 4u);  // one memory per layer
  EXPECT_EQ(metric_losses(dir.path() / "whole" / "metrics.jsonl"), t.losses);
  EXPECT_EQ(metric_evals(dir.path() / "whole" / "metrics.jsonl"),
            metric_evals(dir.path() / "threads" / "metrics.jsonl"));
  EXPECT_EQ(metric_evals(dir.path() / "whole" / "metrics.jsonl").size(), 3u);

  // Rank 0 dies right after the checkpoint at step 12; the others end on the lost peer.
  Config killed = cfg;
  killed.train.out_dir = (dir.path() / "killed").string();
  const fs::path file = write_config(dir, "killed.json", killed);
  codes = run_processes(dir, file, world, "k", {}, 60,
                        {{"OUROBOROS_FAULT", "kill:checkpoint-written:0"}});
  ASSERT_EQ(codes[0], 128 + SIGKILL) << logs(dir, "k", world);
  const fs::path ckpt = dir.path() / "killed" / "ckpt";
  const Checkpoint mid = load_checkpoint(ckpt.string());
  EXPECT_EQ(mid.step, 12);
  MethodState s;
  s.pipeline = mid.pipeline;
  EXPECT_EQ(s.pipeline.batches(), K * (K - 1) / 2);  // kept, not drained
  int shards = 0;
  for (const auto& e : fs::recursive_directory_iterator(ckpt)) {
    shards += e.path().filename().string().rfind("rank-", 0) == 0;
  }
  EXPECT_EQ(shards, world);

  // Threads resume the processes' checkpoint with its pipeline.
  TrainOptions cross = quiet;
  cross.resume = ckpt.string();
  Config crossed = cfg;
  crossed.train.out_dir = (dir.path() / "crossed").string();
  const TrainResult c = train(crossed, cross);
  EXPECT_EQ(c.losses, std::vector<double>(t.losses.begin() + 12, t.losses.end()));
  ASSERT_EQ(c.params.names(), t.params.names());
  for (size_t i = 0; i < t.params.size(); ++i) {
    EXPECT_TRUE(torch::equal(c.params.tensors()[i], t.params.tensors()[i])) << t.params.names()[i];
  }

  codes = run_processes(dir, file, world, "r", {"--resume", ckpt.string()});
  for (int r = 0; r < world; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "r", world);
  expect_same_checkpoint(load_checkpoint(ckpt.string()), a);
  EXPECT_EQ(metric_losses(dir.path() / "killed" / "metrics.jsonl"), t.losses);
}

INSTANTIATE_TEST_SUITE_P(Distributed, ResumeAfterKill,
                         ::testing::Values(std::make_tuple(3, "gpt", 1),
                                           std::make_tuple(4, "gpt", 1),
                                           std::make_tuple(3, "transformer-xl", 1),
                                           std::make_tuple(4, "transformer-xl", 1),
                                           std::make_tuple(4, "transformer-xl", 2)),
                         [](const auto& info) {
                           const std::string m = std::get<1>(info.param);
                           const int64_t M = std::get<2>(info.param);
                           return (m == "gpt" ? "GPT" : "XL") + std::string("_K") +
                                  std::to_string(std::get<0>(info.param)) +
                                  (M > 1 ? "_M" + std::to_string(M) : "");
                         });

// Rank 1 killed in the middle of writing its shard of the second checkpoint: the manifest still
// names the first, which loads whole, and a resumed run clears the debris. Export writes the
// shards' single-file form.
TEST(Distributed, WriterKilledMidShardLeavesTheLastCheckpoint) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = shard_config(data, 3);
  cfg.train.steps = 12;
  cfg.train.out_dir = (dir.path() / "out").string();
  auto codes = run_processes(dir, write_config(dir, "first.json", cfg), 2, "a");
  for (int r = 0; r < 2; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "a", 2);
  const fs::path ckpt = dir.path() / "out" / "ckpt";
  const Checkpoint before = load_checkpoint(ckpt.string());
  ASSERT_EQ(before.step, 12);
  // The single-file form of the shards, for torch.load; an existing file is kept.
  const fs::path one = dir.path() / "one.pt";
  const std::string exp = std::string(OUROBOROS_BINARY) + " export --checkpoint " + ckpt.string() +
                          " --format torch --out " + one.string() + " 2>&1";
  auto [text, code] = run_command(exp);
  ASSERT_EQ(code, 0) << text;
  expect_same_checkpoint(load_checkpoint(one.string()), before);
  std::tie(text, code) = run_command(exp);
  EXPECT_EQ(text, "error: export: " + one.string() +
                      " exists (hint: choose another --out or add --overwrite)\n");
  if (run_command("/usr/bin/python3 -c 'import torch' 2>&1").second == 0) {
    std::tie(text, code) = run_command(
        "/usr/bin/python3 -c \"import sys, torch; d = torch.load(sys.argv[1]); "
        "print(d['step'], len(d['model']))\" " +
        one.string() + " 2>&1");
    EXPECT_EQ(text, "12 " + std::to_string(before.model.size()) + "\n");
  }

  cfg.train.steps = 24;
  const fs::path file = write_config(dir, "second.json", cfg);
  codes = run_processes(dir, file, 2, "b", {"--resume", ckpt.string()}, 60,
                        {{"OUROBOROS_FAULT", "kill:checkpoint-write:1"}});
  EXPECT_EQ(codes[1], 128 + SIGKILL) << logs(dir, "b", 2);
  EXPECT_EQ(codes[0], 1) << logs(dir, "b", 2);
  const auto temporaries = [&] {
    int n = 0;
    for (const auto& e : fs::recursive_directory_iterator(ckpt)) {
      n += e.path().filename().string().find(".tmp.") != std::string::npos;
    }
    return n;
  };
  EXPECT_GE(temporaries(), 1);  // the half-written shard
  expect_same_checkpoint(load_checkpoint(ckpt.string()), before);

  codes = run_processes(dir, file, 2, "c", {"--resume", ckpt.string()});
  for (int r = 0; r < 2; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "c", 2);
  EXPECT_EQ(load_checkpoint(ckpt.string()).step, 24);
  EXPECT_EQ(temporaries(), 0);
}

// Processes of K = 4 resume a threaded K = 3 checkpoint that holds batches in flight: drained on
// its own layout first, it continues exactly as threads of K = 4 continue it.
TEST(Distributed, ProcessesResumeAnotherLayoutsCheckpoint) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = shard_config(data, 3);
  cfg.train.checkpoint_interval = 12;
  cfg.train.out_dir = (dir.path() / "k3").string();
  TrainOptions first;
  first.quiet = true;
  first.stop_after = 12;
  train(cfg, first);
  const std::string ckpt = (dir.path() / "k3" / "ckpt.pt").string();

  Config k4 = shard_config(data, 4);
  k4.train.out_dir = (dir.path() / "threads").string();
  TrainOptions resume;
  resume.quiet = true;
  resume.resume = ckpt;
  const TrainResult t = train(k4, resume);
  ASSERT_EQ(t.losses.size(), 12u);

  k4.train.out_dir = (dir.path() / "processes").string();
  const auto codes =
      run_processes(dir, write_config(dir, "k4.json", k4), 3, "p", {"--resume", ckpt});
  for (int r = 0; r < 3; ++r) ASSERT_EQ(codes[r], 0);
  EXPECT_NE(logs(dir, "p", 3).find("resuming " + ckpt + " (--mode ouroboros --modules 3"),
            std::string::npos);
  EXPECT_EQ(metric_losses(dir.path() / "processes" / "metrics.jsonl"), t.losses);
  expect_same_checkpoint(load_checkpoint((dir.path() / "processes" / "ckpt").string()),
                         load_checkpoint((dir.path() / "threads" / "ckpt.pt").string()));
}

// A checkpoint of two rings that holds batches in flight cannot be drained by threads: resuming
// it under another layout is refused with how to drain it, and its files stay as they were.
TEST(Distributed, RingsInFlightUnderAnotherLayoutAreRefused) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = shard_config(data, 2);
  cfg.dist.replicas = 2;
  cfg.train.checkpoint_interval = 12;
  cfg.train.out_dir = (dir.path() / "rings").string();
  const auto codes = run_processes(dir, write_config(dir, "rings.json", cfg), 2, "g", {}, 60,
                                   {{"OUROBOROS_FAULT", "kill:checkpoint-written:0"}});
  ASSERT_EQ(codes[0], 128 + SIGKILL) << logs(dir, "g", 2);
  const fs::path ckpt = dir.path() / "rings" / "ckpt";
  const std::string manifest = read_bytes(ckpt / "manifest.pt");

  Config k3 = shard_config(data, 3);
  k3.train.out_dir = (dir.path() / "k3").string();
  TrainOptions o;
  o.quiet = true;
  o.resume = ckpt.string();
  try {
    train(k3, o);
    FAIL() << "resumed";
  } catch (const CheckpointError& e) {
    EXPECT_EQ(std::string(e.what()),
              "checkpoint " + ckpt.string() +
                  " holds 2 batches in flight of 2 rings, which drain "
                  "only on processes of its layout (--mode ouroboros --modules 2 --partition even "
                  "--micro-batches auto --replicas 2) (hint: resume it once with its layout and "
                  "--steps 12 (that writes a "
                  "drained checkpoint), then change the layout)");
  }
  EXPECT_EQ(read_bytes(ckpt / "manifest.pt"), manifest);
}

// What processes cannot run yet is refused before any connection, with what to do instead.
TEST(Distributed, ProcessesRefuseWhatTheyCannotRun) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  DistEnv env;
  env.rank = 0;
  env.world_size = 4;
  const auto refusal = [&](const Config& c) {
    try {
      train_distributed(c, TrainOptions{}, env);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Config gpipe = shard_config(data, 3);
  gpipe.engine.mode = Mode::kGPipe;
  gpipe.engine.micro_batches = 2;
  gpipe.dist.replicas = 2;
  EXPECT_EQ(refusal(gpipe),
            "--mode gpipe runs one ring across processes, not --replicas 2 "
            "(hint: drop --replicas, or use the default mode (Ouroboros) for "
            "several rings)");
  Config dp = shard_config(data, 1);
  dp.engine.mode = Mode::kDataParallel;
  EXPECT_EQ(refusal(dp),
            "processes run --mode ouroboros or gpipe, or data parallelism as "
            "--modules 1 --replicas R, not data-parallel (hint: one process per "
            "replica: --modules 1 --replicas R (batch B each))");
}

// Two rings of Transformer-XL: each ring keeps the memories of its own rows (streams), saved in
// its own shards and joined in ring order, so the run equals one ring of twice the streams up to
// float rounding (SGD), and a run killed after a checkpoint resumes into it exactly.
TEST(Distributed, TwoRingsOfTransformerXLEqualOneRingOfTwiceTheStreams) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = shard_config(data, 3, "transformer-xl");
  cfg.train.optimizer = OptimizerKind::kSgd;
  cfg.train.lr = 0.05;
  cfg.train.min_lr = 0.01;
  cfg.model.dropout = 0.0;  // each ring draws its own masks, one ring of 2B others again
  cfg.train.steps = 16;
  cfg.train.checkpoint_interval = 8;

  const Config one = with_rings(cfg, 4, 1, dir.path() / "one");
  const Config two = with_rings(cfg, 2, 2, dir.path() / "two");
  const TrainResult single = run_threads_and_processes(dir, one, two, 4, "x");
  ASSERT_FALSE(HasFailure());
  const Checkpoint a = load_checkpoint((dir.path() / "two" / "ckpt").string());
  const Checkpoint b = load_checkpoint((dir.path() / "one" / "ckpt.pt").string());
  EXPECT_LT(max_difference(a.model, b.model), 1e-5);
  ASSERT_EQ(a.memory.size(), 4u);
  for (const auto& [layer, m] : a.memory) {
    ASSERT_EQ(m.sizes(), b.memory.at(layer).sizes()) << "layer " << layer;  // [2B, M, C]
    EXPECT_LT((m - b.memory.at(layer)).abs().max().item<double>(), 1e-4) << "layer " << layer;
  }
  const std::vector<double> losses = metric_losses(dir.path() / "two" / "metrics.jsonl");
  ASSERT_EQ(losses.size(), single.losses.size());
  for (size_t i = 0; i < losses.size(); ++i) EXPECT_NEAR(losses[i], single.losses[i], 1e-5);

  // Killed after the checkpoint at step 8 (batches in flight, each ring's memories in its
  // shards), resumed: the same run as the uninterrupted one.
  Config killed = two;
  killed.train.out_dir = (dir.path() / "killed").string();
  const fs::path kfile = write_config(dir, "killed.json", killed);
  auto codes =
      run_processes(dir, kfile, 4, "k", {}, 60, {{"OUROBOROS_FAULT", "kill:checkpoint-written:0"}});
  ASSERT_EQ(codes[0], 128 + SIGKILL) << logs(dir, "k", 4);
  const fs::path kckpt = dir.path() / "killed" / "ckpt";
  EXPECT_EQ(load_checkpoint(kckpt.string()).step, 8);
  codes = run_processes(dir, kfile, 4, "kr", {"--resume", kckpt.string()});
  for (int r = 0; r < 4; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "kr", 4);
  expect_same_checkpoint(load_checkpoint(kckpt.string()), a);
  EXPECT_EQ(metric_losses(dir.path() / "killed" / "metrics.jsonl"), losses);
}

}  // namespace
