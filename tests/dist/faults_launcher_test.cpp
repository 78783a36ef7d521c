// label: distributed serial
// Processes that fail: lost and silent peers end every rank within the timeout naming the lost
// rank; the launcher runs a group and stops it; rank discovery and the config fingerprint.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "dist_util.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/dist/c10d_transport.h"
#include "ouroboros/dist/env.h"
#include "ouroboros/engine/ouroboros_simulator.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/checkpoint.h"
#include "test_util.h"

using namespace ouroboros;
using namespace ouroboros_test;

namespace {

struct LossCase {
  int signal;         // SIGKILL: the peer dies; SIGSTOP: it stops answering
  double timeout;     // dist.timeout
  int lost = 1;       // the rank that is lost (0 hosts the store)
  double slack = 15;  // seconds past the timeout by which every other rank has exited
};

class LostPeer : public ::testing::TestWithParam<LossCase> {};

// K = 4 on 3 processes: one rank dies (or freezes) mid-run. The others exit within the timeout
// (plus slack) with one line naming it, and the last checkpoint loads. A frozen rank 0 (the
// store's host, which then accepts requests and never answers) must not hang anyone.
TEST_P(LostPeer, OthersExitNamingTheLostRankAndTheCheckpointLoads) {
  const LossCase c = GetParam();
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  const Config cfg = endless_config(data, dir.path() / "out", 4, c.timeout);
  const fs::path file = write_config(dir, "cfg.json", cfg);
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 3; ++r) {
    pids.push_back(spawn({"train", "--config", file.string()}, rank_env(r, 3, port),
                         dir.path() / ("k" + std::to_string(r) + ".log")));
  }
  const fs::path ckpt = dir.path() / "out" / "ckpt";
  ASSERT_TRUE(wait_for_file(ckpt / "manifest.pt", 60)) << read_bytes(dir.path() / "k0.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(pids[c.lost], c.signal);
  const auto start = Clock::now();
  for (int r = 0; r < 3; ++r) {
    if (r == c.lost) continue;
    const std::string log = "k" + std::to_string(r) + ".log";
    EXPECT_EQ(wait_exit(pids[r], c.timeout + 20), 1) << read_bytes(dir.path() / log);
    const double took = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_LT(took, c.timeout + c.slack) << "rank " << r;
    const std::string text = read_bytes(dir.path() / log);
    EXPECT_NE(text.find("lost rank " + std::to_string(c.lost)), std::string::npos) << text;
  }
  kill(pids[c.lost], SIGKILL);
  waitpid(pids[c.lost], nullptr, 0);
  Checkpoint ck = load_checkpoint(ckpt.string());
  EXPECT_EQ(ck.step % 5, 0);
  EXPECT_GT(ck.step, 0);
}

INSTANTIATE_TEST_SUITE_P(Distributed, LostPeer,
                         ::testing::Values(LossCase{SIGKILL, 30}, LossCase{SIGSTOP, 6, 1, 3},
                                           LossCase{SIGSTOP, 6, 0, 3}),
                         [](const auto& info) {
                           return std::string(info.param.signal == SIGKILL ? "Killed" : "Frozen") +
                                  (info.param.lost == 0 ? "Lead" : "");
                         });

struct FaultCase {
  const char* phase;  // where the rank stops itself (fault_point in the library)
  int rank;           // which rank freezes
};

class FrozenAtPhase : public ::testing::TestWithParam<FaultCase> {};

// K = 3 on 2 processes, one of them frozen (SIGSTOP, as a hung machine) at a phase of the run:
// the other exits within the timeout plus slack with one line, naming the frozen rank once the
// run has started.
TEST_P(FrozenAtPhase, TheOtherRankExitsWithinTheTimeout) {
  const FaultCase c = GetParam();
  TempDir dir;
  Config cfg = tiny_config(dir.write("corpus.txt", corpus()), 3, "adam");
  cfg.train.steps = 12;
  cfg.train.eval_interval = 4;
  cfg.train.checkpoint_interval = 8;
  cfg.dist.timeout = 5;
  cfg.train.out_dir = (dir.path() / "out").string();
  const fs::path file = write_config(dir, "cfg.json", cfg);
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    auto env = rank_env(r, 2, port);
    env["OUROBOROS_FAULT"] = std::string("stop:") + c.phase + ":" + std::to_string(c.rank);
    pids.push_back(spawn({"train", "--config", file.string()}, env,
                         dir.path() / ("r" + std::to_string(r) + ".log")));
  }
  const int other = 1 - c.rank;
  const auto start = Clock::now();
  const int code = wait_exit(pids[other], 40);
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  kill(pids[c.rank], SIGKILL);
  waitpid(pids[c.rank], nullptr, 0);
  const std::string text = read_bytes(dir.path() / ("r" + std::to_string(other) + ".log"));
  EXPECT_EQ(code, 1) << text;
  EXPECT_LT(took, cfg.dist.timeout + 8) << text;  // start-up, the wait, the report
  const std::string last = text.substr(text.rfind("error: "));
  EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << text;
  if (std::string(c.phase) != "rendezvous" && std::string(c.phase) != "fingerprint") {
    EXPECT_NE(last.find("lost rank " + std::to_string(c.rank)), std::string::npos) << text;
  }
}

INSTANTIATE_TEST_SUITE_P(Distributed, FrozenAtPhase,
                         ::testing::Values(FaultCase{"rendezvous", 1}, FaultCase{"fingerprint", 1},
                                           FaultCase{"first-tick", 1}, FaultCase{"evaluation", 0},
                                           FaultCase{"evaluation", 1}, FaultCase{"checkpoint", 1},
                                           FaultCase{"drain", 0}),
                         [](const auto& info) {
                           std::string name = std::string(info.param.phase) + "_rank" +
                                              std::to_string(info.param.rank);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// `ouroboros launch` sets the variables itself: the run equals the threaded one bit for bit.
TEST(Launcher, RunsTheGroupToCompletion) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = tiny_config(data, 3, "adam");
  cfg.train.steps = 12;
  Config threads = cfg;
  threads.train.out_dir = (dir.path() / "threads").string();
  TrainOptions quiet;
  quiet.quiet = true;
  train(threads, quiet);
  cfg.train.out_dir = (dir.path() / "launched").string();
  const fs::path file = write_config(dir, "cfg.json", cfg);
  pid_t p = spawn({"launch", "--nproc", "2", "--master-port", std::to_string(free_port()), "--",
                   "train", "--config", file.string()},
                  {}, dir.path() / "launch.log");
  ASSERT_EQ(wait_exit(p, 60), 0) << read_bytes(dir.path() / "launch.log");
  expect_same_checkpoint(load_checkpoint((dir.path() / "launched" / "ckpt").string()),
                         load_checkpoint((dir.path() / "threads" / "ckpt.pt").string()));
}

// `launch --nproc 2` of a K = 3 run far too long to finish, into dir/out; returns the launcher
// once the run is training (its metrics exist).
pid_t launch_endless_run(const TempDir& dir) {
  Config cfg = tiny_config(dir.path() / "corpus.txt", 3, "adam");
  cfg.train.steps = 100000;
  cfg.train.eval_interval = 0;
  cfg.train.out_dir = (dir.path() / "out").string();
  const fs::path file = write_config(dir, "cfg.json", cfg);
  const pid_t p = spawn({"launch", "--nproc", "2", "--master-port", std::to_string(free_port()),
                         "--", "train", "--config", file.string()},
                        {}, dir.path() / "launch.log");
  EXPECT_TRUE(wait_for_file(dir.path() / "out" / "metrics.jsonl", 60));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  return p;
}

// A child that dies makes the launcher stop the other and exit non-zero naming the rank; Ctrl-C
// (SIGINT) on the launcher stops every child.
TEST(Launcher, StopsAllChildren) {
  TempDir dir;
  dir.write("corpus.txt", corpus());
  for (int sig : {0, SIGINT}) {
    const pid_t p = launch_endless_run(dir);
    std::vector<pid_t> kids = children_of(p);
    ASSERT_EQ(kids.size(), 2u);
    if (sig == 0) {
      kill(kids[1], SIGKILL);  // rank 1 dies
    } else {
      kill(p, sig);
    }
    const int code = wait_exit(p, 30);
    const std::string log = read_bytes(dir.path() / "launch.log");
    if (sig == 0) {
      EXPECT_EQ(code, 1) << log;
      EXPECT_NE(log.find("rank 1 failed"), std::string::npos) << log;
    } else {
      EXPECT_EQ(code, 128 + SIGINT) << log;
      EXPECT_NE(log.find("stopped 2 processes"), std::string::npos) << log;
    }
    // The launcher reaped its children before exiting: none is left.
    for (pid_t k : kids) EXPECT_NE(kill(k, 0), 0) << "child " << k << " still running";
    fs::remove_all(dir.path() / "out");
  }
}

// Whether a process has exited (gone, or a zombie whose parent is gone).
bool exited(pid_t pid) {
  if (kill(pid, 0) != 0) return true;
  const std::string stat = read_bytes("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return close == std::string::npos || (close + 2 < stat.size() && stat[close + 2] == 'Z');
}

// A launcher killed outright (no chance to forward a signal) takes its ranks with it: they stop
// together with a checkpoint instead of training on, holding the port and the out-dir.
TEST(Launcher, RanksDieWithAKilledLauncher) {
  TempDir dir;
  dir.write("corpus.txt", corpus());
  const pid_t p = launch_endless_run(dir);
  const std::vector<pid_t> kids = children_of(p);
  ASSERT_EQ(kids.size(), 2u);
  kill(p, SIGKILL);
  waitpid(p, nullptr, 0);
  const auto start = std::chrono::steady_clock::now();
  for (pid_t k : kids) {
    while (!exited(k) && std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(exited(k)) << "rank process " << k << " outlived its launcher by 30 s";
  }
  // They stopped as on Ctrl-C: with a checkpoint that resumes.
  const Checkpoint ck = load_checkpoint((dir.path() / "out" / "ckpt").string());
  EXPECT_GT(ck.step, 0);
}

TEST(RankDiscovery, TorchrunAndMpirunVariablesAndOverrides) {
  auto clear = [] {
    for (const char* v :
         {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_RANK",
          "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"}) {
      unsetenv(v);
    }
  };
  clear();
  EXPECT_FALSE(discover_env(no_env_overrides()).active());
  setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  DistEnv e = discover_env(no_env_overrides());
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "127.0.0.1");
  EXPECT_EQ(e.master_port, 29500);
  setenv("RANK", "2", 1);  // torchrun's variables win over mpirun's
  setenv("MASTER_ADDR", "10.0.0.5", 1);
  setenv("MASTER_PORT", "1234", 1);
  e = discover_env(no_env_overrides());
  EXPECT_EQ(e.rank, 2);
  EXPECT_EQ(e.master_addr, "10.0.0.5");
  EXPECT_EQ(e.master_port, 1234);
  DistEnv flags = no_env_overrides();
  flags.rank = 0;
  flags.master_port = 4321;
  e = discover_env(flags);
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.master_port, 4321);
  setenv("RANK", "9", 1);
  EXPECT_THROW(discover_env(no_env_overrides()), ConfigError);
  setenv("RANK", "x", 1);
  EXPECT_THROW(discover_env(no_env_overrides()), ConfigError);
  clear();
}

TEST(Fingerprint, NamesTheDifferingFieldAndIgnoresLocalOnes) {
  Config a;
  Config b = a;
  b.train.out_dir = "elsewhere";
  b.train.threads = 4;
  b.data.data = "/other/path";
  EXPECT_EQ(fingerprint_difference(config_fingerprint(a), config_fingerprint(b), 0, 1), "");
  b.engine.modules = 5;
  EXPECT_EQ(fingerprint_difference(config_fingerprint(a), config_fingerprint(b), 0, 1),
            "rank 1 runs with engine.modules = 5 but rank 0 with 1");
  Config c = a;
  c.dist.replicas = 2;
  EXPECT_NE(fingerprint_difference(config_fingerprint(a), config_fingerprint(c), 0, 2)
                .find("dist.replicas"),
            std::string::npos);
}

}  // namespace
