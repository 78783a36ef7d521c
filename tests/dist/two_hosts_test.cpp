// label: distributed
// Two machines for real: two network namespaces with their own addresses joined by a veth pair
// (scripts/two-hosts.sh), each running `ouroboros launch --nnodes 2` for its half of the ranks.
// The run equals the one-host run bit for bit; cutting the link or killing one host's processes
// ends every process within the timeout with one line naming the lost rank, and the last
// checkpoint loads. Skipped, with the reason, where namespaces cannot be made (not root, no
// iproute2, a sandbox without CAP_SYS_ADMIN).
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "dist_util.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/checkpoint.h"
#include "test_util.h"

using namespace ouroboros;
using namespace ouroboros_test;

namespace {

const std::string kScript = std::string(OUROBOROS_SOURCE_DIR) + "/scripts/two-hosts.sh";
const std::string kMaster = "10.231.0.1";  // host a; host b is 10.231.0.2

class TwoHosts : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root (CI runs as root)";
    name_ = "oub" + std::to_string(getpid());
    const std::string out = (dir_.path() / "two-hosts.log").string();
    if (std::system((kScript + " up " + name_ + " >" + out + " 2>&1").c_str()) != 0) {
      GTEST_SKIP() << "cannot make two network namespaces here: " << read_bytes(out);
    }
    made_ = true;
  }
  void TearDown() override {
    if (made_) std::system((kScript + " down " + name_ + " >/dev/null 2>&1").c_str());
  }

  std::string host(int node) const { return name_ + (node == 0 ? "-a" : "-b"); }

  // `ouroboros launch` on host `node` of two, nproc ranks there, running `train --config`.
  pid_t launch(int node, int nproc, const fs::path& config, const std::string& log) {
    return spawn({"launch", "--nnodes", "2", "--node-rank", std::to_string(node), "--nproc",
                  std::to_string(nproc), "--master-addr", kMaster, "--master-port", "29500", "--",
                  "train", "--config", config.string()},
                 {}, dir_.path() / log, {"ip", "netns", "exec", host(node)});
  }

  TempDir dir_;
  std::string name_;
  bool made_ = false;
};

// K = 3 (one rank on each host) and K = 5 (two on each): the checkpoint, the losses and the
// evaluations equal those of the threaded run on one host.
TEST_F(TwoHosts, RunEqualsTheOneHostRunBitForBit) {
  const fs::path data = dir_.write("corpus.txt", corpus());
  for (const int64_t K : {3, 5}) {
    Config cfg = tiny_config(data, K, "adam");
    cfg.train.steps = 12;
    cfg.train.eval_interval = 6;
    Config threads = cfg;
    threads.train.out_dir = (dir_.path() / ("threads" + std::to_string(K))).string();
    TrainOptions quiet;
    quiet.quiet = true;
    const TrainResult t = train(threads, quiet);
    cfg.train.out_dir = (dir_.path() / ("hosts" + std::to_string(K))).string();
    const fs::path file = write_config(dir_, "k" + std::to_string(K) + ".json", cfg);
    const int nproc = static_cast<int>((K - 1) / 2);
    const std::string tag = "k" + std::to_string(K);
    const pid_t a = launch(0, nproc, file, tag + "_a.log");
    const pid_t b = launch(1, nproc, file, tag + "_b.log");
    EXPECT_EQ(wait_exit(b, 90), 0) << read_bytes(dir_.path() / (tag + "_b.log"));
    ASSERT_EQ(wait_exit(a, 90), 0) << read_bytes(dir_.path() / (tag + "_a.log"));
    const fs::path out(cfg.train.out_dir);
    expect_same_checkpoint(load_checkpoint((out / "ckpt").string()),
                           load_checkpoint((fs::path(threads.train.out_dir) / "ckpt.pt").string()));
    EXPECT_EQ(metric_losses(out / "metrics.jsonl"), t.losses) << "K = " << K;
    EXPECT_EQ(metric_evals(out / "metrics.jsonl"),
              metric_evals(fs::path(threads.train.out_dir) / "metrics.jsonl"));
  }
}

struct HostLoss {
  const char* how;  // "cut": the link goes down; "kill": every process of host b is killed
};

class HostLost : public TwoHosts, public ::testing::WithParamInterface<HostLoss> {};

// K = 3, rank 0 on host a and rank 1 on host b, checkpoints every 5 steps. After the first, the
// link is cut (both hosts keep running, each alone) or host b's processes are killed. Every
// launcher still running exits non-zero within the timeout plus slack; each rank's last line names
// the other as lost; the last checkpoint loads.
TEST_P(HostLost, EveryProcessEndsNamingTheLostRankAndTheCheckpointLoads) {
  const std::string how = GetParam().how;
  const Config cfg = endless_config(dir_.write("corpus.txt", corpus()), dir_.path() / "out", 3, 6);
  const fs::path file = write_config(dir_, "cfg.json", cfg);
  const pid_t a = launch(0, 1, file, "a.log");
  const pid_t b = launch(1, 1, file, "b.log");
  const fs::path ckpt = dir_.path() / "out" / "ckpt";
  ASSERT_TRUE(wait_for_file(ckpt / "manifest.pt", 90)) << read_bytes(dir_.path() / "a.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::string fault = how == "cut" ? " cut " + name_ : " kill " + name_ + " b";
  ASSERT_EQ(std::system((kScript + fault).c_str()), 0);
  const auto start = Clock::now();
  std::vector<std::pair<pid_t, std::string>> survivors{{a, "a.log"}};
  if (how == "cut") survivors.push_back({b, "b.log"});
  for (size_t i = 0; i < survivors.size(); ++i) {
    const auto& [pid, log] = survivors[i];
    EXPECT_EQ(wait_exit(pid, cfg.dist.timeout + 30), 1) << read_bytes(dir_.path() / log);
    const double took = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_LT(took, cfg.dist.timeout + 15) << log;
    const std::string text = read_bytes(dir_.path() / log);
    const size_t line =
        text.find("error: rank " + std::to_string(i) + ": lost rank " + std::to_string(1 - i));
    EXPECT_NE(line, std::string::npos) << text;
    EXPECT_NE(text.find("launch: rank " + std::to_string(i) + " failed"), std::string::npos)
        << text;
  }
  if (how == "kill") {
    kill(b, SIGKILL);
    waitpid(b, nullptr, 0);
  }
  const Checkpoint ck = load_checkpoint(ckpt.string());
  EXPECT_EQ(ck.step % 5, 0);
  EXPECT_GT(ck.step, 0);
}

INSTANTIATE_TEST_SUITE_P(Distributed, HostLost,
                         ::testing::Values(HostLoss{"cut"}, HostLoss{"kill"}),
                         [](const auto& info) {
                           return std::string(info.param.how) == "cut" ? "LinkCut" : "HostKilled";
                         });

}  // namespace
