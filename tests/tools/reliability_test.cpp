// label: unit
// What a skeptical first hour tries, kept found: a reused out-dir, two runs in one out-dir,
// Ctrl-C, a diverging run, damaged checkpoints, impossible sizes, config files with trailing
// content, and the one-line messages of bad flags.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/checkpoint.h"
#include "test_util.h"

namespace {
namespace fs = std::filesystem;

using ouroboros_test::cli;
using ouroboros_test::CliRun;
using ouroboros_test::CliTest;
using ouroboros_test::read_bytes;
using ouroboros_test::run_command;
using ouroboros_test::TempDir;
using ouroboros_test::tiny_corpus;
using ouroboros_test::train_flags;

// A finished run's out-dir is refused, with the ways out in the message; --overwrite replaces it.
TEST_F(CliTest, ReusedOutDirIsRefusedUnlessOverwritten) {
  const fs::path out = train_good("run");
  const std::string ckpt = read_bytes(out / "ckpt.pt");
  CliRun again = cli(
      train_flags({{"--data", corpus_.string()}, {"--out-dir", out.string()}, {"--steps", "2"}}));
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.output.find("already holds a run (ckpt.pt, metrics.jsonl)"), std::string::npos)
      << again.output;
  EXPECT_NE(again.output.find("--overwrite"), std::string::npos) << again.output;
  EXPECT_EQ(read_bytes(out / "ckpt.pt"), ckpt);
  CliRun replaced = cli(
      train_flags({{"--data", corpus_.string()}, {"--out-dir", out.string()}, {"--steps", "2"}}) +
      " --overwrite");
  EXPECT_EQ(replaced.code, 0) << replaced.output;
  EXPECT_NE(read_bytes(out / "ckpt.pt"), ckpt);
}

// An out-dir in use by a live run is refused: two runs never share ckpt.pt or the metrics.
TEST(Reliability, OutDirInUseIsRefused) {
  TempDir dir;
  ouroboros::Config cfg = ouroboros_test::on_corpus(ouroboros_test::tiny_config(),
                                                    dir.write("c.txt", tiny_corpus(4000)));
  cfg.train.steps = 2;
  cfg.model.block_size = 16;
  cfg.train.out_dir = (dir.path() / "out").string();
  fs::create_directories(cfg.train.out_dir);
  ouroboros::TrainOptions quiet;
  quiet.quiet = true;
  {
    ouroboros::DirLock other_run(cfg.train.out_dir);
    try {
      ouroboros::train(cfg, quiet);
      FAIL() << "a second run shared the out-dir";
    } catch (const ouroboros::Error& e) {
      EXPECT_NE(std::string(e.what()).find("is in use by another training run"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(ouroboros::train(cfg, quiet).steps, 2);  // free again once the other run is gone
}

// Ctrl-C: the run finishes its current steps, writes a checkpoint, says where and exits 130; the
// resumed run continues from it, and the metrics hold each step once.
TEST_F(CliTest, InterruptWritesACheckpointAndResumeContinues) {
  const fs::path out = dir_.path() / "interrupted";
  const std::string args = train_flags({{"--data", corpus_.string()},
                                        {"--out-dir", out.string()},
                                        {"--steps", "100000"},
                                        {"--log-interval", "10"}});
  const fs::path log = dir_.path() / "interrupted.log";
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string cmd =
        "exec " + std::string(OUROBOROS_BINARY) + " " + args + " > " + log.string() + " 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait for a progress line past step 20, so there is a run to keep.
  for (int i = 0; i < 600 && read_bytes(log).find("step     30/") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string output = read_bytes(log);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 130) << output;
  const size_t at = output.find("stopped by signal at step ");
  ASSERT_NE(at, std::string::npos) << output;
  const int64_t step = std::stoll(output.substr(at + 26));
  EXPECT_GE(step, 30);
  const ouroboros::Checkpoint ck = ouroboros::load_checkpoint((out / "ckpt.pt").string());
  EXPECT_EQ(ck.step, step);

  CliRun resumed = cli(train_flags({{"--data", corpus_.string()},
                                    {"--out-dir", out.string()},
                                    {"--steps", std::to_string(step + 10)},
                                    {"--log-interval", "10"}}) +
                       " --resume " + (out / "ckpt.pt").string());
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  std::ifstream metrics(out / "metrics.jsonl");
  std::vector<int64_t> steps;
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("split")) steps.push_back(j["step"].get<int64_t>());
  }
  for (size_t i = 1; i < steps.size(); ++i) EXPECT_LT(steps[i - 1], steps[i]) << "record " << i;
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps.back(), step + 10);
}

// A diverging run stops at the first non-finite loss with one line naming the step, exits
// non-zero and writes no checkpoint from broken weights.
TEST_F(CliTest, DivergingRunStopsWithOneLine) {
  const fs::path out = dir_.path() / "diverged";
  CliRun r = cli(train_flags({{"--data", corpus_.string()},
                              {"--out-dir", out.string()},
                              {"--optimizer", "sgd"},
                              {"--lr", "1e6"},
                              {"--grad-clip", "0"},
                              {"--steps", "50"}}));
  EXPECT_EQ(r.code, 1) << r.output;
  const size_t at = r.output.find("error: ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const std::string line = r.output.substr(at);
  EXPECT_NE(line.find("step"), std::string::npos) << line;
  EXPECT_NE(line.find("non-finite"), std::string::npos) << line;
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
  EXPECT_FALSE(fs::exists(out / "ckpt.pt"));
}

// Overwritten tensor bytes no longer load as a model that evaluates to nan.
TEST(Reliability, DamagedTensorBytesFailTheChecksum) {
  TempDir dir;
  ouroboros::Checkpoint ck;
  ck.config = ouroboros_test::tiny_config();
  ck.model.add("wte.weight", at::full({64}, 1.2345f));
  const std::string path = (dir.path() / "ckpt.pt").string();
  ouroboros::save_checkpoint(path, ck);
  EXPECT_EQ(ouroboros::load_checkpoint(path).model.at("wte.weight").sum().item<float>(),
            at::full({64}, 1.2345f).sum().item<float>());
  std::string bytes = read_bytes(path);
  const float one = 1.2345f;
  const std::string pattern(reinterpret_cast<const char*>(&one), sizeof one);
  const size_t at = bytes.find(pattern + pattern);
  ASSERT_NE(at, std::string::npos);
  const float other = -7.0f;
  bytes.replace(at, sizeof other, std::string(reinterpret_cast<const char*>(&other), sizeof other));
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  try {
    ouroboros::load_checkpoint(path);
    FAIL() << "a damaged checkpoint loaded";
  } catch (const ouroboros::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("wte.weight does not match its checksum"),
              std::string::npos)
        << e.what();
  }
}

// Inputs the fuzzers found, kept: a 31 kB checkpoint whose pickle names a memo index of
// billions (libtorch's unpickler would grow its memo to it, 24 GB), and one whose tensor of 8192
// bytes names the record of a 32-byte tensor (the unpickler sized the storage by the pickle's
// element count, and the checksum read past the record) are refused as corrupt.
TEST(Reliability, FuzzFindingsStayFixed) {
  for (const char* name : {"checkpoint_memo_index.bin", "checkpoint_storage_past_record.bin"}) {
    const std::string file = std::string(OUROBOROS_SOURCE_DIR) + "/tests/fuzz/regressions/" + name;
    ASSERT_TRUE(fs::exists(file));
    try {
      ouroboros::load_checkpoint(file);
      FAIL() << name << ": a damaged checkpoint loaded";
    } catch (const ouroboros::CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find("is corrupt"), std::string::npos) << e.what();
    }
  }
}

// Sizes past the machine are refused at once with the estimate; deep models plan quickly.
TEST_F(CliTest, ImpossibleSizesAreRefusedUpFront) {
  expect_failure(train_args(corpus_.string(),
                            {{"--n-layer", "100000"}, {"--n-embd", "1024"}, {"--n-head", "8"}}),
                 "more than this machine's");
  CliRun plan = cli("plan --modules 3 --n-layer 100000 --ticks 0");
  EXPECT_EQ(plan.code, 0) << plan.output;
  EXPECT_NE(plan.output.find("module 2  blocks ["), std::string::npos) << plan.output;
  // Past any model, or past what the machine can run: refused before anything grows.
  expect_failure("plan --modules 3 --n-layer 2000000000", "n_layer 2000000000 is more than");
  expect_failure("plan --modules 3 --ticks 2000000000", "--ticks 2000000000 is more than 10000");
  // An Ouroboros run that would fit with recomputation says so: at the first batch (doubling)
  // whose estimate passes this machine's memory, --recompute delayed keeps well under it.
  using namespace ouroboros;
  Config c;
  c.model.n_layer = 16;
  c.model.n_head = 2;
  c.model.n_embd = 16;
  c.model.block_size = 16;
  c.model.vocab_size = 64;
  c.engine.modules = 4;
  const double have = physical_memory_bytes();
  for (c.train.batch_size = 1024; c.train.batch_size < (int64_t{1} << 24);) {
    c.train.batch_size *= 2;
    if (estimated_memory_bytes(c, GPT(c.model)) > have) break;
  }
  Config rc = c;
  rc.engine.recompute = Recompute::kDelayed;
  const std::string B = std::to_string(c.train.batch_size);
  ASSERT_LT(estimated_memory_bytes(rc, GPT(rc.model)), 0.8 * have) << "batch " << B;
  expect_failure(
      train_args(corpus_.string(), {{"--n-layer", "16"}, {"--batch-size", B}, {"--modules", "4"}}),
      "add --recompute delayed (about ");
  expect_failure(train_args(corpus_.string(), {{"--threads", "100000"}}),
                 "threads 100000 is more than this machine can use");
  expect_failure(train_args(corpus_.string(), {{"--timeout", "1e300"}}),
                 "timeout must be > 0 and at most 1e+06 seconds, got 1e+300");
}

// A checkpoint is data from anywhere: resuming one writes next to it (or where the command line
// says), never where its stored config points, and never over a file that is not a metrics file.
TEST_F(CliTest, ResumeTakesNoPathFromTheCheckpoint) {
  const fs::path run = train_good("run");
  const std::string ckpt = (run / "ckpt.pt").string();
  ouroboros::Checkpoint crafted = ouroboros::load_checkpoint(ckpt);
  const fs::path victim = dir_.write("victim.txt", "a file of the user's\n");
  const fs::path elsewhere = dir_.path() / "elsewhere";
  crafted.config.train.metrics = victim.string();
  crafted.config.train.out_dir = elsewhere.string();
  ouroboros::save_checkpoint(ckpt, crafted);
  const std::string more = std::to_string(crafted.step + 2);
  expect_failure("train --resume " + ckpt + " --steps " + more + " --metrics " + victim.string(),
                 "metrics file " + victim.string() + " holds something other than a run's");
  EXPECT_EQ(read_bytes(victim), "a file of the user's\n");
  CliRun r = cli("train --resume " + ckpt + " --steps " + more);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(read_bytes(victim), "a file of the user's\n");
  EXPECT_FALSE(fs::exists(elsewhere));
  EXPECT_EQ(ouroboros::load_checkpoint(ckpt).step, crafted.step + 2);
  EXPECT_NE(read_bytes(run / "metrics.jsonl").find("\"step\":" + more), std::string::npos)
      << read_bytes(run / "metrics.jsonl");
}

TEST_F(CliTest, ConfigFileWithTrailingContentIsRefused) {
  const fs::path two = dir_.write("two.json", "{\"train\": {\"steps\": 3}}\n{\"train\": {}}\n");
  expect_failure(train_args(corpus_.string()) + " --config " + two.string(), "is not valid JSON");
  const fs::path list = dir_.write("list.json", "[1, 2]");
  expect_failure(train_args(corpus_.string()) + " --config " + list.string(),
                 "holds a array, not a JSON object");
}

// Each bad flag gets one line naming the value and the fix, before any data is read.
TEST_F(CliTest, BadFlagsAreOneLineErrors) {
  const std::string missing = (dir_.path() / "nope.txt").string();
  expect_failure(train_args(missing, {{"--beta1", "1.5"}}), "beta1 must be in [0, 1), got 1.5");
  expect_failure(train_args(missing, {{"--weight-decay", "-1"}}), "weight_decay must be >= 0");
  expect_failure(train_args(missing, {{"--partition", "2"}}), "needs modules >= 2");
  expect_failure("eval --checkpoint " + ckpt_.string() + " --batch 0",
                 "must be an integer >= 1, got 0");
  expect_failure("generate --checkpoint " + ckpt_.string() + " --top-k -3",
                 "must be an integer >= 0, got -3");
  for (const char* t : {"nan", "inf", "-1"}) {
    expect_failure("generate --checkpoint " + ckpt_.string() + " --temperature " + t,
                   std::string("temperature must be > 0 and at most 1e6, got ") + t);
  }
  expect_failure(train_args(missing, {{"--optimizer", "adam"}, {"--muon-lr", "0.02"}}),
                 "a --muon-* option is set but the optimizer is adam");
  expect_failure("plan --ticks -1", "must be an integer >= 0, got -1");
  expect_failure("plan --link-gbps 0", "--link-gbps: must be a number > 0, got 0");
  expect_failure("plan --link-gbps 1 --link-latency-ms -2", "must be a number >= 0, got -2");
  expect_failure("plan --link-latency-ms 1", "--link-latency-ms needs --link-gbps");
  expect_failure("trian --steps 3", "unknown subcommand 'trian'");
  expect_failure(train_args(corpus_.string()) + " --resume " + out_.string(),
                 "is a directory without manifest.pt (hint: give the checkpoint file, e.g.");
  CliRun help = cli("help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.output.find("train"), std::string::npos) << help.output;
  CliRun version = cli("--version");
  EXPECT_EQ(version.code, 0);
  EXPECT_NE(version.output.find("0."), std::string::npos) << version.output;
}

// A checkpoint resumed under another layout says in one line what it carries over.
TEST_F(CliTest, ResumeUnderAnotherLayoutSaysWhatCarriesOver) {
  const fs::path out = dir_.path() / "k3";
  const auto flags = [&](const std::string& modules, const std::string& steps) {
    return train_flags({{"--data", corpus_.string()},
                        {"--out-dir", out.string()},
                        {"--modules", modules},
                        {"--n-layer", "2"},
                        {"--steps", steps}});
  };
  CliRun r = cli(flags("3", "6"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = cli(flags("2", "8") + " --resume " + (out / "ckpt.pt").string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming " + (out / "ckpt.pt").string() +
                          " (--mode ouroboros --modules 3 --partition auto --micro-batches auto)"
                          " as --mode ouroboros --modules 2 --partition auto --micro-batches auto;"
                          " weights and optimizer moments carried "
                          "by name, dropout generators afresh\n"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(ouroboros::load_checkpoint((out / "ckpt.pt").string()).generator_states.size(), 2u);
}

// An Ouroboros run with its own prediction horizon continues as plain backprop, where nothing is
// predicted; a horizon asked for there is refused.
// A run trained with every option for delayed gradients set explicitly continues as plain backprop:
// the checkpoint's options do not block it, and the same options given again are refused.
TEST_F(CliTest, ResumeAsPlainBackpropLeavesTheCheckpointsDelayOptions) {
  const fs::path out = dir_.path() / "horizon";
  const auto flags = [&](const std::string& modules, const std::string& steps) {
    return train_flags({{"--data", corpus_.string()},
                        {"--out-dir", out.string()},
                        {"--modules", modules},
                        {"--n-layer", "2"},
                        {"--steps", steps}});
  };
  CliRun r = cli(flags("3", "4") +
                 " --predict-scale 2 --weight-predict optimizer --stale-lr pipemare"
                 " --stale-lr-ticks 7 --sync-warmup 2");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto saved = ouroboros::load_checkpoint((out / "ckpt.pt").string()).config.engine;
  EXPECT_EQ(saved.stale_lr, ouroboros::StaleLr::kPipeMare);
  EXPECT_EQ(saved.sync_warmup, 2);
  const std::string resume = " --resume " + (out / "ckpt.pt").string();
  for (const auto& [again, says] : std::vector<std::pair<std::string, std::string>>{
           {" --predict-scale 3", "--predict-scale sets the horizon of weight prediction"},
           {" --weight-predict optimizer", "--weight-predict optimizer acts on delayed gradients"},
           {" --stale-lr pipemare", "--stale-lr pipemare acts on delayed gradients"}}) {
    r = cli(flags("1", "6") + resume + again);
    EXPECT_NE(r.code, 0) << again;
    EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
  }
  r = cli(flags("1", "6") + resume);
  ASSERT_EQ(r.code, 0) << r.output;
  const auto resumed = ouroboros::load_checkpoint((out / "ckpt.pt").string());
  EXPECT_EQ(resumed.step, 6);
  EXPECT_EQ(resumed.config.engine.stale_lr, ouroboros::StaleLr::kNone);
  EXPECT_EQ(resumed.config.engine.sync_warmup, 0);
  EXPECT_EQ(resumed.config.engine.predict_scale, ouroboros::EngineConfig{}.predict_scale);
}

// Sampling never produces <unk>, and a prompt outside the vocabulary is said to be.
TEST_F(CliTest, GenerateWarnsOfUnknownPromptSymbolsAndNeverSamplesUnk) {
  const fs::path out = train_good("sampled");
  CliRun r = cli("generate --checkpoint " + (out / "ckpt.pt").string() +
                 " --prompt QZ --tokens 200 --temperature 5");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("warning: 2 prompt symbols are not in the checkpoint's vocabulary"),
            std::string::npos)
      << r.output;
  // The sample follows the warning line; its prompt decodes as two U+FFFD, what follows as text.
  const std::string sample = r.output.substr(r.output.find('\n') + 1);
  ASSERT_EQ(sample.rfind("\xEF\xBF\xBD\xEF\xBF\xBD", 0), 0u) << sample;
  EXPECT_EQ(sample.find("\xEF\xBF\xBD", 6), std::string::npos) << sample;
}

}  // namespace

// The writer killed (SIGKILL) in the middle of writing a checkpoint: the last checkpoint stays
// byte for byte, and the next run clears the half-written temporary file.
TEST_F(CliTest, WriterKilledMidCheckpointKeepsTheLastOne) {
  const fs::path out = dir_.path() / "killed";
  const fs::path ckpt = out / "ckpt.pt";
  const auto flags = [&](const std::string& steps) {
    return train_flags(
        {{"--data", corpus_.string()}, {"--out-dir", out.string()}, {"--steps", steps}});
  };
  CliRun first = cli(flags("6"));
  ASSERT_EQ(first.code, 0) << first.output;
  const std::string before = read_bytes(ckpt);
  const auto partial = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator(out)) {
      n += e.path().filename().string().rfind("ckpt.pt.tmp.", 0) == 0;
    }
    return n;
  };
  const auto [text, code] = run_command("exec env OUROBOROS_FAULT=kill:checkpoint-write:0 " +
                                        std::string(OUROBOROS_BINARY) + " " + flags("12") +
                                        " --resume " + ckpt.string() + " 2>&1");
  EXPECT_EQ(code, -1) << text;  // killed by a signal
  EXPECT_EQ(partial(), 1);
  EXPECT_EQ(read_bytes(ckpt), before);
  EXPECT_EQ(ouroboros::load_checkpoint(ckpt.string()).step, 6);

  CliRun again = cli(flags("12") + " --resume " + ckpt.string());
  ASSERT_EQ(again.code, 0) << again.output;
  EXPECT_EQ(ouroboros::load_checkpoint(ckpt.string()).step, 12);
  EXPECT_EQ(partial(), 0);
}
