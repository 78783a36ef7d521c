// label: unit
// The gpt2 tokenizer from the command line: a tiny run trained with --tokenizer-file, then eval,
// generate, resume and export from its checkpoint, which keeps the tokenizer whole; and one-line
// refusals of a missing, damaged or foreign file and of flags that cannot take effect.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "ouroboros/train/checkpoint.h"

namespace ouroboros {
namespace {

namespace fs = std::filesystem;
using ouroboros_test::cli;
using ouroboros_test::CliRun;

class Gpt2Cli : public ouroboros_test::CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    tokenizer_ = dir_.write("tok/tokenizer.json", ouroboros_test::tiny_gpt2_tokenizer_json());
  }
  // The 256 bytes, one token per merge, and <|endoftext|>.
  static int64_t vocab_size() {
    return 256 +
           static_cast<int64_t>(
               nlohmann::json::parse(ouroboros_test::tiny_gpt2_tokenizer_json())["model"]["merges"]
                   .size()) +
           1;
  }
  fs::path tokenizer_;
};

TEST_F(Gpt2Cli, TrainsEvaluatesGeneratesResumesAndExportsFromATokenizerFile) {
  const fs::path run = dir_.path() / "run";
  CliRun train = cli(ouroboros_test::train_flags({{"--data", corpus_.string()},
                                                  {"--tokenizer-file", tokenizer_.string()},
                                                  {"--out-dir", run.string()}}));
  ASSERT_EQ(train.code, 0) << train.output;
  const Tokenizer tok = Tokenizer::from_file(tokenizer_.string());
  ASSERT_EQ(tok.vocab_size(), vocab_size());
  EXPECT_NE(train.output.find("gpt2 tokenizer, vocab " + std::to_string(vocab_size())),
            std::string::npos)
      << train.output;

  const Checkpoint ck = load_checkpoint((run / "ckpt.pt").string());
  EXPECT_EQ(ck.tokenizer.kind(), "gpt2");
  EXPECT_EQ(ck.tokenizer.vocab(), tok.vocab());
  EXPECT_EQ(ck.tokenizer.model_proto(), tok.model_proto());
  EXPECT_EQ(ck.tokenizer.encode(" the cat<|endoftext|>"), tok.encode(" the cat<|endoftext|>"));
  EXPECT_EQ(ck.config.data.tokenizer_file, tokenizer_.string());
  EXPECT_EQ(ck.config.model.vocab_size, vocab_size());

  // eval and generate need only the checkpoint, even once the tokenizer file is gone.
  fs::remove(tokenizer_);
  CliRun eval = cli("eval --checkpoint " + (run / "ckpt.pt").string() + " --json");
  ASSERT_EQ(eval.code, 0) << eval.output;
  EXPECT_NE(eval.output.find("\"perplexity\""), std::string::npos) << eval.output;
  CliRun other = cli("eval --checkpoint " + (run / "ckpt.pt").string() + " --tokenizer-file x");
  EXPECT_NE(other.code, 0);
  EXPECT_NE(other.output.find("cannot change it"), std::string::npos) << other.output;
  CliRun gen = cli("generate --checkpoint " + (run / "ckpt.pt").string() +
                   " --tokens 12 --seed 1 --prompt the");
  ASSERT_EQ(gen.code, 0) << gen.output;
  EXPECT_EQ(gen.output.rfind("the", 0), 0u) << gen.output;

  dir_.write("tok/tokenizer.json", ouroboros_test::tiny_gpt2_tokenizer_json());
  CliRun resume = cli(ouroboros_test::train_flags({{"--data", corpus_.string()},
                                                   {"--tokenizer-file", tokenizer_.string()},
                                                   {"--out-dir", run.string()},
                                                   {"--steps", "8"},
                                                   {"--resume", (run / "ckpt.pt").string()}}));
  ASSERT_EQ(resume.code, 0) << resume.output;
  EXPECT_EQ(load_checkpoint((run / "ckpt.pt").string()).step, 8);

  const fs::path hf = dir_.path() / "hf";
  CliRun exported = cli("export --checkpoint " + (run / "ckpt.pt").string() +
                        " --format hf --out " + hf.string());
  ASSERT_EQ(exported.code, 0) << exported.output;
  std::ifstream in(hf / "tokenizer.json");
  std::ostringstream text;
  text << in.rdbuf();
  EXPECT_EQ(nlohmann::json::parse(text.str()), nlohmann::json::parse(tok.model_proto()));
  std::ifstream config_in(hf / "config.json");
  const nlohmann::json config = nlohmann::json::parse(config_in);
  EXPECT_EQ(config.at("eos_token_id"), vocab_size() - 1);  // <|endoftext|>
}

TEST_F(Gpt2Cli, RefusesWhatCannotTakeEffectInOneLine) {
  const std::string corpus = corpus_.string();
  expect_failure(train_args(corpus, {{"--tokenizer", "gpt2"}}),
                 "tokenizer gpt2 needs a tokenizer file");
  expect_failure(
      train_args(corpus, {{"--tokenizer", "char"}, {"--tokenizer-file", tokenizer_.string()}}),
      "--tokenizer-file is set but the tokenizer is char");
  expect_failure(train_args(corpus, {{"--tokenizer-file", (dir_.path() / "no.json").string()}}),
                 "does not exist");
  const fs::path damaged =
      dir_.write("damaged.json", ouroboros_test::tiny_gpt2_tokenizer_json().substr(0, 300));
  expect_failure(train_args(corpus, {{"--tokenizer-file", damaged.string()}}), "is not valid JSON");
  nlohmann::json word = nlohmann::json::parse(ouroboros_test::tiny_gpt2_tokenizer_json());
  word["model"]["type"] = "WordLevel";
  const fs::path foreign = dir_.write("word.json", word.dump());
  expect_failure(train_args(corpus, {{"--tokenizer-file", foreign.string()}}),
                 "its model is WordLevel, not BPE");
  // The vocabulary's size is the file's.
  expect_failure(
      train_args(corpus, {{"--tokenizer-file", tokenizer_.string()}, {"--vocab-size", "500"}}),
      "vocab_size 500 does not match the tokenizer's " + std::to_string(vocab_size()));
}

}  // namespace
}  // namespace ouroboros
