// Helpers the test files share: a self-removing temporary directory, whole-file reads, and runs of
// the built CLI.
#pragma once

#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <system_error>

#include "ouroboros/trainer.h"

namespace ouroboros_test {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    std::random_device rd;
    path_ = fs::temp_directory_path() /
            ("ouroboros_test_" + std::to_string(rd()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  // Writes content to a file below the directory, creating parent folders.
  fs::path write(const std::string& name, const std::string& content) const {
    fs::path file = path_ / name;
    fs::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary) << content;
    return file;
  }

 private:
  fs::path path_;
};

inline std::string read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A random batch (x, y = x shifted by one) drawn from generator seed `seed`: batch t of a test is
// random_batch(c, base + t), a pure function of t, so every method sees the same data.
inline ouroboros::Batch random_batch(const ouroboros::Config& c, uint64_t seed) {
  at::Generator g = ouroboros::make_generator(seed);
  at::Tensor x = at::randint(c.model.vocab_size, {c.train.batch_size, c.model.block_size + 1}, g);
  return {x.narrow(1, 0, c.model.block_size).contiguous(),
          x.narrow(1, 1, c.model.block_size).contiguous()};
}

struct CliRun {
  std::string output;  // stdout and stderr together
  int code = -1;
};

// Runs the built CLI with args (paths in them must not need quoting), stderr captured.
inline CliRun cli(const std::string& args) {
  const std::string cmd = std::string(OUROBOROS_BINARY) + " " + args + " 2>&1";
  CliRun r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace ouroboros_test
