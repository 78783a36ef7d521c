// label: distributed
// Ouroboros across processes on loopback: processes == threads == serial simulator bit for bit,
// R rings == one ring with R times the batch, lost and silent peers, mismatched configurations,
// environment-only start, and the launcher.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>

#include "ouroboros/checkpoint.h"
#include "ouroboros/distributed.h"
#include "ouroboros/errors.h"
#include "ouroboros/simulator.h"
#include "ouroboros/trainer.h"
#include "test_util.h"

using namespace ouroboros;
using ouroboros_test::read_bytes;
using ouroboros_test::TempDir;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// A port nobody listens on now (the kernel's pick), so parallel test runs do not collide.
int free_port() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

// Starts the ouroboros binary with extra environment variables; output goes to log.
pid_t spawn(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
            const fs::path& log) {
  pid_t pid = fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    FILE* f = fopen(log.c_str(), "w");
    dup2(fileno(f), 1);
    dup2(fileno(f), 2);
    std::vector<char*> argv{const_cast<char*>(OUROBOROS_BINARY)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(OUROBOROS_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}

// Waits up to `seconds`; returns the exit code (128 + signal if killed), or -1 on timeout (the
// process is then killed).
int wait_exit(pid_t pid, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

std::map<std::string, std::string> rank_env(int rank, int world, int port) {
  return {{"RANK", std::to_string(rank)},
          {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(rank)},
          {"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", std::to_string(port)}};
}

// A small deterministic byte-level corpus.
std::string corpus() {
  std::string text;
  uint64_t x = 12345;
  const char* words[] = {"the ", "ring ", "of ", "modules ", "learns ", "slowly ", "and ",
                         "surely ", "delayed ", "gradients ", "\n"};
  while (text.size() < 30000) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    text += words[(x >> 33) % 11];
  }
  return text;
}

Config tiny_config(const fs::path& data, int64_t K, const std::string& optimizer) {
  Config c;
  c.model.n_layer = 4;
  c.model.n_head = 2;
  c.model.n_embd = 16;
  c.model.block_size = 16;
  c.data.data = data.string();
  c.data.format = "text";
  c.data.tokenizer = "byte";
  c.train.steps = 24;
  c.train.batch_size = 2;
  c.train.optimizer = optimizer;
  c.train.lr = 1e-2;
  c.train.min_lr = 1e-3;
  c.train.warmup_steps = 3;
  c.train.grad_clip = 0.5;
  c.train.eval_interval = 10;   // rank 0 gathers the weights mid-run
  c.train.checkpoint_interval = 12;  // and drains
  c.train.eval_batches = 2;
  c.train.log_interval = 1;
  c.engine.modules = K;
  c.engine.partition = "even";
  c.dist.timeout = 30;
  return c;
}

fs::path write_config(const TempDir& dir, const std::string& name, const Config& c) {
  return dir.write(name, c.to_json().dump());
}

std::vector<double> metric_losses(const fs::path& metrics) {
  std::vector<double> out;
  std::istringstream in(read_bytes(metrics));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("split")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

void expect_same_ivalue(const c10::IValue& a, const c10::IValue& b, const std::string& where) {
  if (a.isTensor()) {
    ASSERT_TRUE(b.isTensor()) << where;
    EXPECT_TRUE(torch::equal(a.toTensor(), b.toTensor())) << where;
  } else if (a.isGenericDict()) {
    ASSERT_TRUE(b.isGenericDict()) << where;
    auto da = a.toGenericDict(), db = b.toGenericDict();
    ASSERT_EQ(da.size(), db.size()) << where;
    for (const auto& item : da) {
      ASSERT_TRUE(db.contains(item.key())) << where << "/" << item.key().toStringRef();
      expect_same_ivalue(item.value(), db.at(item.key()), where + "/" + item.key().toStringRef());
    }
  } else {
    EXPECT_EQ(a, b) << where;
  }
}

void expect_same_checkpoint(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.model.names(), b.model.names());
  for (size_t i = 0; i < a.model.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.model.tensors()[i], b.model.tensors()[i])) << a.model.names()[i];
  }
  expect_same_ivalue(c10::IValue(a.optimizer), c10::IValue(b.optimizer), "optimizer");
  ASSERT_EQ(a.generator_states.size(), b.generator_states.size());
  for (size_t k = 0; k < a.generator_states.size(); ++k) {
    EXPECT_TRUE(torch::equal(a.generator_states[k], b.generator_states[k])) << "generator " << k;
  }
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.sampler_state, b.sampler_state);
}

// Runs world_size processes of `train --config cfg` through the environment variables alone.
std::vector<int> run_processes(const TempDir& dir, const fs::path& cfg, int world,
                               const std::string& tag, std::vector<std::string> extra = {},
                               double seconds = 60) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> args{"train", "--config", cfg.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    pids.push_back(spawn(args, rank_env(r, world, port),
                         dir.path() / (tag + "_rank" + std::to_string(r) + ".log")));
  }
  std::vector<int> codes;
  for (pid_t p : pids) codes.push_back(wait_exit(p, seconds));
  return codes;
}

std::string logs(const TempDir& dir, const std::string& tag, int world) {
  std::string s;
  for (int r = 0; r < world; ++r) {
    s += "--- rank " + std::to_string(r) + ":\n" +
         read_bytes(dir.path() / (tag + "_rank" + std::to_string(r) + ".log"));
  }
  return s;
}

class ProcessesThreadsSimulator : public ::testing::TestWithParam<int64_t> {};

// The same run three ways: K-1 processes over Gloo, K-1 threads, and the serial simulator. The
// checkpoints (weights, Adam moments and steps, dropout generators, sampler) and every tick's
// loss are identical.
TEST_P(ProcessesThreadsSimulator, BitForBit) {
  const int64_t K = GetParam();
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = tiny_config(data, K, "adam");
  cfg.model.dropout = 0.1;  // the dropout generators must line up too

  Config threads = cfg;
  threads.train.out_dir = (dir.path() / "threads").string();
  TrainOptions quiet;
  quiet.quiet = true;
  TrainResult t = train(threads, quiet);

  Config simulated = cfg;
  simulated.train.out_dir = (dir.path() / "simulator").string();
  TrainOptions sim = quiet;
  sim.method_factory = [](const Config& c, const LanguageModel& model, ParamSet params) {
    return std::make_unique<SerialSimulator>(model, std::move(params), c);
  };
  train(simulated, sim);

  Config procs = cfg;
  procs.train.out_dir = (dir.path() / "processes").string();
  const int world = static_cast<int>(K - 1);
  auto codes = run_processes(dir, write_config(dir, "procs.json", procs), world, "p");
  for (int r = 0; r < world; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "p", world);

  Checkpoint a = load_checkpoint((dir.path() / "processes" / "ckpt.pt").string());
  Checkpoint b = load_checkpoint((dir.path() / "threads" / "ckpt.pt").string());
  Checkpoint c = load_checkpoint((dir.path() / "simulator" / "ckpt.pt").string());
  EXPECT_EQ(a.step, 24);
  expect_same_checkpoint(a, b);
  expect_same_checkpoint(b, c);
  std::vector<double> losses = metric_losses(dir.path() / "processes" / "metrics.jsonl");
  ASSERT_EQ(losses.size(), t.losses.size());
  for (size_t i = 0; i < losses.size(); ++i) EXPECT_EQ(losses[i], t.losses[i]) << "tick " << i;
  // The weights moved.
  GPT model(b.config.model);
  ParamSet init = model.init_params(cfg.train.seed);
  EXPECT_FALSE(torch::equal(init.tensors().back(), a.model.tensors().back()));
}

INSTANTIATE_TEST_SUITE_P(Distributed, ProcessesThreadsSimulator, ::testing::Values(3, 4),
                         [](const auto& info) { return "K" + std::to_string(info.param); });

// A process run resumed from its checkpoint continues exactly as the uninterrupted run (rank 0
// gathers every worker's weights, Adam state and dropout generator; every rank restores them).
TEST(Distributed, ResumeIsExact) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = tiny_config(data, 3, "adam");
  cfg.model.dropout = 0.1;
  cfg.train.schedule = "constant";  // the learning rate does not depend on train.steps
  cfg.train.eval_interval = 0;
  cfg.train.checkpoint_interval = 12;

  Config whole = cfg;
  whole.train.out_dir = (dir.path() / "whole").string();
  auto codes = run_processes(dir, write_config(dir, "whole.json", whole), 2, "w");
  for (int r = 0; r < 2; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "w", 2);

  Config half = cfg;
  half.train.steps = 12;
  half.train.out_dir = (dir.path() / "half").string();
  codes = run_processes(dir, write_config(dir, "half.json", half), 2, "h");
  for (int r = 0; r < 2; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "h", 2);
  const fs::path ckpt = dir.path() / "half" / "ckpt.pt";
  EXPECT_EQ(load_checkpoint(ckpt.string()).step, 12);
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    pids.push_back(spawn({"train", "--resume", ckpt.string(), "--steps", "24"},
                         rank_env(r, 2, port),
                         dir.path() / ("c_rank" + std::to_string(r) + ".log")));
  }
  for (int r = 0; r < 2; ++r) ASSERT_EQ(wait_exit(pids[r], 60), 0) << logs(dir, "c", 2);
  Checkpoint a = load_checkpoint((dir.path() / "whole" / "ckpt.pt").string());
  Checkpoint b = load_checkpoint(ckpt.string());
  EXPECT_EQ(b.step, 24);
  expect_same_checkpoint(a, b);
}

// R = 2 rings of batch B equal one ring of batch 2B: ring r trains on rows [rB, (r+1)B) of the
// same 2B-row draw, and the averaged gradient equals the 2B-batch gradient up to float rounding
// (summation order). With SGD the weights agree to 1e-5 after 16 ticks.
TEST(Distributed, TwoRingsEqualOneRingWithTwiceTheBatch) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = tiny_config(data, 3, "sgd");
  cfg.train.steps = 16;
  cfg.train.lr = 0.05;
  cfg.train.min_lr = 0.01;

  Config one = cfg;
  one.train.batch_size = 4;
  one.train.out_dir = (dir.path() / "one").string();
  TrainOptions quiet;
  quiet.quiet = true;
  TrainResult single = train(one, quiet);

  Config two = cfg;
  two.train.batch_size = 2;
  two.dist.replicas = 2;
  two.train.out_dir = (dir.path() / "two").string();
  auto codes = run_processes(dir, write_config(dir, "two.json", two), 4, "r");
  for (int r = 0; r < 4; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "r", 4);

  Checkpoint a = load_checkpoint((dir.path() / "two" / "ckpt.pt").string());
  ASSERT_EQ(a.model.names(), single.params.names());
  double worst = 0.0;
  for (size_t i = 0; i < a.model.size(); ++i) {
    const Tensor diff = a.model.tensors()[i] - single.params.tensors()[i];
    worst = std::max(worst, diff.abs().max().item<double>());
  }
  EXPECT_LT(worst, 1e-5);
  // Not trivially equal: the run moved the weights much further than the tolerance.
  GPT model(a.config.model);
  ParamSet init = model.init_params(cfg.train.seed);
  EXPECT_GT((a.model.at("wte.weight") - init.at("wte.weight")).abs().max().item<double>(), 1e-3);
  std::vector<double> losses = metric_losses(dir.path() / "two" / "metrics.jsonl");
  ASSERT_EQ(losses.size(), single.losses.size());
  for (size_t i = 0; i < losses.size(); ++i) EXPECT_NEAR(losses[i], single.losses[i], 1e-5);
}

// Every rank refuses a configuration that differs from the others', naming the field.
TEST(Distributed, MismatchedConfigurationIsRefused) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = tiny_config(data, 3, "adam");
  cfg.train.out_dir = (dir.path() / "out").string();
  const fs::path file = write_config(dir, "cfg.json", cfg);
  const int port = free_port();
  pid_t p0 = spawn({"train", "--config", file.string()}, rank_env(0, 2, port),
                   dir.path() / "m0.log");
  pid_t p1 = spawn({"train", "--config", file.string(), "--seed", "7"}, rank_env(1, 2, port),
                   dir.path() / "m1.log");
  EXPECT_EQ(wait_exit(p0, 60), 1);
  EXPECT_EQ(wait_exit(p1, 60), 1);
  for (const char* log : {"m0.log", "m1.log"}) {
    const std::string text = read_bytes(dir.path() / log);
    EXPECT_NE(text.find("configuration mismatch"), std::string::npos) << text;
    EXPECT_NE(text.find("train.seed"), std::string::npos) << text;
  }
  EXPECT_FALSE(fs::exists(dir.path() / "out" / "ckpt.pt"));
}

// Waits until the file exists (a checkpoint written mid-run).
bool wait_for_file(const fs::path& f, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    if (fs::exists(f)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

struct LossCase {
  int signal;      // SIGKILL: the peer dies; SIGSTOP: it stops answering
  double timeout;  // dist.timeout
};

class LostPeer : public ::testing::TestWithParam<LossCase> {};

// K = 4 on 3 processes: rank 1 dies (or freezes) mid-run. Ranks 0 and 2 exit within the timeout
// (plus start-up slack) with one line naming rank 1, and the last checkpoint loads.
TEST_P(LostPeer, OthersExitNamingTheLostRankAndTheCheckpointLoads) {
  const LossCase c = GetParam();
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = tiny_config(data, 4, "adam");
  cfg.train.steps = 100000;
  cfg.train.eval_interval = 0;
  cfg.train.checkpoint_interval = 5;
  cfg.dist.timeout = c.timeout;
  cfg.train.out_dir = (dir.path() / "out").string();
  const fs::path file = write_config(dir, "cfg.json", cfg);
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 3; ++r) {
    pids.push_back(spawn({"train", "--config", file.string()}, rank_env(r, 3, port),
                         dir.path() / ("k" + std::to_string(r) + ".log")));
  }
  const fs::path ckpt = dir.path() / "out" / "ckpt.pt";
  ASSERT_TRUE(wait_for_file(ckpt, 60)) << read_bytes(dir.path() / "k0.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(pids[1], c.signal);
  const auto start = Clock::now();
  const int code0 = wait_exit(pids[0], c.timeout + 20);
  const int code2 = wait_exit(pids[2], c.timeout + 20);
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  kill(pids[1], SIGKILL);
  waitpid(pids[1], nullptr, 0);
  EXPECT_EQ(code0, 1) << read_bytes(dir.path() / "k0.log");
  EXPECT_EQ(code2, 1) << read_bytes(dir.path() / "k2.log");
  EXPECT_LT(took, c.timeout + 15);  // detection, naming the silent rank, store shutdown, load
  for (const char* log : {"k0.log", "k2.log"}) {
    const std::string text = read_bytes(dir.path() / log);
    EXPECT_NE(text.find("lost rank 1"), std::string::npos) << text;
  }
  Checkpoint ck = load_checkpoint(ckpt.string());
  EXPECT_EQ(ck.step % 5, 0);
  EXPECT_GT(ck.step, 0);
}

INSTANTIATE_TEST_SUITE_P(Distributed, LostPeer,
                         ::testing::Values(LossCase{SIGKILL, 30}, LossCase{SIGSTOP, 6}),
                         [](const auto& info) {
                           return info.param.signal == SIGKILL ? std::string("Killed")
                                                               : std::string("Frozen");
                         });

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  std::istringstream in(read_bytes("/proc/" + std::to_string(pid) + "/task/" +
                                   std::to_string(pid) + "/children"));
  pid_t c;
  while (in >> c) out.push_back(c);
  return out;
}

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
  expect_same_checkpoint(load_checkpoint((dir.path() / "launched" / "ckpt.pt").string()),
                         load_checkpoint((dir.path() / "threads" / "ckpt.pt").string()));
}

// A child that dies makes the launcher stop the other and exit non-zero naming the rank; Ctrl-C
// (SIGINT) on the launcher stops every child.
TEST(Launcher, StopsAllChildren) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = tiny_config(data, 3, "adam");
  cfg.train.steps = 100000;
  cfg.train.eval_interval = 0;
  cfg.train.out_dir = (dir.path() / "out").string();
  const fs::path file = write_config(dir, "cfg.json", cfg);
  for (int sig : {0, SIGINT}) {
    pid_t p = spawn({"launch", "--nproc", "2", "--master-port", std::to_string(free_port()),
                     "--", "train", "--config", file.string()},
                    {}, dir.path() / "launch.log");
    ASSERT_TRUE(wait_for_file(dir.path() / "out" / "metrics.jsonl", 60));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
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

TEST(RankDiscovery, TorchrunAndMpirunVariablesAndOverrides) {
  auto clear = [] {
    for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                          "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                          "OMPI_COMM_WORLD_LOCAL_RANK"}) {
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

// Replicas need processes: a single process refuses rather than silently training on R*B rows.
TEST(Distributed, ReplicasWithoutProcessesAreRefused) {
  TempDir dir;
  Config cfg = tiny_config(dir.write("corpus.txt", corpus()), 3, "adam");
  cfg.dist.replicas = 2;
  cfg.train.out_dir = (dir.path() / "out").string();
  TrainOptions quiet;
  quiet.quiet = true;
  EXPECT_THROW(train(cfg, quiet), ConfigError);
  EXPECT_FALSE(fs::exists(dir.path() / "out"));
}

TEST(C10dTransport, TagsStayWithinGlooRange) {
  MessageKey k{true, 3, (int64_t{1} << 40) + 5};
  EXPECT_GE(C10dTransport::gloo_tag(k), 0);
  EXPECT_EQ(C10dTransport::gloo_tag(k) & 0xff, (3 << 1) | 1);
  EXPECT_EQ(C10dTransport::gloo_tag(MessageKey{false, 2, 7}), (7 << 8) | (2 << 1));
}

}  // namespace
