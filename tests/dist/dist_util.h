// Helpers of the process tests: free ports, spawning the binary with rank variables, waiting
// with a deadline, the tiny byte-level run, and checkpoint comparison.
#pragma once

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"
#include "ouroboros/dist/c10d_transport.h"
#include "ouroboros/dist/env.h"
#include "ouroboros/engine/ouroboros_simulator.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/checkpoint.h"
#include "test_util.h"

namespace ouroboros_test {

using namespace ouroboros;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A port nobody listens on now (the kernel's pick), so parallel test runs do not collide.
inline int free_port() { return unused_tcp_port(); }

// Starts the ouroboros binary with extra environment variables; output goes to log. A prefix
// runs it through another program (e.g. `ip netns exec HOST`).
inline pid_t spawn(const std::vector<std::string>& args,
                   const std::map<std::string, std::string>& env, const fs::path& log,
                   const std::vector<std::string>& prefix = {}) {
  pid_t pid = fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    FILE* f = fopen(log.c_str(), "w");
    dup2(fileno(f), 1);
    dup2(fileno(f), 2);
    std::vector<char*> argv;
    for (const auto& p : prefix) argv.push_back(const_cast<char*>(p.c_str()));
    argv.push_back(const_cast<char*>(OUROBOROS_BINARY));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Waits up to `seconds`; returns the exit code (128 + signal if killed), or -1 on timeout (the
// process is then killed).
inline int wait_exit(pid_t pid, double seconds) {
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

inline std::map<std::string, std::string> rank_env(int rank, int world, int port) {
  return {{"RANK", std::to_string(rank)},
          {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(rank)},
          {"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", std::to_string(port)}};
}

// A small deterministic byte-level corpus.
inline std::string corpus() {
  std::string text;
  uint64_t x = 12345;
  const char* words[] = {"the ", "ring ",   "of ",      "modules ",   "learns ", "slowly ",
                         "and ", "surely ", "delayed ", "gradients ", "\n"};
  while (text.size() < 30000) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    text += words[(x >> 33) % 11];
  }
  return text;
}

inline Config tiny_config(const fs::path& data, int64_t K, const std::string& optimizer) {
  Config c = ouroboros_test::on_corpus(ouroboros_test::tiny_config(K, optimizer), data, "byte");
  c.model.block_size = 16;
  c.train.steps = 24;
  c.train.weight_decay = 0.0;
  c.train.eval_interval = 10;  // rank 0 gathers the weights mid-run
  // No checkpoint mid-run (shards_test covers those: processes and threads keep the pipeline
  // alike, so a mid-run checkpoint changes no result).
  c.train.checkpoint_interval = 0;
  c.train.eval_batches = 2;
  c.dist.timeout = 30;
  return c;
}

// A run that goes on until a fault ends it: a checkpoint every 5 steps, no evaluation.
inline Config endless_config(const fs::path& data, const fs::path& out, int64_t K, double timeout) {
  Config c = tiny_config(data, K, "adam");
  c.train.steps = 100000;
  c.train.eval_interval = 0;
  c.train.checkpoint_interval = 5;
  c.dist.timeout = timeout;
  c.train.out_dir = out.string();
  return c;
}

inline fs::path write_config(const TempDir& dir, const std::string& name, const Config& c) {
  return dir.write(name, c.to_json().dump());
}

// The losses of a run's metrics records: the training steps', or the evaluations' (split
// records), in order.
inline std::vector<double> metric_values(const fs::path& metrics, bool evaluations) {
  std::vector<double> out;
  std::istringstream in(read_bytes(metrics));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && j.contains("split") == evaluations) {
      out.push_back(j["loss"].get<double>());
    }
  }
  return out;
}
inline std::vector<double> metric_losses(const fs::path& m) { return metric_values(m, false); }
inline std::vector<double> metric_evals(const fs::path& m) { return metric_values(m, true); }

inline void expect_same_ivalue(const c10::IValue& a, const c10::IValue& b,
                               const std::string& where) {
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

inline void expect_same_checkpoint(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.model.names(), b.model.names());
  for (size_t i = 0; i < a.model.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.model.tensors()[i], b.model.tensors()[i])) << a.model.names()[i];
  }
  expect_same_ivalue(c10::IValue(a.optimizer), c10::IValue(b.optimizer), "optimizer");
  ASSERT_EQ(a.generator_states.size(), b.generator_states.size());
  for (size_t k = 0; k < a.generator_states.size(); ++k) {
    EXPECT_TRUE(torch::equal(a.generator_states[k], b.generator_states[k])) << "generator " << k;
  }
  ASSERT_EQ(a.memory.size(), b.memory.size());
  for (const auto& [layer, t] : a.memory) {
    ASSERT_TRUE(b.memory.count(layer)) << "memory of layer " << layer;
    EXPECT_TRUE(torch::equal(t, b.memory.at(layer))) << "memory of layer " << layer;
  }
  EXPECT_EQ(a.config.model.model, b.config.model.model);
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.sampler_state, b.sampler_state);
}

// Runs world_size processes of `train --config cfg` through the environment variables alone.
inline std::vector<int> run_processes(const TempDir& dir, const fs::path& cfg, int world,
                                      const std::string& tag, std::vector<std::string> extra = {},
                                      double seconds = 60,
                                      const std::map<std::string, std::string>& env_extra = {}) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> args{"train", "--config", cfg.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto env = rank_env(r, world, port);
    for (const auto& [k, v] : env_extra) env[k] = v;
    pids.push_back(spawn(args, env, dir.path() / (tag + "_rank" + std::to_string(r) + ".log")));
  }
  std::vector<int> codes;
  for (pid_t p : pids) codes.push_back(wait_exit(p, seconds));
  return codes;
}

inline std::string logs(const TempDir& dir, const std::string& tag, int world) {
  std::string s;
  for (int r = 0; r < world; ++r) {
    s += "--- rank " + std::to_string(r) + ":\n" +
         read_bytes(dir.path() / (tag + "_rank" + std::to_string(r) + ".log"));
  }
  return s;
}

// c with `replicas` rings of `batch` rows each, writing into out.
inline Config with_rings(Config c, int64_t batch, int64_t replicas, const fs::path& out) {
  c.train.batch_size = batch;
  c.dist.replicas = replicas;
  c.train.out_dir = out.string();
  return c;
}

// The same run twice: `one` on threads of this process (returned), and `rings` (its out_dir set)
// on `world` processes, which must all exit 0. For comparing R rings of batch B with one ring
// (or one data-parallel step) of batch R*B.
inline TrainResult run_threads_and_processes(const TempDir& dir, const Config& one,
                                             const Config& rings, int world,
                                             const std::string& tag) {
  TrainOptions quiet;
  quiet.quiet = true;
  TrainResult t = train(one, quiet);
  auto codes = run_processes(dir, write_config(dir, tag + ".json", rings), world, tag);
  for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << logs(dir, tag, world);
  return t;
}

// `procs` (a run on `world` processes) killed (SIGKILL) right after its checkpoint at step `at`
// and resumed from its shards equals the uninterrupted run: its checkpoint `whole` and every
// step's loss.
inline void expect_resume_after_kill(const TempDir& dir, Config procs, int world, int64_t at,
                                     const Checkpoint& whole, const std::vector<double>& losses) {
  procs.train.checkpoint_interval = at;
  procs.train.out_dir = (dir.path() / "killed").string();
  const fs::path file = write_config(dir, "killed.json", procs);
  auto codes = run_processes(dir, file, world, "k", {}, 60,
                             {{"OUROBOROS_FAULT", "kill:checkpoint-written:0"}});
  ASSERT_EQ(codes[0], 128 + SIGKILL) << logs(dir, "k", world);
  const fs::path ckpt = dir.path() / "killed" / "ckpt";
  EXPECT_EQ(load_checkpoint(ckpt.string()).step, at);
  codes = run_processes(dir, file, world, "kr", {"--resume", ckpt.string()});
  for (int r = 0; r < world; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "kr", world);
  expect_same_checkpoint(load_checkpoint(ckpt.string()), whole);
  EXPECT_EQ(metric_losses(dir.path() / "killed" / "metrics.jsonl"), losses);
}

// The largest absolute difference between two weight sets of the same names.
inline double max_difference(const ParamSet& a, const ParamSet& b) {
  EXPECT_EQ(a.names(), b.names());
  double worst = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, (a.tensors()[i] - b.tensors()[i]).abs().max().item<double>());
  }
  return worst;
}

// Waits until the file exists (a checkpoint written mid-run).
inline bool wait_for_file(const fs::path& f, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    if (fs::exists(f)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

inline std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  std::istringstream in(
      read_bytes("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children"));
  pid_t c;
  while (in >> c) out.push_back(c);
  return out;
}

}  // namespace ouroboros_test
