// `ouroboros launch`: one child process per local rank with the torchrun variables set, supervised
// until all exit. Ctrl-C (SIGINT) or SIGTERM is forwarded; one failing child stops the others.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

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

void check_options(const LaunchOptions& o) {
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
}

// Starts local rank `local` of this machine: the program with the command's arguments and the
// torchrun variables set. Returns its pid.
pid_t start_child(const LaunchOptions& o, const std::string& program, int64_t local) {
  const int64_t rank = o.node_rank * o.nproc + local;
  const pid_t launcher = getpid();
  pid_t pid = fork();
  if (pid < 0) throw Error(std::string("fork failed: ") + strerror(errno));
  if (pid > 0) return pid;
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  // A rank dies with its launcher: SIGTERM when it goes, however it goes (killed too), so the
  // ranks stop together with a checkpoint and free the port and the out-dir. The launcher may
  // already be gone by the time this is set.
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != launcher) _exit(128 + SIGTERM);
  setenv("RANK", std::to_string(rank).c_str(), 1);
  setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
  setenv("WORLD_SIZE", std::to_string(o.nnodes * o.nproc).c_str(), 1);
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

// The children of one launch, watched until every one has exited: a failing child or a signal
// to the launcher stops the others (SIGTERM, then SIGKILL after a grace period).
class Supervisor {
 public:
  void add(pid_t pid, int64_t rank) { children_.push_back({pid, rank, true}); }
  // Returns launch's exit code.
  int watch();

 private:
  using Clock = std::chrono::steady_clock;
  struct Child {
    pid_t pid;
    int64_t rank;
    bool alive;
  };
  void stop_all(int sig);
  void reaped(pid_t pid, int status);

  std::vector<Child> children_;
  size_t alive_ = 0;
  bool stopping_ = false;
  Clock::time_point kill_at_;
  int64_t failed_rank_ = -1;
  std::string failed_how_;
};

void Supervisor::stop_all(int sig) {
  for (auto& c : children_) {
    if (c.alive) kill(c.pid, sig);
  }
  if (!stopping_) kill_at_ = Clock::now() + std::chrono::seconds(10);
  stopping_ = true;
}

void Supervisor::reaped(pid_t pid, int status) {
  for (auto& c : children_) {
    if (c.pid != pid || !c.alive) continue;
    c.alive = false;
    --alive_;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && !stopping_ && !g_signal) {
      failed_rank_ = c.rank;
      failed_how_ = describe(status);
      std::cerr << "launch: rank " << c.rank << " failed (" << failed_how_
                << "); stopping the other processes" << std::endl;
      stop_all(SIGTERM);
    }
  }
}

int Supervisor::watch() {
  alive_ = children_.size();
  while (alive_ > 0) {
    if (g_signal && !stopping_) stop_all(SIGTERM);
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      reaped(pid, status);
      continue;
    }
    if (pid < 0 && errno == ECHILD) break;
    if (stopping_ && Clock::now() > kill_at_) stop_all(SIGKILL);
    // A stopped (frozen) child never sees SIGTERM: it is killed at once rather than after the
    // grace period the others get to write their checkpoint.
    if (stopping_) {
      for (auto& c : children_) {
        if (c.alive && is_stopped(c.pid)) kill(c.pid, SIGKILL);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (g_signal) {
    std::cerr << "launch: stopped " << children_.size() << " processes (" << strsignal(g_signal)
              << ")" << std::endl;
    return 128 + g_signal;
  }
  if (failed_rank_ >= 0) {
    std::cerr << "error: rank " << failed_rank_ << " failed (" << failed_how_ << ")" << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace

int launch(const LaunchOptions& o) {
  check_options(o);
  const std::string program =
      o.program.empty() ? std::filesystem::read_symlink("/proc/self/exe").string() : o.program;

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  Supervisor supervisor;
  for (int64_t local = 0; local < o.nproc; ++local) {
    supervisor.add(start_child(o, program, local), o.node_rank * o.nproc + local);
  }
  return supervisor.watch();
}

}  // namespace ouroboros
