// label: unit
// Transformer-XL from the command line: presets are listed and applied (flags override them),
// unknown presets are one-line errors, and a tiny train -> eval -> generate round works with
// Ouroboros (K = 3) on a word-level corpus with the adaptive softmax.
#include <gtest/gtest.h>

#include "test_util.h"

#include <sys/wait.h>

#include <cstdio>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

namespace {

using ouroboros_test::cli;
using ouroboros_test::CliRun;

TEST(XLCli, HelpListsThePresets) {
  CliRun r = cli("train --help");
  ASSERT_EQ(r.code, 0) << r.output;
  for (const char* name : {"enwik8-base", "text8-base", "wt103-base", "demo-xl"}) {
    EXPECT_NE(r.output.find(name), std::string::npos) << name;
  }
  EXPECT_NE(r.output.find("--mem-len"), std::string::npos);
}

TEST(XLCli, PresetFillsTheConfigAndFlagsOverrideIt) {
  CliRun r = cli("plan --preset enwik8-base --ticks 0");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("K = 1"), std::string::npos) << r.output;
  r = cli("plan --preset demo-xl --ticks 0");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("K = 3 modules on 2 workers"), std::string::npos) << r.output;
  r = cli("plan --preset demo-xl --modules 4 --ticks 0");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("K = 4 modules on 3 workers"), std::string::npos) << r.output;

  r = cli("train --preset enwik8-large");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.output,
            "error: unknown preset 'enwik8-large' (hint: use one of enwik8-base | "
            "text8-base | wt103-base | demo-xl)\n");
  r = cli("train --model transformer --steps 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("unknown model 'transformer'"), std::string::npos) << r.output;
}

TEST(XLCli, WordLevelAdaptiveRoundTripWithOuroboros) {
  ouroboros_test::TempDir dir;
  std::mt19937 rng(5);
  std::string text;
  const std::vector<std::string> words = {"the", "cat", "sat",  "on",   "a",    "mat",    "dog",
                                          "ran", "to",  "park", "bird", "tree", "looked", "at"};
  for (int line = 0; line < 400; ++line) {
    for (int w = 0; w < 8; ++w) text += words[rng() % words.size()] + " ";
    text += "\n";
  }
  auto corpus = dir.write("corpus.txt", text);
  const std::string out = (dir.path() / "run").string();
  CliRun r = cli("train --model transformer-xl --data " + corpus.string() +
                 " --format text --tokenizer word --n-layer 3 --n-embd 16 --n-head 2"
                 " --block-size 8 --mem-len 8 --batch-size 4 --steps 40 --warmup-steps 0 --lr 1e-2"
                 " --eval-interval 20"
                 " --eval-batches 2 --adaptive-cutoffs 4,8 --div-val 2 --modules 3"
                 " --partition 1,2 --out-dir " +
                 out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("model transformer-xl"), std::string::npos);
  EXPECT_NE(r.output.find("eval valid @ step 40 | loss"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ppl"), std::string::npos);
  r = cli("eval --checkpoint " + out + "/ckpt.pt --split test --json --batch 2");
  ASSERT_EQ(r.code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  // Below the 17-word vocabulary's uniform perplexity (the adaptive softmax starts above it).
  EXPECT_LT(j["perplexity"].get<double>(), 17.0);
  r = cli("generate --checkpoint " + out + "/ckpt.pt --prompt the --tokens 5 --seed 3");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("the", 0), 0u) << r.output;
}

}  // namespace
