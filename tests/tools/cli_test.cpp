// label: unit
// The command-line program end to end: every failure is one line naming the problem, a non-zero
// exit and untouched files; a tiny train -> eval -> generate round works and is reproducible.
#include <gtest/gtest.h>

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

using ouroboros_test::TempDir;
using ouroboros_test::read_bytes;
using ouroboros_test::cli;
using ouroboros_test::CliRun;

// Sentences from a tiny grammar, as in trainer_test; `upper` gives a disjoint vocabulary.
std::string tiny_corpus(size_t bytes, bool upper = false) {
  const std::vector<std::string> words = {"the cat sat on the mat.\n", "a dog ran to the park.\n",
                                          "my bird looked at a tree.\n"};
  std::mt19937 rng(3);
  std::string text;
  while (text.size() < bytes) text += words[rng() % words.size()];
  if (upper) {
    for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return text;
}

// The flags of a tiny training run; `changes` replaces or adds flags (CLI11 refuses repeats).
std::string train_flags(const std::map<std::string, std::string>& changes) {
  std::map<std::string, std::string> flags = {
      {"--format", "text"},    {"--n-layer", "1"},    {"--n-head", "2"},
      {"--n-embd", "16"},      {"--block-size", "16"}, {"--batch-size", "4"},
      {"--steps", "6"},        {"--eval-interval", "0"}, {"--log-interval", "5"},
      {"--threads", "1"}};
  for (const auto& [flag, value] : changes) flags[flag] = value;
  std::string args = "train";
  for (const auto& [flag, value] : flags) args += " " + flag + " " + value;
  return args;
}

// A directory with a corpus and an out_dir that already holds a checkpoint and metrics, whose
// bytes every failing command must leave alone.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    corpus_ = dir_.write("corpus.txt", tiny_corpus(3000));
    out_ = dir_.path() / "out";
    ckpt_ = dir_.write("out/ckpt.pt", "previous checkpoint bytes");
    metrics_ = dir_.write("out/metrics.jsonl", "{\"step\": 1, \"loss\": 9.0}\n");
  }

  // Trains the tiny model for a few steps into dir/name and returns the directory.
  fs::path train_good(const std::string& name) {
    const fs::path out = dir_.path() / name;
    CliRun r = cli(train_flags({{"--data", corpus_.string()}, {"--out-dir", out.string()}}));
    EXPECT_EQ(r.code, 0) << r.output;
    return out;
  }

  // A failed command: non-zero exit, one line "error: ..." containing `expected`, and the
  // files in out_dir exactly as before.
  void expect_failure(const std::string& args, const std::string& expected) {
    const std::string ckpt_before = read_bytes(ckpt_), metrics_before = read_bytes(metrics_);
    CliRun r = cli(args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << args << "\n" << r.output;
    EXPECT_EQ(r.output.rfind("error: ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos)
        << "expected '" << expected << "' in: " << r.output;
    EXPECT_EQ(read_bytes(ckpt_), ckpt_before) << args;
    EXPECT_EQ(read_bytes(metrics_), metrics_before) << args;
    EXPECT_EQ(std::distance(fs::directory_iterator(out_), fs::directory_iterator()), 2) << args;
  }

  // A tiny training run on `data` into out_, with changed or extra flags.
  std::string train_args(const std::string& data,
                         std::map<std::string, std::string> changes = {}) const {
    changes.emplace("--data", data);
    changes.emplace("--out-dir", out_.string());
    return train_flags(changes);
  }

  TempDir dir_;
  fs::path corpus_, out_, ckpt_, metrics_;
};

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
  expect_failure(train_args(dir_.write("short.txt", tiny_corpus(40)).string(),
                            {{"--block-size", "64"}}),
                 "fewer than one window");
  // ~200 bytes at block_size 16: training windows exist, but the ~10-token valid split holds
  // none; this must fail before training, not after it has overwritten the checkpoint.
  expect_failure(train_args(dir_.write("small.txt", tiny_corpus(200)).string()),
                 "valid split has");
}

TEST_F(CliTest, ImpossibleModelConfig) {
  expect_failure(train_args(corpus_.string(), {{"--n-embd", "10"}, {"--n-head", "4"}}),
                 "n_embd 10 is not divisible by n_head 4");
  expect_failure(train_args(corpus_.string(), {{"--dropout", "1.5"}}),
                 "dropout must be in [0, 1)");
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

  const std::string gen = "generate --checkpoint " + (good / "ckpt.pt").string() +
                          " --tokens 20 --seed 1 --prompt the";
  CliRun a = cli(gen), b = cli(gen);
  ASSERT_EQ(a.code, 0) << a.output;
  EXPECT_EQ(a.output, b.output);
  EXPECT_EQ(a.output.rfind("the", 0), 0u) << a.output;  // the prompt comes back first
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
