// label: gpu
// --backend nccl between processes on GPUs. NCCL refuses two ranks on one GPU, so every test here
// needs two visible GPUs and a build with NCCL (scripts/build-torch2.sh), and skips with the
// reason elsewhere. Ouroboros K = 3 and data parallelism over NCCL train as over Gloo (the same
// GPUs, the messages through host memory): the transports only move bytes, so the difference
// is the GPUs' own run-to-run variation (atomics in some backward kernels), bounded below; a
// killed rank is named within the timeout.
#include <gtest/gtest.h>

#include "dist_util.h"
#include "ouroboros/dist/pair_transport.h"
#include "test_util.h"

using namespace ouroboros;
using namespace ouroboros_test;

namespace {

#define SKIP_WITHOUT_TWO_GPUS()                                                              \
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL (scripts/build-torch2.sh has)"; \
  if (torch::cuda::device_count() < 2) {                                                     \
    GTEST_SKIP() << "NCCL needs a GPU per rank: " << torch::cuda::device_count()             \
                 << " visible, 2 needed";                                                    \
  }

// Two GPU processes of cfg with --backend `backend`; their checkpoint and losses.
std::pair<Checkpoint, std::vector<double>> run_on_gpus(const TempDir& dir, Config cfg,
                                                       const std::string& backend, int world) {
  cfg.train.device = "cuda";
  cfg.dist.backend = parse_option<Backend>(backend);
  cfg.train.out_dir = (dir.path() / backend).string();
  auto codes =
      run_processes(dir, write_config(dir, backend + ".json", cfg), world, backend, {}, 120);
  for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << logs(dir, backend, world);
  const std::string log = read_bytes(dir.path() / (backend + "_rank0.log"));
  EXPECT_NE(log.find("c10d " + backend), std::string::npos) << log;
  return {load_checkpoint((dir.path() / backend / "ckpt").string()),
          metric_losses(dir.path() / backend / "metrics.jsonl")};
}

void expect_close_runs(const std::pair<Checkpoint, std::vector<double>>& a,
                       const std::pair<Checkpoint, std::vector<double>>& b) {
  EXPECT_EQ(a.first.step, b.first.step);
  EXPECT_LT(max_difference(a.first.model, b.first.model), 1e-4);
  ASSERT_EQ(a.second.size(), b.second.size());
  ASSERT_FALSE(a.second.empty());
  for (size_t i = 0; i < a.second.size(); ++i) {
    EXPECT_NEAR(a.second[i], b.second[i], 1e-4 * std::abs(b.second[i])) << "step " << i;
  }
}

// cfg over NCCL against cfg over Gloo, two processes each.
void expect_trains_as_over_gloo(const TempDir& dir, const Config& cfg) {
  expect_close_runs(run_on_gpus(dir, cfg, "nccl", 2), run_on_gpus(dir, cfg, "gloo", 2));
}

TEST(Nccl, OuroborosTrainsAsOverGloo) {
  SKIP_WITHOUT_TWO_GPUS();
  TempDir dir;
  Config cfg = tiny_config(dir.write("corpus.txt", corpus()), 3, "adam");
  cfg.model.dropout = 0.1;
  expect_trains_as_over_gloo(dir, cfg);
}

TEST(Nccl, DataParallelAllReduceTrainsAsOverGloo) {
  SKIP_WITHOUT_TWO_GPUS();
  TempDir dir;
  Config cfg = tiny_config(dir.write("corpus.txt", corpus()), 1, "adam");
  cfg.dist.replicas = 2;
  expect_trains_as_over_gloo(dir, cfg);
}

TEST(Nccl, KilledRankIsNamedWithinTheTimeout) {
  SKIP_WITHOUT_TWO_GPUS();
  TempDir dir;
  Config cfg = endless_config(dir.write("corpus.txt", corpus()), dir.path() / "out", 3, 10);
  cfg.train.device = "cuda";
  cfg.dist.backend = Backend::kNccl;
  const fs::path file = write_config(dir, "cfg.json", cfg);
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    pids.push_back(spawn({"train", "--config", file.string()}, rank_env(r, 2, port),
                         dir.path() / ("k" + std::to_string(r) + ".log")));
  }
  ASSERT_TRUE(wait_for_file(dir.path() / "out" / "ckpt" / "manifest.pt", 120))
      << read_bytes(dir.path() / "k0.log");
  kill(pids[1], SIGKILL);
  waitpid(pids[1], nullptr, 0);
  const auto start = Clock::now();
  EXPECT_EQ(wait_exit(pids[0], cfg.dist.timeout + 40), 1) << read_bytes(dir.path() / "k0.log");
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), cfg.dist.timeout + 10);
  const std::string text = read_bytes(dir.path() / "k0.log");
  EXPECT_NE(text.find("lost rank 1"), std::string::npos) << text;
}

}  // namespace
