// label: unit
// Run ids: every run has one, in its checkpoint, metrics records and event file names, and a
// resumed run keeps it; a resume refuses an out-dir holding another run (it would replace that
// run's checkpoint and mix both runs' metrics and curves) unless told to overwrite it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "ouroboros/run/tensorboard.h"
#include "ouroboros/train/checkpoint.h"

namespace {
namespace fs = std::filesystem;

using ouroboros_test::cli;
using ouroboros_test::CliRun;
using ouroboros_test::CliTest;
using ouroboros_test::read_bytes;
using ouroboros_test::train_flags;

// Every file of a directory and its bytes.
std::map<std::string, std::string> files_of(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    files[e.path().filename().string()] = read_bytes(e.path());
  }
  return files;
}

// The "run" of each metrics record ("" where a record has none).
std::multiset<std::string> record_runs(const fs::path& metrics) {
  std::multiset<std::string> runs;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    runs.insert(j.contains("run") ? j["run"].get<std::string>() : "");
  }
  return runs;
}

std::string run_of(const fs::path& dir) {
  return ouroboros::load_checkpoint((dir / "ckpt.pt").string()).run;
}

class RunIdTest : public CliTest {
 protected:
  // A tiny run of 6 steps into dir_/name, with `extra` flags.
  fs::path train(const std::string& name, std::map<std::string, std::string> extra = {}) {
    const fs::path out = dir_.path() / name;
    extra.emplace("--data", corpus_.string());
    extra.emplace("--out-dir", out.string());
    CliRun r = cli(train_flags(extra));
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("run " + run_of(out) + " started | out-dir " + out.string()),
              std::string::npos)
        << r.output;
    return out;
  }

  CliRun resume(const fs::path& ckpt, const std::string& steps, const std::string& more = "") {
    return cli("train --resume " + ckpt.string() + " --steps " + steps + more);
  }
};

TEST_F(RunIdTest, EveryRunHasItsOwnIdInCheckpointMetricsAndEventFiles) {
  const fs::path a = train("A"), c = train("C", {{"--seed", "9"}});
  const std::string id = run_of(a);
  EXPECT_EQ(id.size(), 16u);
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
  EXPECT_NE(run_of(c), id);
  const std::multiset<std::string> runs = record_runs(a / "metrics.jsonl");
  EXPECT_EQ(runs.count(id), runs.size());
  EXPECT_GE(runs.size(), 3u);  // progress at 5 and 6, the checkpoint, the final evaluation
  EXPECT_EQ(ouroboros::event_file_runs(a.string()), std::set<std::string>{id});
}

// The reproduction: A's checkpoint resumed into C, another run's out-dir, is refused in one line
// before anything is written, and C stays as it was.
TEST_F(RunIdTest, ResumeIntoAnotherRunsOutDirIsRefused) {
  const fs::path a = train("A"), c = train("C", {{"--seed", "9"}});
  const std::map<std::string, std::string> before = files_of(c);
  CliRun r = resume(a / "ckpt.pt", "40", " --out-dir " + c.string());
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find("error: out-dir " + c.string() + " holds another run (run " + run_of(c) +
                          ": ckpt.pt, metrics.jsonl, TensorBoard event files); resuming " +
                          (a / "ckpt.pt").string() + " (run " + run_of(a) +
                          ") there would mix them (hint: resume into the checkpoint's own "
                          "directory " +
                          a.string() + ", choose an empty --out-dir, or replace " + c.string() +
                          "'s run with --overwrite)"),
            std::string::npos)
      << r.output;
  EXPECT_TRUE(files_of(c) == before) << c << " changed";  // bytes, not printed
  // Only the curves of another run are enough.
  fs::remove(c / "ckpt.pt");
  fs::remove(c / "metrics.jsonl");
  r = resume(a / "ckpt.pt", "40", " --out-dir " + c.string());
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("holds another run (run "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(": TensorBoard event files)"), std::string::npos) << r.output;
}

// The normal case: a resume into the run's own out-dir (named or not) continues it, same id.
TEST_F(RunIdTest, ResumeIntoItsOwnOutDirContinues) {
  const fs::path a = train("A");
  const std::string id = run_of(a);
  CliRun r = resume(a / "ckpt.pt", "10");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("run " + id + " resumed | out-dir " + a.string()), std::string::npos)
      << r.output;
  r = resume(a / "ckpt.pt", "14", " --out-dir " + (dir_.path() / "." / "A").string());
  ASSERT_EQ(r.code, 0) << r.output;
  const ouroboros::Checkpoint ck = ouroboros::load_checkpoint((a / "ckpt.pt").string());
  EXPECT_EQ(ck.step, 14);
  EXPECT_EQ(ck.run, id);
  const std::multiset<std::string> runs = record_runs(a / "metrics.jsonl");
  EXPECT_EQ(runs.count(id), runs.size());
  EXPECT_NE(read_bytes(a / "metrics.jsonl").find("\"step\":14"), std::string::npos);
  EXPECT_EQ(ouroboros::event_file_runs(a.string()), std::set<std::string>{id});
}

// A run moved elsewhere resumes where it lies now, and never writes to its old place.
TEST_F(RunIdTest, MovedRunResumesWhereItLies) {
  const fs::path a = train("A");
  const std::string id = run_of(a);
  const fs::path old = dir_.path() / "A_old";
  fs::rename(a, old);
  CliRun r = resume(old / "ckpt.pt", "10");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(fs::exists(a));
  EXPECT_EQ(ouroboros::load_checkpoint((old / "ckpt.pt").string()).step, 10);
  EXPECT_EQ(run_of(old), id);
}

// --overwrite with --resume replaces the run the out-dir held: its metrics and curves go, and
// its checkpoint is the resumed run's.
TEST_F(RunIdTest, OverwriteReplacesTheOtherRun) {
  const fs::path a = train("A"), c = train("C", {{"--seed", "9"}});
  const std::string id = run_of(a);
  CliRun r = resume(a / "ckpt.pt", "10", " --out-dir " + c.string() + " --overwrite");
  ASSERT_EQ(r.code, 0) << r.output;
  const ouroboros::Checkpoint ck = ouroboros::load_checkpoint((c / "ckpt.pt").string());
  EXPECT_EQ(ck.run, id);
  EXPECT_EQ(ck.step, 10);
  const std::multiset<std::string> runs = record_runs(c / "metrics.jsonl");
  EXPECT_EQ(runs.count(id), runs.size());
  EXPECT_EQ(read_bytes(c / "metrics.jsonl").find("\"step\":5,"), std::string::npos);
  EXPECT_EQ(ouroboros::event_file_runs(c.string()), std::set<std::string>{id});
  EXPECT_EQ(ouroboros::load_checkpoint((a / "ckpt.pt").string()).step, 6);  // A untouched
}

// A run written before ids (checkpoint, metrics and event file names without one) resumes in its
// own out-dir and takes an id from then on; elsewhere only an empty out-dir takes it.
TEST_F(RunIdTest, RunWithoutIdResumesInItsOwnOutDir) {
  const fs::path a = train("A"), c = train("C", {{"--seed", "9"}});
  ouroboros::Checkpoint old = ouroboros::load_checkpoint((a / "ckpt.pt").string());
  const std::string id = old.run;
  old.run = "";
  ouroboros::save_checkpoint((a / "ckpt.pt").string(), old);
  std::ifstream in(a / "metrics.jsonl");
  std::string without;
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    j.erase("run");
    without += j.dump() + "\n";
  }
  in.close();
  std::ofstream(a / "metrics.jsonl") << without;
  for (const auto& e : fs::directory_iterator(a)) {
    const std::string name = e.path().filename().string();
    if (ouroboros::is_event_file(name)) fs::rename(e.path(), a / name.substr(0, name.size() - 17));
  }
  ASSERT_EQ(ouroboros::event_file_runs(a.string()), std::set<std::string>{""});
  const size_t before_ids = record_runs(a / "metrics.jsonl").size();
  ASSERT_GE(before_ids, 3u);  // progress at 5 and 6, the checkpoint, the final evaluation

  const std::map<std::string, std::string> before = files_of(c);
  CliRun r = resume(a / "ckpt.pt", "10", " --out-dir " + c.string());
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("(run " + run_of(c) +
                          ": ckpt.pt, metrics.jsonl, TensorBoard event "
                          "files); resuming " +
                          (a / "ckpt.pt").string() + " (run without id)"),
            std::string::npos)
      << r.output;
  EXPECT_TRUE(files_of(c) == before) << c << " changed";  // bytes, not printed

  r = resume(a / "ckpt.pt", "10");
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string now = run_of(a);
  EXPECT_EQ(now.size(), 16u);
  EXPECT_NE(now, id);
  EXPECT_EQ(ouroboros::load_checkpoint((a / "ckpt.pt").string()).step, 10);
  const std::multiset<std::string> runs = record_runs(a / "metrics.jsonl");
  EXPECT_EQ(runs.count(""), before_ids);  // up to step 6, before ids
  EXPECT_EQ(runs.count(now), runs.size() - before_ids);
  EXPECT_GE(runs.count(now), 3u);
  EXPECT_EQ(ouroboros::event_file_runs(a.string()), (std::set<std::string>{"", now}));

  // Without an id, a file in another directory cannot be told apart from a copy of the run.
  ouroboros::save_checkpoint((a / "ckpt.pt").string(), old);
  const fs::path copy = dir_.path() / "copy";
  fs::create_directories(copy);
  std::ofstream(copy / "metrics.jsonl") << without;
  r = resume(a / "ckpt.pt", "10", " --out-dir " + copy.string());
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("holds another run (metrics.jsonl); resuming"), std::string::npos)
      << r.output;
  fs::remove(copy / "metrics.jsonl");
  r = resume(a / "ckpt.pt", "10", " --out-dir " + copy.string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(ouroboros::load_checkpoint((copy / "ckpt.pt").string()).step, 10);
}

}  // namespace
