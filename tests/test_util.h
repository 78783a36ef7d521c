// Helpers the test files share: the one tiny-config builder, a self-removing temporary directory,
// whole-file reads, random batches, and runs of the built CLI.
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
#include <utility>

#include "ouroboros/core/config.h"
#include "ouroboros/train/method.h"

namespace ouroboros_test {

namespace fs = std::filesystem;

// The tiny model and run every test starts from; a test changes only what it is about. GPT with
// L = 4 blocks, 2 heads, C = 16, T = 8, V = 13; B = 2; `optimizer` at lr 1e-2 (3 warm-up steps,
// cosine to 1e-3 at step 20), momentum 0.9, weight decay 0.01, clipping at 0.5 (small enough to
// be active); K modules on an even cut, without weight prediction.
inline ouroboros::Config tiny_config(int64_t K = 1, const std::string& optimizer = "adam") {
  ouroboros::Config c;
  c.model.n_layer = 4;
  c.model.n_head = 2;
  c.model.n_embd = 16;
  c.model.block_size = 8;
  c.model.vocab_size = 13;
  c.train.batch_size = 2;
  c.train.optimizer = ouroboros::parse_option<ouroboros::OptimizerKind>(optimizer);
  c.train.lr = 1e-2;
  c.train.min_lr = 1e-3;
  c.train.warmup_steps = 3;
  c.train.steps = 20;
  c.train.momentum = 0.9;
  c.train.weight_decay = 0.01;
  c.train.grad_clip = 0.5;
  c.engine.modules = K;
  c.engine.partition = "even";
  // The plain delayed update of docs/ALGORITHM.md section 3.
  c.engine.weight_predict = ouroboros::WeightPredict::kNone;
  return c;
}

// The same run reading a text file (vocabulary from its tokenizer) with progress every step and
// evaluation only at the end.
inline ouroboros::Config on_corpus(ouroboros::Config c, const fs::path& file,
                                   const std::string& tokenizer = "auto") {
  c.model.vocab_size = 0;
  c.data.data = file.string();
  c.data.format = ouroboros::DataFormat::kText;
  c.data.tokenizer = ouroboros::parse_option<ouroboros::TokenizerChoice>(tokenizer);
  c.train.eval_interval = 0;
  c.train.log_interval = 1;
  return c;
}

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

// Runs a shell command and returns its stdout and exit status.
inline std::pair<std::string, int> run_command(const std::string& cmd) {
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return {"", -1};
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// The project's Python environment (scripts/python-env.sh) when it can import `module`, else the
// system's; "" when neither can (the test then skips, naming the module).
inline std::string python_with(const std::string& module) {
  for (const std::string& py :
       {std::string(OUROBOROS_SOURCE_DIR) + "/.venv/bin/python", std::string("/usr/bin/python3")}) {
    if (fs::exists(py) &&
        run_command(py + " -c 'import " + module + "' >/dev/null 2>&1").second == 0) {
      return py;
    }
  }
  return "";
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
