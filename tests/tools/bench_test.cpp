// label: unit
// `ouroboros bench` end to end on a tiny model: the JSON report is well formed and its numbers
// are consistent with each other, and the bar chart is a real PNG of the requested size.
#include <gtest/gtest.h>

#include "test_util.h"

#include <malloc.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"

#if defined(__SANITIZE_ADDRESS__)
#define OUROBOROS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OUROBOROS_ASAN 1
#endif
#endif

namespace {
namespace fs = std::filesystem;
using ouroboros_test::cli;
using ouroboros_test::CliRun;
using ouroboros_test::read_bytes;
using ouroboros_test::TempDir;

uint32_t big_endian(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

TEST(BenchTest, TinyBenchWritesConsistentJsonAndAPng) {
  TempDir dir;
  const int64_t L = 2, C = 32, T = 16, B = 4, V = 256;
  CliRun r =
      cli("bench --modes sequential,ouroboros,gpipe,data-parallel --steps 3 --warmup 1 "
          "--n-layer 2 --n-head 2 --n-embd 32 --block-size 16 --batch-size 4 "
          "--micro-batches 2 --workers 2 --modules 3 --peak-seconds 0.05 --out-dir " +
          dir.path().string());
  ASSERT_EQ(r.code, 0) << r.output;
  // Progress is visible: each method announced, and its steps.
  EXPECT_NE(r.output.find("[1/5] sequential 1 thread"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("gpipe K=3 M=2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step 4/4"), std::string::npos) << r.output;

  nlohmann::json j = nlohmann::json::parse(read_bytes(dir.path() / "bench.json"));
  const double flops = 3.0 * (2.0 * B * T * (12.0 * L * C * C + C * V) + 4.0 * L * B * T * T * C);
  EXPECT_DOUBLE_EQ(j["flop_per_step"].get<double>(), flops);
  EXPECT_EQ(j["model"]["n_layer"], L);
  EXPECT_EQ(j["steps"], 3);
  const double peak = j["matmul_peak_gflops_per_core"].get<double>();
  EXPECT_GT(peak, 0.0);
  ASSERT_EQ(j["runs"].size(), 5u);
  const std::vector<std::string> names = {"sequential 1 thread", "sequential 2 threads",
                                          "ouroboros K=3 M=2", "gpipe K=3 M=2",
                                          "data-parallel W=2"};
  const std::vector<int64_t> cores = {1, 2, 2, 2, 2};
  const double seq1 = j["runs"][0]["tokens_per_s"].get<double>();
  const double seq2 = j["runs"][1]["tokens_per_s"].get<double>();
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& run = j["runs"][i];
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(run["name"], names[i]);
    EXPECT_EQ(run["cores"], cores[i]);
    const double tps = run["tokens_per_s"].get<double>(), ms = run["ms_per_step"].get<double>();
    EXPECT_GT(tps, 0.0);
    EXPECT_NEAR(tps, B * T / (ms / 1e3), 1e-6 * tps);
    EXPECT_NEAR(run["gflops"].get<double>(), flops / (ms / 1e3) / 1e9, 1e-9 * flops);
    EXPECT_NEAR(run["peak_share"].get<double>(),
                run["gflops"].get<double>() / (peak * static_cast<double>(cores[i])), 1e-12);
    EXPECT_NEAR(run["ratio_to_sequential_1_thread"].get<double>(), tps / seq1, 1e-12);
    EXPECT_NEAR(run["ratio_to_sequential_same_cores"].get<double>(),
                tps / (cores[i] == 1 ? seq1 : seq2), 1e-12);
    // A child process per method: libtorch alone is tens of MiB.
    EXPECT_GT(run["peak_rss_mib"].get<double>(), 20.0);
    // Random tokens over 256 symbols: the loss starts near ln 256 = 5.55.
    EXPECT_NEAR(run["final_loss"].get<double>(), 5.55, 0.5);
  }
  EXPECT_EQ(j["runs"][0]["ratio_to_sequential_1_thread"].get<double>(), 1.0);

  // The chart: PNG signature, then the IHDR chunk with the size gnuplot was asked for.
  const std::string png = read_bytes(dir.path() / "bench.png");
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  EXPECT_EQ(big_endian(png, 16), 960u);
  EXPECT_EQ(big_endian(png, 20), 540u);
  // The temporary plot inputs are cleaned up.
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(dir.path()))
    files.insert(e.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"bench.json", "bench.png"}));
}

TEST(BenchTest, EntriesPairParallelModesWithSequentialAtTheirCoreCount) {
  ouroboros::BenchOptions o;
  o.base.model.vocab_size = 256;
  o.base.train.batch_size = 8;
  o.base.train.threads = 2;  // per worker
  o.base.engine.modules = 4;
  o.base.engine.workers = 2;
  o.modes = {"ouroboros", "data-parallel", "sequential"};
  auto e = ouroboros::bench_entries(o);
  ASSERT_EQ(e.size(), 5u);
  EXPECT_EQ(e[0].name, "sequential 1 thread");
  EXPECT_EQ(e[1].name, "sequential 4 threads");  // data-parallel: 2 replicas x 2 threads
  EXPECT_EQ(e[2].name, "sequential 6 threads");  // ouroboros K=4: 3 workers x 2 threads
  EXPECT_EQ(e[3].cores, 6);
  EXPECT_EQ(e[3].cfg.engine.mode, ouroboros::Mode::kOuroboros);
  EXPECT_EQ(e[4].cores, 4);
  EXPECT_EQ(e[4].cfg.engine.modules, 1);
  o.modes = {"gpipe"};
  o.base.engine.modules = 1;  // a pipeline needs K >= 2: refused, not silently changed
  EXPECT_THROW(ouroboros::bench_entries(o), ouroboros::ConfigError);
  o.base.engine.modules = 3;
  o.modes = {"gpipe", "pipedream"};
  EXPECT_THROW(ouroboros::bench_entries(o), ouroboros::ConfigError);
  o.modes = {"data-parallel"};
  o.base.engine.workers = 3;  // does not divide batch 8
  EXPECT_THROW(ouroboros::bench_entries(o), ouroboros::ConfigError);
}

// The timing path builds the config's own model: a Transformer-XL is timed as one, with its own
// FLOPs (relative attention over memory + segment, r_net, feed-forward, tied head).
TEST(BenchTest, MeasureTimesTheConfiguredModelFamily) {
  ouroboros::Config c = ouroboros_test::tiny_config(3);
  c.model.model = ouroboros::ModelKind::kTransformerXl;
  c.model.n_layer = 2;
  c.model.d_inner = 24;
  c.model.block_size = 6;
  c.model.mem_len = 6;
  const nlohmann::json r = ouroboros::bench_measure(c, 1, 2, nullptr);
  const double B = 2, Q = 6, K = 12, C = 16, D = 24, V = 13, L = 2;
  const double block = 2 * B * K * C * 3 * C + 2 * K * C * C + 6 * B * Q * K * C +
                       2 * B * Q * C * C + 4 * B * Q * C * D;
  EXPECT_DOUBLE_EQ(r["flop_per_step"].get<double>(), 3 * (L * block + 2 * B * Q * C * V));
  EXPECT_GT(r["tokens_per_s"].get<double>(), 0.0);
  EXPECT_TRUE(std::isfinite(r["final_loss"].get<double>()));
}

TEST(BenchTest, BadModeIsOneLineError) {
  CliRun r = cli("bench --modes sequential,pipedream --steps 1");
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.output,
            "error: bench: unknown mode 'pipedream' (hint: use sequential, ouroboros, "
            "gpipe or data-parallel)\n");
}

}  // namespace

// Big blocks (past glibc's largest mmap threshold, 32 MiB) come from the heap and stay there when
// freed, so a training step does not map and page-fault its attention tensors afresh.
TEST(SystemTest, KeepFreedMemoryServesBigBlocksFromTheHeapAndKeepsThem) {
#ifdef OUROBOROS_ASAN
  GTEST_SKIP() << "AddressSanitizer replaces glibc's malloc, whose settings this checks";
#endif
  for (const char* v :
       {"MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"}) {
    if (std::getenv(v)) GTEST_SKIP() << v << " is set and wins over keep_freed_memory";
  }
  ouroboros::keep_freed_memory();
  const size_t mapped = mallinfo2().hblks;
  at::Tensor big = at::empty({16 << 20});  // 64 MiB
  big.fill_(1.0f);
  EXPECT_EQ(mallinfo2().hblks, mapped)
      << "a 64 MiB block was mapped instead of taken from the heap";
  const size_t heap = mallinfo2().arena;
  big.reset();
  EXPECT_GE(mallinfo2().arena, heap) << "the heap was trimmed after the block was freed";
  EXPECT_GE(mallinfo2().fordblks, size_t{16 << 20} * 4) << "the freed block is not kept for reuse";
}
