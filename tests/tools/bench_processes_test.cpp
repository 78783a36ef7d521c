// label: distributed
// `ouroboros bench --processes`: each parallel method runs as one process per worker (data
// parallelism: per replica) started by `launch`, and times the same training as its threaded form:
// the same random batches, so the same final loss bit for bit, the same rows and FLOPs per step.
#include <gtest/gtest.h>

#include "test_util.h"

#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace {
namespace fs = std::filesystem;
using ouroboros_test::cli;
using ouroboros_test::CliRun;
using ouroboros_test::read_bytes;
using ouroboros_test::TempDir;
using json = nlohmann::json;

const std::string kTiny =
    " --steps 3 --warmup 1 --n-layer 2 --n-head 2 --n-embd 32 --block-size 16 --batch-size 4 "
    "--micro-batches 2 --workers 2 --modules 3 --dropout 0.1 --peak-seconds 0.05 --out-dir ";

json bench(const std::string& flags, const fs::path& dir) {
  CliRun r = cli("bench --modes ouroboros,gpipe,data-parallel" + flags + kTiny + dir.string());
  EXPECT_EQ(r.code, 0) << r.output;
  return json::parse(read_bytes(dir / "bench.json"));
}

TEST(BenchProcesses, EachMethodAsProcessesTrainsAsItsThreadedForm) {
  TempDir threads_dir, procs_dir;
  const json threads = bench("", threads_dir.path());
  const json procs = bench(" --processes", procs_dir.path());
  EXPECT_EQ(threads["processes"], false);
  EXPECT_EQ(procs["processes"], true);
  ASSERT_EQ(threads["runs"].size(), 3u);
  ASSERT_EQ(procs["runs"].size(), 3u);
  const std::vector<std::string> names = {"ouroboros K=3 M=2", "gpipe K=3 M=2",
                                          "data-parallel W=2"};
  const double B = 4, T = 16;
  for (size_t i = 0; i < names.size(); ++i) {
    const json& t = threads["runs"][i];
    const json& p = procs["runs"][i];
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(t["name"], names[i]);
    EXPECT_EQ(p["name"], names[i] + ", 2 processes");
    EXPECT_EQ(t["processes"], 1);
    EXPECT_EQ(p["processes"], 2);
    EXPECT_EQ(p["mode"], t["mode"]);
    EXPECT_EQ(p["cores"], 2);
    // The same batches, weights, dropout and updates: the last step's loss is equal bit for bit.
    EXPECT_EQ(p["final_loss"].get<double>(), t["final_loss"].get<double>());
    // The same rows per step (data parallelism: 2 replicas of 2 rows, against 4 rows split in two).
    EXPECT_EQ(p["flop_per_step"].get<double>(), t["flop_per_step"].get<double>());
    const double ms = p["ms_per_step"].get<double>();
    EXPECT_NEAR(p["tokens_per_s"].get<double>(), B * T / (ms / 1e3), 1e-9 * B * T / (ms / 1e3));
    // Peak memory: the sum over both processes, each with its own libtorch.
    const json& each = p["peak_rss_mib_per_process"];
    ASSERT_EQ(each.size(), 2u);
    EXPECT_GT(each[0].get<double>(), 20.0);
    EXPECT_GT(each[1].get<double>(), 20.0);
    EXPECT_DOUBLE_EQ(p["peak_rss_mib"].get<double>(),
                     each[0].get<double>() + each[1].get<double>());
    EXPECT_FALSE(t.contains("peak_rss_mib_per_process"));
  }
  EXPECT_EQ(procs["runs"][2]["workers"], 2);
}

TEST(BenchProcesses, ProcessesWithoutAParallelModeIsRefused) {
  CliRun r = cli("bench --processes --modes sequential --steps 1");
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.output,
            "error: bench: --processes applies to ouroboros, gpipe and data-parallel, and --modes "
            "names none of them (hint: add a parallel mode to --modes, or drop --processes)\n");
}

}  // namespace
