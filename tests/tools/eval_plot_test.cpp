// label: unit
// `ouroboros eval` applies the Transformer-XL evaluation lengths and refuses what cannot take
// effect; bits per byte are reported; `ouroboros plot` draws runs' curves into one PNG.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli_util.h"

namespace {

namespace fs = std::filesystem;
using ouroboros_test::cli;
using ouroboros_test::CliRun;
using ouroboros_test::TempDir;

double eval_loss(const std::string& ckpt, const std::string& flags) {
  CliRun r = cli("eval --checkpoint " + ckpt + " --split valid --json --batch 2 " + flags);
  EXPECT_EQ(r.code, 0) << flags << "\n" << r.output;
  if (r.code != 0) return 0.0;
  return nlohmann::json::parse(r.output)["loss"].get<double>();
}

// One trained Transformer-XL (char level, memory 16) for the tests below.
class EvalFlags : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    const fs::path corpus = dir_->write("corpus.txt", ouroboros_test::tiny_corpus(20000));
    const fs::path out = dir_->path() / "xl";
    CliRun r = cli(ouroboros_test::train_flags({{"--data", corpus.string()},
                                                {"--model", "transformer-xl"},
                                                {"--n-layer", "2"},
                                                {"--n-embd", "32"},
                                                {"--mem-len", "16"},
                                                {"--steps", "150"},
                                                {"--lr", "3e-3"},
                                                {"--warmup-steps", "10"},
                                                {"--out-dir", out.string()}}));
    ASSERT_EQ(r.code, 0) << r.output;
    ckpt_ = new std::string((out / "ckpt.pt").string());
  }
  static void TearDownTestSuite() {
    delete ckpt_;
    delete dir_;
  }
  static TempDir* dir_;
  static std::string* ckpt_;
};
TempDir* EvalFlags::dir_ = nullptr;
std::string* EvalFlags::ckpt_ = nullptr;

TEST_F(EvalFlags, MemoryLengthAppliesAndHelps) {
  // Segments of 4 tokens: without memory the first token of each sees nothing before it.
  const double none = eval_loss(*ckpt_, "--eval-tgt-len 4 --eval-mem-len 0");
  const double some = eval_loss(*ckpt_, "--eval-tgt-len 4 --eval-mem-len 16");
  const double more = eval_loss(*ckpt_, "--eval-tgt-len 4 --eval-mem-len 32");
  EXPECT_LT(some, none - 0.05) << "memory 16: " << some << ", none: " << none;
  EXPECT_NE(more, some);
  // The checkpoint's own settings are the default: naming them changes nothing.
  EXPECT_EQ(eval_loss(*ckpt_, ""), eval_loss(*ckpt_, "--eval-mem-len 16 --eval-tgt-len 16"));
  // The same through --config.
  const fs::path cfg =
      dir_->write("eval.json", R"({"model": {"eval_tgt_len": 4, "eval_mem_len": 0}})");
  EXPECT_EQ(eval_loss(*ckpt_, "--config " + cfg.string()), none);
}

TEST_F(EvalFlags, WhatCannotTakeEffectIsRefused) {
  CliRun r = cli("eval --checkpoint " + *ckpt_ + " --n-layer 4");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.output,
            "error: eval: --n-layer 4 would change the model the checkpoint holds "
            "(n_layer 2) (hint: drop it (from --config too); eval takes --dtype, "
            "--eval-tgt-len, --eval-mem-len, --eval-clamp-len and --eval-same-length)\n");
  const fs::path cfg = dir_->write("arch.json", R"({"model": {"n_embd": 64}})");
  r = cli("eval --checkpoint " + *ckpt_ + " --config " + cfg.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("--n-embd 64 would change the model"), std::string::npos) << r.output;
  r = cli("eval --checkpoint " + *ckpt_ + " --eval-mem-len -3");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("eval_mem_len"), std::string::npos) << r.output;
  // The architecture flags stay out of eval's help.
  r = cli("eval --help");
  EXPECT_NE(r.output.find("--eval-mem-len"), std::string::npos);
  EXPECT_EQ(r.output.find("--n-layer"), std::string::npos) << r.output;
}

class EvalGpt : public ouroboros_test::CliTest {};

TEST_F(EvalGpt, GptRefusesEvaluationLengthsAndReportsBitsPerByte) {
  const fs::path run = train_good("gpt");
  const std::string ckpt = (run / "ckpt.pt").string();
  CliRun r = cli("eval --checkpoint " + ckpt + " --eval-mem-len 8");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.output,
            "error: eval: --eval-mem-len applies to transformer-xl checkpoints; this "
            "one holds a gpt model (hint: drop --eval-mem-len)\n");
  r = cli("eval --checkpoint " + ckpt + " --split test --json");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  // An ASCII corpus at char level: one byte per token, so bits per byte equal bits per char.
  EXPECT_NEAR(j["bpb"].get<double>(), j["bpc"].get<double>(), 1e-9);
  r = cli("eval --checkpoint " + ckpt + " --split valid");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("valid: loss "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" | bpb "), std::string::npos) << r.output;
}

class Plot : public ouroboros_test::CliTest {};

TEST_F(Plot, DrawsRunsIntoOnePng) {
  const fs::path a = train_good("run-a");
  const fs::path b = train_good("run-b");
  const fs::path png = dir_.path() / "charts" / "curves.png";
  CliRun r =
      cli("plot " + a.string() + " " + (b / "metrics.jsonl").string() + " --out " + png.string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output, "wrote " + png.string() + " (2 runs)\n");
  std::ifstream in(png, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  EXPECT_GT(fs::file_size(png), 10000u);
  // Nothing but the PNG is left beside it.
  EXPECT_EQ(std::distance(fs::directory_iterator(png.parent_path()), fs::directory_iterator()), 1);

  r = cli("plot " + (dir_.path() / "nowhere").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(
      r.output.rfind("error: plot: " + (dir_.path() / "nowhere").string() + " has no metrics", 0),
      0u)
      << r.output;
  const fs::path empty = dir_.write("empty/metrics.jsonl", "{\"step\": 3}\n");
  r = cli("plot " + empty.parent_path().string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("holds no loss records"), std::string::npos) << r.output;
}

}  // namespace
