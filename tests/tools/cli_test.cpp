// label: unit
// The command-line program end to end: every failure is one line naming the problem, a non-zero
// exit and untouched files; a tiny train -> eval -> generate round works and is reproducible.
#include <gtest/gtest.h>

#include "cli_util.h"
#include "test_util.h"

#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

namespace {
namespace fs = std::filesystem;

using ouroboros_test::cli;
using ouroboros_test::CliRun;
using ouroboros_test::CliTest;
using ouroboros_test::read_bytes;
using ouroboros_test::TempDir;
using ouroboros_test::tiny_corpus;
using ouroboros_test::train_flags;

TEST_F(CliTest, MissingDataFile) {
  expect_failure(train_args((dir_.path() / "nope.txt").string()), "corpus not found");
  const fs::path fresh = dir_.path() / "fresh";  // an out_dir that does not exist stays absent
  expect_failure(train_args((dir_.path() / "nope.txt").string(), {{"--out-dir", fresh.string()}}),
                 "corpus not found");
  EXPECT_FALSE(fs::exists(fresh));
}

TEST_F(CliTest, EmptyCorpus) {
  expect_failure(train_args(dir_.write("empty.txt", "").string()), "corpus is empty");
  expect_failure(train_args(dir_.write("blank.txt", " \n\n  \n").string()), "corpus is empty");
}

TEST_F(CliTest, CorpusShorterThanOneWindow) {
  // 40 bytes: the train split (36 tokens) holds no window of block_size+1 = 65 tokens.
  expect_failure(
      train_args(dir_.write("short.txt", tiny_corpus(40)).string(), {{"--block-size", "64"}}),
      "fewer than one window");
  // ~200 bytes at block_size 16: training windows exist, but the ~10-token valid split holds
  // none; this must fail before training, not after it has overwritten the checkpoint.
  expect_failure(train_args(dir_.write("small.txt", tiny_corpus(200)).string()), "valid split has");
}

TEST_F(CliTest, ImpossibleModelConfig) {
  expect_failure(train_args(corpus_.string(), {{"--n-embd", "10"}, {"--n-head", "4"}}),
                 "n_embd 10 is not divisible by n_head 4");
  expect_failure(train_args(corpus_.string(), {{"--dropout", "1.5"}}), "dropout must be in [0, 1)");
}

TEST_F(CliTest, CorruptCheckpoint) {
  expect_failure("eval --checkpoint " + ckpt_.string(), "is corrupt");
  expect_failure("generate --checkpoint " + ckpt_.string(), "is corrupt");
  expect_failure(train_args(corpus_.string(), {{"--resume", ckpt_.string()}}), "is corrupt");
  expect_failure("eval --checkpoint " + (out_ / "missing.pt").string(), "checkpoint not found");
}

TEST_F(CliTest, CheckpointFromAnotherConfigOrVocabulary) {
  const fs::path good = train_good("good");
  // Resume into out_ (whose files must survive) from the good checkpoint.
  const std::string resume = (good / "ckpt.pt").string();
  expect_failure(train_args(corpus_.string(), {{"--resume", resume}, {"--n-layer", "2"}}),
                 "has n_layer 1 but the run asks for 2");
  // Another vocabulary of another size (digits added): reported as such, not as a vocab_size flag.
  const fs::path upper = dir_.write("upper.txt", "0123456789\n" + tiny_corpus(3000, true));
  expect_failure(train_args(upper.string(), {{"--resume", resume}}),
                 "trained with another vocabulary");
}

TEST_F(CliTest, UnknownFlagAndWrongType) {
  expect_failure(train_args(corpus_.string(), {{"--bogus", "3"}}), "--bogus");
  expect_failure(train_args(corpus_.string(), {{"--n-layer", "abc"}}),
                 "--n-layer expects a number, got 'abc'");
  expect_failure(train_args(corpus_.string(), {{"--dropout", "high"}}),
                 "--dropout expects a number, got 'high'");
}

TEST_F(CliTest, TrainEvalGenerateRoundTrip) {
  const fs::path good = train_good("good");
  ASSERT_TRUE(fs::exists(good / "ckpt.pt"));
  ASSERT_TRUE(fs::exists(good / "metrics.jsonl"));

  CliRun eval = cli("eval --checkpoint " + (good / "ckpt.pt").string() + " --json");
  ASSERT_EQ(eval.code, 0) << eval.output;
  ASSERT_EQ(std::count(eval.output.begin(), eval.output.end(), '\n'), 1) << eval.output;
  nlohmann::json j = nlohmann::json::parse(eval.output);
  ASSERT_TRUE(j.is_object()) << eval.output;
  EXPECT_EQ(j["split"], "test");
  const double loss = j["loss"].get<double>();
  EXPECT_GT(loss, 0.5);
  EXPECT_LT(loss, 4.0);  // below ln V of the char vocabulary would need more steps; finite
  EXPECT_NEAR(j["bpc"].get<double>(), loss / std::log(2.0), 1e-9);
  // Test split: 150 bytes -> (150 - 17) / 16 + 1 = 9 windows of 16 targets.
  EXPECT_EQ(j["tokens"].get<int64_t>(), 9 * 16);

  const std::string gen =
      "generate --checkpoint " + (good / "ckpt.pt").string() + " --tokens 20 --seed 1 --prompt the";
  CliRun a = cli(gen), b = cli(gen);
  ASSERT_EQ(a.code, 0) << a.output;
  EXPECT_EQ(a.output, b.output);
  EXPECT_EQ(a.output.rfind("the", 0), 0u) << a.output;    // the prompt comes back first
  EXPECT_GE(a.output.size(), 3u + 20u + 1u) << a.output;  // 20 tokens of >= 1 byte, newline
}

TEST_F(CliTest, HelpForEachSubcommandExitsZero) {
  for (const std::string sub : {"train", "eval", "generate", "plan"}) {
    CliRun r = cli(sub + " --help");
    EXPECT_EQ(r.code, 0) << sub << ": " << r.output;
    EXPECT_NE(r.output.find("Usage"), std::string::npos) << sub << ": " << r.output;
  }
  EXPECT_NE(cli("train --help").output.find("--n-layer"), std::string::npos);
  EXPECT_NE(cli("generate --help").output.find("--temperature"), std::string::npos);
  CliRun none = cli("");
  EXPECT_NE(none.code, 0);
  EXPECT_EQ(std::count(none.output.begin(), none.output.end(), '\n'), 1) << none.output;
}

}  // namespace
