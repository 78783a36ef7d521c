// label: unit
// The command line with a bpe tokenizer: a tiny run trains it to --vocab-size pieces, eval and
// generate work from the checkpoint alone, and a missing --vocab-size is one line.
#include <gtest/gtest.h>

#include "cli_util.h"
#include "test_util.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "ouroboros/data/tokenizer.h"

namespace {
namespace fs = std::filesystem;

using ouroboros_test::cli;
using ouroboros_test::CliRun;
using ouroboros_test::CliTest;

class SubwordCli : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    std::string why;
    if (!ouroboros::Tokenizer::subword_available(&why)) GTEST_SKIP() << why;
  }
};

TEST_F(SubwordCli, TrainEvalGenerateWithBpe) {
  const fs::path out = dir_.path() / "bpe";
  CliRun train = cli(ouroboros_test::train_flags({{"--data", corpus_.string()},
                                                  {"--out-dir", out.string()},
                                                  {"--tokenizer", "bpe"},
                                                  {"--vocab-size", "300"}}));
  ASSERT_EQ(train.code, 0) << train.output;
  EXPECT_NE(train.output.find("bpe tokenizer, vocab 300"), std::string::npos) << train.output;

  const std::string ckpt = (out / "ckpt.pt").string();
  CliRun eval = cli("eval --checkpoint " + ckpt + " --json");
  ASSERT_EQ(eval.code, 0) << eval.output;
  ASSERT_EQ(std::count(eval.output.begin(), eval.output.end(), '\n'), 1) << eval.output;
  const nlohmann::json j = nlohmann::json::parse(eval.output);
  EXPECT_GT(j["loss"].get<double>(), 0.0);
  EXPECT_LT(j["loss"].get<double>(), 7.0);  // ln 300 = 5.7 for a uniform guess; finite
  EXPECT_GT(j["tokens"].get<int64_t>(), 0);

  CliRun gen = cli("generate --checkpoint " + ckpt + " --tokens 12 --seed 1 --prompt the");
  ASSERT_EQ(gen.code, 0) << gen.output;
  EXPECT_EQ(gen.output.rfind("the", 0), 0u) << gen.output;  // the prompt comes back first
  EXPECT_GT(gen.output.size(), 3u + 12u) << gen.output;     // 12 pieces of >= 1 byte each
}

// Refused before the corpus is read, in any build.
TEST_F(CliTest, BpeWithoutVocabularySizeIsOneLine) {
  expect_failure(train_args(corpus_.string(), {{"--tokenizer", "bpe"}}), "--vocab-size N");
}

}  // namespace
