// label: equivalence
// Resuming under another layout (K, method): the weights and optimizer moments carry over by
// name, and a checkpoint that holds batches in flight is first drained on the layout that wrote
// it, so it resumes exactly as the drained checkpoint of the same run does.
#include <gtest/gtest.h>

#include <filesystem>

#include "dist/dist_util.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/checkpoint.h"
#include "test_util.h"

using namespace ouroboros;
using namespace ouroboros_test;

namespace {

Config relayout_config(const fs::path& data) {
  Config cfg = tiny_config(data, 3, "adam");
  cfg.model.dropout = 0.1;
  cfg.train.schedule = LrSchedule::kConstant;  // the learning rate does not depend on train.steps
  cfg.train.eval_interval = 0;
  return cfg;
}

TrainResult run(Config cfg, const fs::path& out, int64_t steps, const std::string& resume = "",
                int64_t stop_after = -1) {
  cfg.train.out_dir = out.string();
  cfg.train.steps = steps;
  TrainOptions o;
  o.quiet = true;
  o.resume = resume;
  o.stop_after = stop_after;
  return train(cfg, o);
}

void expect_same_result(const TrainResult& a, const TrainResult& b) {
  EXPECT_EQ(a.losses, b.losses);
  ASSERT_EQ(a.params.names(), b.params.names());
  for (size_t i = 0; i < a.params.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.params.tensors()[i], b.params.tensors()[i])) << a.params.names()[i];
  }
}

class Relayout : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = relayout_config(dir_.write("corpus.txt", corpus()));
    // The same run twice up to step 12: drained by its end, and stopped with 3 batches in flight.
    run(cfg_, dir_.path() / "drained", 12);
    Config longer = cfg_;
    longer.train.checkpoint_interval = 12;
    run(longer, dir_.path() / "in-flight", 24, "", 12);
    drained_ = (dir_.path() / "drained" / "ckpt.pt").string();
    in_flight_ = (dir_.path() / "in-flight" / "ckpt.pt").string();
  }

  TempDir dir_;
  Config cfg_;
  std::string drained_, in_flight_;
};

TEST_F(Relayout, InFlightCheckpointResumesUnderAnotherKAsItsDrainedForm) {
  MethodState s;
  s.pipeline = load_checkpoint(in_flight_).pipeline;
  ASSERT_EQ(s.pipeline.batches(), 3);

  Config k4 = cfg_;
  k4.engine.modules = 4;
  // No step further: the checkpoint written is the carried state itself.
  run(k4, dir_.path() / "a4", 12, drained_);
  run(k4, dir_.path() / "b4", 12, in_flight_);
  const Checkpoint a4 = load_checkpoint((dir_.path() / "a4" / "ckpt.pt").string());
  const Checkpoint b4 = load_checkpoint((dir_.path() / "b4" / "ckpt.pt").string());
  expect_same_checkpoint(a4, b4);
  const Checkpoint drained = load_checkpoint(drained_);
  ASSERT_EQ(a4.model.names(), drained.model.names());
  for (size_t i = 0; i < drained.model.size(); ++i) {
    EXPECT_TRUE(torch::equal(a4.model.tensors()[i], drained.model.tensors()[i]));
  }
  expect_same_ivalue(c10::IValue(a4.optimizer), c10::IValue(drained.optimizer), "optimizer");
  EXPECT_EQ(a4.generator_states.size(), 4u);  // K = 4's own

  // And on: both continue into the same run under K = 4.
  const TrainResult a = run(k4, dir_.path() / "a4", 24, (dir_.path() / "a4" / "ckpt.pt").string());
  const TrainResult b = run(k4, dir_.path() / "b4", 24, in_flight_);
  ASSERT_EQ(a.losses.size(), 12u);
  expect_same_result(a, b);
}

TEST_F(Relayout, InFlightCheckpointResumesAsPlainBackprop) {
  Config plain = cfg_;
  plain.engine.modules = 1;
  const TrainResult a = run(plain, dir_.path() / "a1", 24, drained_);
  const TrainResult b = run(plain, dir_.path() / "b1", 24, in_flight_);
  ASSERT_EQ(a.losses.size(), 12u);
  expect_same_result(a, b);
  // Plain backprop from the same weights but fresh optimizer moments is another run.
  Checkpoint fresh = load_checkpoint(drained_);
  fresh.optimizer = c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
  save_checkpoint((dir_.path() / "fresh.pt").string(), fresh);
  const TrainResult c = run(plain, dir_.path() / "c1", 24, (dir_.path() / "fresh.pt").string());
  EXPECT_NE(c.losses, a.losses);
}

}  // namespace
