// `ouroboros launch`: local copies of a program started as the ranks of a process group.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ouroboros {

// `ouroboros launch`: starts nproc local copies of this program with the rank variables set,
// forwards SIGINT/SIGTERM to them, and stops the others when one fails. Returns the exit code.
struct LaunchOptions {
  int64_t nproc = 1;
  int64_t nnodes = 1;
  int64_t node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  std::string program;            // the executable to start ("" = this one)
  std::vector<std::string> args;  // its arguments (e.g. train --modules 3 ...)
};
int launch(const LaunchOptions& opts);

}  // namespace ouroboros
