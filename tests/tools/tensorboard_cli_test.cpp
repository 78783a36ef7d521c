// label: unit
// TensorBoard shows what metrics.jsonl holds. Tiny runs through the CLI (Ouroboros, K = 3, with
// validation, checkpoints and per-module diagnostics), read back with TensorBoard's own reader
// (tests/tools/tensorboard_scalars.py): every scalar at every step equals the metrics file's value
// as a float, and no step shows twice, after a run that was killed and then resumed (its steps past
// the checkpoint are dropped), continued again, or replaced with --overwrite. Skipped, with the
// reason, where no Python has tensorboard.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "ouroboros/run/tensorboard.h"

namespace ouroboros {
namespace {

namespace fs = std::filesystem;
using ouroboros_test::cli;
using ouroboros_test::CliRun;
using ouroboros_test::run_command;
using ouroboros_test::TempDir;

using Curves = std::map<std::string, std::map<int64_t, float>>;  // tag -> step -> value

// The curves docs/USAGE.md promises for a metrics file: "<group>/<field>" for every number of a
// record, the group being train, the split, checkpoint or module<k>.
Curves curves_of_metrics(const fs::path& file) {
  Curves curves;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    const std::string group = j.contains("split")            ? j["split"].get<std::string>()
                              : j.contains("module")         ? "module" + j["module"].dump()
                              : j.contains("checkpoint_mib") ? "checkpoint"
                                                             : "train";
    const int64_t step = j["step"].get<int64_t>();
    for (const auto& [field, value] : j.items()) {
      if (field == "step" || field == "module" || !value.is_number()) continue;
      const bool once = curves[group + "/" + field].emplace(step, value.get<float>()).second;
      EXPECT_TRUE(once) << group << "/" << field << " twice at step " << step << " in " << file;
    }
  }
  return curves;
}

// The curves TensorBoard reads from a run directory; a step it keeps twice fails the test.
Curves curves_of_tensorboard(const std::string& py, const fs::path& dir) {
  const auto [output, rc] = run_command(py + " " + OUROBOROS_SOURCE_DIR +
                                        "/tests/tools/tensorboard_scalars.py " + dir.string());
  EXPECT_EQ(rc, 0) << output;
  Curves curves;
  if (rc != 0) return curves;
  const nlohmann::json read = nlohmann::json::parse(output);
  for (const auto& [tag, points] : read.items()) {
    for (const auto& p : points) {
      const int64_t step = p[0].get<int64_t>();
      const bool once = curves[tag].emplace(step, p[1].get<float>()).second;
      EXPECT_TRUE(once) << tag << " twice at step " << step;
    }
  }
  return curves;
}

std::vector<fs::path> event_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (is_event_file(e.path().filename().string())) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());  // the order TensorBoard reads them in
  return files;
}

std::vector<std::string> events_in(const fs::path& file) {
  return tf_records(ouroboros_test::read_bytes(file));
}

class TensorBoardCli : public ::testing::Test {
 protected:
  void SetUp() override {
    py_ = ouroboros_test::python_with("tensorboard");
    if (py_.empty()) {
      GTEST_SKIP() << "no Python with tensorboard (scripts/python-env.sh installs it into .venv)";
    }
    corpus_ = dir_.write("corpus.txt", ouroboros_test::tiny_corpus(3000));
    out_ = dir_.path() / "run";
  }

  std::string train(const std::string& steps) const {
    return ouroboros_test::train_flags({{"--data", corpus_.string()},
                                        {"--out-dir", out_.string()},
                                        {"--n-layer", "2"},
                                        {"--modules", "3"},
                                        {"--steps", steps},
                                        {"--log-interval", "1"},
                                        {"--eval-interval", "5"},
                                        {"--checkpoint-interval", "2"},
                                        {"--diagnostics-interval", "2"}});
  }

  // TensorBoard's curves are the metrics file's; returns them.
  Curves expect_tensorboard_shows_the_metrics() const {
    const Curves want = curves_of_metrics(out_ / "metrics.jsonl");
    EXPECT_EQ(curves_of_tensorboard(py_, out_), want);
    return want;
  }

  TempDir dir_;
  std::string py_;
  fs::path corpus_, out_;
};

std::vector<int64_t> steps_of(const std::map<int64_t, float>& curve) {
  std::vector<int64_t> steps;
  for (const auto& [step, value] : curve) steps.push_back(step);
  return steps;
}

TEST_F(TensorBoardCli, KilledResumedAndContinuedRunsShowEachStepOnce) {
  // Killed (SIGKILL) at step 5's validation: its event file holds steps 1-5, the checkpoint 4.
  const auto [killed, code] =
      run_command("exec env OUROBOROS_FAULT=kill:evaluation:0 " + std::string(OUROBOROS_BINARY) +
                  " " + train("8") + " 2>&1");
  ASSERT_EQ(code, -1) << killed;  // killed by the signal
  Curves c = expect_tensorboard_shows_the_metrics();
  EXPECT_EQ(steps_of(c["train/loss"]), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(steps_of(c["checkpoint/checkpoint_mib"]), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(steps_of(c["module3/grad_norm"]), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(c.count("valid/loss"), 0u);
  const float killed_step5_elapsed = c["train/elapsed_s"][5];
  ASSERT_EQ(event_files(out_).size(), 1u);
  const fs::path killed_file = event_files(out_)[0];
  const size_t killed_events = events_in(killed_file).size();

  // Resumed from step 4: step 5 is trained again, and shown once, with the new run's figures.
  const std::string resume = " --resume " + (out_ / "ckpt.pt").string();
  CliRun resumed = cli(train("8") + resume);
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  c = expect_tensorboard_shows_the_metrics();
  EXPECT_EQ(steps_of(c["train/loss"]), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(steps_of(c["valid/loss"]), (std::vector<int64_t>{5, 8}));
  EXPECT_EQ(steps_of(c["module2/update_rms"]), (std::vector<int64_t>{2, 4, 6, 8}));
  EXPECT_LT(c["train/elapsed_s"][5], killed_step5_elapsed);  // one step into the new run
  // The killed run's file lost its one event past step 4 (training at step 5); the resumed run's
  // file, after it by name, opens with a SessionLog START at step 5.
  ASSERT_EQ(event_files(out_).size(), 2u);
  EXPECT_EQ(event_files(out_)[0], killed_file);
  EXPECT_EQ(events_in(killed_file).size(), killed_events - 1);
  const std::vector<std::string> events = events_in(event_files(out_)[1]);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[1].substr(9), session_start_event(0, 5).substr(9));  // past the wall time
  for (const std::string tag : {"train/lr", "train/elapsed_s", "valid/bpc", "valid/tokens",
                                "checkpoint/checkpoint_s", "checkpoint/in_flight"}) {
    EXPECT_EQ(c.count(tag), 1u) << tag;
  }

  // Continued past its end from the final checkpoint: nothing to drop, a third file.
  CliRun continued = cli(train("10") + resume);
  ASSERT_EQ(continued.code, 0) << continued.output;
  c = expect_tensorboard_shows_the_metrics();
  EXPECT_EQ(c["train/loss"].size(), 10u);
  EXPECT_EQ(event_files(out_).size(), 3u);

  // Replaced: the old curves go with the old metrics.
  CliRun replaced = cli(train("3") + " --overwrite");
  ASSERT_EQ(replaced.code, 0) << replaced.output;
  c = expect_tensorboard_shows_the_metrics();
  EXPECT_EQ(steps_of(c["train/loss"]), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(event_files(out_).size(), 1u);
}

// What a live TensorBoard does that read a stopped run's file before the resumed run trimmed it:
// the new file's SessionLog START at step 4 drops every point from step 4 on.
TEST_F(TensorBoardCli, SessionStartDropsTheStoppedRunsLaterPoints) {
  const fs::path dir = dir_.path() / "live";
  fs::create_directories(dir);
  EventFileWriter stopped(dir.string());
  for (int64_t step = 1; step <= 5; ++step) stopped.scalars(step, {{"train/loss", 10.0f + step}});
  EventFileWriter resumed(dir.string());
  resumed.session_start(4);
  for (int64_t step = 4; step <= 6; ++step) resumed.scalars(step, {{"train/loss", 20.0f + step}});
  EXPECT_EQ(curves_of_tensorboard(py_, dir),
            (Curves{{"train/loss",
                     {{1, 11.0f}, {2, 12.0f}, {3, 13.0f}, {4, 24.0f}, {5, 25.0f}, {6, 26.0f}}}}));
}

// Event files with points are a run's, even without its metrics file (--metrics wrote it
// elsewhere): a fresh run is refused there, and --overwrite replaces them. A file that holds only
// its opening (a run killed before its first record) is no run, and a fresh run removes it.
TEST(TensorBoardOutDir, CurvesAreARunsFilesThatOnlyOverwriteReplaces) {
  TempDir dir;
  const fs::path corpus = dir.write("corpus.txt", ouroboros_test::tiny_corpus(3000));
  const fs::path opened = dir.path() / "opened", curves = dir.path() / "curves";
  fs::create_directories(opened);
  fs::create_directories(curves);
  const fs::path opened_file = EventFileWriter(opened.string()).path();
  const fs::path curves_file = [&] {
    EventFileWriter w(curves.string());
    w.scalars(1, {{"train/loss", 3.0f}});
    return w.path();
  }();
  const auto train = [&](const fs::path& out) {
    return ouroboros_test::train_flags(
        {{"--data", corpus.string()}, {"--out-dir", out.string()}, {"--steps", "2"}});
  };

  CliRun r = cli(train(opened));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(fs::exists(opened_file));
  EXPECT_EQ(event_files(opened).size(), 1u);

  const std::string before = ouroboros_test::read_bytes(curves_file);
  r = cli(train(curves));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("already holds a run (TensorBoard event files)"), std::string::npos)
      << r.output;
  EXPECT_EQ(event_files(curves), std::vector<fs::path>{curves_file});
  EXPECT_EQ(ouroboros_test::read_bytes(curves_file), before);
  r = cli(train(curves) + " --overwrite");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(fs::exists(curves_file));
  EXPECT_EQ(event_files(curves).size(), 1u);
}

}  // namespace
}  // namespace ouroboros
