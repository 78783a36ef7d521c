// Helpers of the command-line tests: a tiny corpus, the flags of a tiny run, and a fixture whose
// out-dir already holds a run that every failing command must leave alone.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace ouroboros_test {

namespace fs = std::filesystem;

// Sentences from a tiny grammar, as in trainer_test; `upper` gives a disjoint vocabulary.
inline std::string tiny_corpus(size_t bytes, bool upper = false) {
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

// GPT-2's bytes_to_unicode, as UTF-8.
inline std::string gpt2_byte_char(int b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  int cp = b;
  if (!printable) {
    cp = 256;
    for (int k = 0; k < b; ++k)
      if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || k >= 0xAE)) ++cp;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// A gpt2 tokenizer: a byte-level BPE tokenizer.json whose merges spell the words of tiny_corpus,
// each with its leading space ("Ġ"), and <|endoftext|> as an added token.
inline std::string tiny_gpt2_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  int32_t next = 0;
  for (int b = 0; b < 256; ++b) vocab[gpt2_byte_char(b)] = next++;
  nlohmann::json merges = nlohmann::json::array();
  for (const std::string word : {"the", "cat", "sat", "on", "mat", "dog", "ran", "to", "park",
                                 "bird", "looked", "at", "tree", "my"}) {
    std::string left = gpt2_byte_char(' ');
    for (char c : word) {
      const std::string right(1, c);
      if (vocab.contains(left + right)) {
        left += right;
        continue;
      }
      merges.push_back(left + " " + right);
      vocab[left + right] = next++;
      left += right;
    }
  }
  const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
  return nlohmann::json{
      {"added_tokens",
       {{{"id", next}, {"content", "<|endoftext|>"}, {"special", true}, {"normalized", false}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"decoder", byte_level},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}}
      .dump();
}

// The flags of a tiny training run; `changes` replaces or adds flags (CLI11 refuses repeats).
inline std::string train_flags(const std::map<std::string, std::string>& changes) {
  std::map<std::string, std::string> flags = {
      {"--format", "text"},    {"--n-layer", "1"},    {"--n-head", "2"}, {"--n-embd", "16"},
      {"--block-size", "16"},  {"--batch-size", "4"}, {"--steps", "6"},  {"--eval-interval", "0"},
      {"--log-interval", "5"}, {"--threads", "1"}};
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

}  // namespace ouroboros_test
