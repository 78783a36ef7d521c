// `ouroboros bench`: the training methods one after another on the same model and cores, each in
// a child process of its own (so peak memory is per method), with tokens/s, the ratio to
// sequential backprop at the same core count, achieved GFLOP/s against the measured matmul peak,
// and peak resident memory; written as a table, JSON and a bar chart (gnuplot PNG).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ouroboros/core/config.h"

namespace ouroboros {

class DistContext;

struct BenchOptions {
  Config base;                              // model, optimizer, K, M, W, per-worker threads
  std::vector<std::string> modes;           // sequential | ouroboros | gpipe | data-parallel
  std::vector<int64_t> sequential_threads;  // empty: 1 and the core counts of the parallel modes
  int64_t steps = 20;                       // timed steps per method
  int64_t warmup = 3;                       // untimed steps first
  double peak_seconds = 0.5;                // per matmul size when measuring the peak
  std::string out_dir = "bench/results";    // bench.json and bench.png go here
  std::string executable;                   // this program, started once per method
  // The parallel methods as one process per worker over c10d/Gloo on loopback (`launch --nproc
  // W -- bench-child`), data parallelism as one process per replica (DDP); sequential stays one
  // process.
  bool processes = false;
};

// One method of the bench: its config (mode resolved, threads set) and the cores it occupies.
struct BenchEntry {
  std::string name;  // "gpipe K=3 M=4"
  Config cfg;
  int64_t cores = 1;
  int64_t processes = 1;  // > 1: started by `launch --nproc processes`
};
std::vector<BenchEntry> bench_entries(const BenchOptions& opts);

// Times one method of the config's model in this process on random token batches (all steps in
// one run() call after the warm-up; bench/timing.h). Progress lines go to `progress` (may be
// null). Returns {"tokens_per_s", "ms_per_step", "flop_per_step", "final_loss", "peak_rss_mib"}.
// With a process group (ctx), every rank times its part and rank 0's result counts, with
// peak_rss_mib summed over the ranks (and "peak_rss_mib_per_process").
nlohmann::json bench_measure(const Config& cfg, int64_t warmup, int64_t steps,
                             std::ostream* progress, DistContext* ctx = nullptr);

// Runs every entry in a child process (`executable bench-child`), then writes
// <out_dir>/bench.json and <out_dir>/bench.png and returns the report JSON. Log lines (progress,
// the table) go to `log`.
nlohmann::json run_bench(const BenchOptions& opts, std::ostream& log);

// The report as a Markdown table.
std::string bench_table(const nlohmann::json& report);

// Draws a bar chart of tokens/s per method with gnuplot (pngcairo, else png). Returns "" on
// success, else why not (one line).
std::string plot_bench(const nlohmann::json& report, const std::string& png_path);

// Best single-thread float matmul rate over n = 256, 512, 1024 (GFLOP/s per core).
double matmul_peak_per_core(double seconds);

}  // namespace ouroboros
