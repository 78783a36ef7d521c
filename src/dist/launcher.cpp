// `ouroboros launch`: one child process per local rank with the torchrun variables set, supervised
// until all exit. Ctrl-C (SIGINT) or SIGTERM is forwarded; one failing child stops the others.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "ouroboros/core/errors.h"
#include "ouroboros/dist/launcher.h"

namespace ouroboros {
namespace {

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

std::string describe(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// Whether the process is stopped (state T in /proc/<pid>/stat), e.g. by SIGSTOP.
bool is_stopped(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  const size_t close = stat.rfind(')');  // the command name may hold spaces
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'T';
}

}  // namespace

int launch(const LaunchOptions& o) {
  if (o.nproc < 1) throw ConfigError("--nproc must be >= 1, got " + std::to_string(o.nproc));
  if (o.nnodes < 1) throw ConfigError("--nnodes must be >= 1, got " + std::to_string(o.nnodes));
  if (o.node_rank < 0 || o.node_rank >= o.nnodes) {
    throw ConfigError("--node-rank " + std::to_string(o.node_rank) + " is outside 0.." +
                      std::to_string(o.nnodes - 1));
  }
  if (o.args.empty()) {
    throw ConfigError("launch needs the command to run",
                      "ouroboros launch --nproc 2 -- train --modules 3 ...");
  }
  const std::string program =
      o.program.empty() ? std::filesystem::read_symlink("/proc/self/exe").string() : o.program;
  const int64_t world = o.nnodes * o.nproc;

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  struct Child {
    pid_t pid;
    int64_t rank;
    bool alive;
  };
  std::vector<Child> children;
  for (int64_t local = 0; local < o.nproc; ++local) {
    const int64_t rank = o.node_rank * o.nproc + local;
    pid_t pid = fork();
    if (pid < 0) throw Error(std::string("fork failed: ") + strerror(errno));
    if (pid == 0) {
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      setenv("RANK", std::to_string(rank).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      setenv("MASTER_ADDR", o.master_addr.c_str(), 1);
      setenv("MASTER_PORT", std::to_string(o.master_port).c_str(), 1);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(program.c_str()));
      for (const auto& a : o.args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(program.c_str(), argv.data());
      std::cerr << "error: cannot start " << program << ": " << strerror(errno) << std::endl;
      _exit(127);
    }
    children.push_back({pid, rank, true});
  }

  using Clock = std::chrono::steady_clock;
  bool stopping = false;
  Clock::time_point kill_at;
  int64_t failed_rank = -1;
  std::string failed_how;
  auto stop_all = [&](int sig) {
    for (auto& c : children) {
      if (c.alive) kill(c.pid, sig);
    }
    if (!stopping) kill_at = Clock::now() + std::chrono::seconds(10);
    stopping = true;
  };
  size_t alive = children.size();
  while (alive > 0) {
    if (g_signal && !stopping) stop_all(SIGTERM);
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (auto& c : children) {
        if (c.pid != pid || !c.alive) continue;
        c.alive = false;
        --alive;
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok && !stopping && !g_signal) {
          failed_rank = c.rank;
          failed_how = describe(status);
          std::cerr << "launch: rank " << c.rank << " failed (" << failed_how
                    << "); stopping the other processes" << std::endl;
          stop_all(SIGTERM);
        }
      }
      continue;
    }
    if (pid < 0 && errno == ECHILD) break;
    if (stopping && Clock::now() > kill_at) stop_all(SIGKILL);
    // A stopped (frozen) child never sees SIGTERM: it is killed at once rather than after the
    // grace period the others get to write their checkpoint.
    if (stopping) {
      for (auto& c : children) {
        if (c.alive && is_stopped(c.pid)) kill(c.pid, SIGKILL);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (g_signal) {
    std::cerr << "launch: stopped " << children.size() << " processes (" << strsignal(g_signal)
              << ")" << std::endl;
    return 128 + g_signal;
  }
  if (failed_rank >= 0) {
    std::cerr << "error: rank " << failed_rank << " failed (" << failed_how << ")" << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace ouroboros
