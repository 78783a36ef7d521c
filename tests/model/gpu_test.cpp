// label: gpu
// The CUDA path (--device cuda), skipped with the reason where no GPU is visible: the reference
// trainer on CUDA against the same run on the CPU (TF32 off; tolerance stated below), the
// Ouroboros runtime against the serial simulator bit for bit on CUDA with deterministic
// algorithms, bfloat16 on CUDA within a stated tolerance of float32, and a GPU run's checkpoint
// loading on the CPU.
#include <gtest/gtest.h>

#include <cstdlib>

#include "../engine/engine_util.h"
#include "ouroboros/core/system.h"
#include "ouroboros/engine/ouroboros_simulator.h"
#include "ouroboros/engine/ouroboros_threads.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/checkpoint.h"
#include "ouroboros/train/sequential_backprop.h"
#include "test_util.h"

using namespace ouroboros;

namespace {

using ouroboros_test::random_batch;
using ouroboros_test::tiny_config;

#define SKIP_WITHOUT_CUDA()                                                  \
  if (!torch::cuda::is_available()) {                                        \
    GTEST_SKIP() << "no CUDA device visible (CUDA libtorch: "                \
                 << (at::globalContext().hasCUDART() ? "yes" : "no") << ")"; \
  }

// Full float32 matrix products on the GPU (no TF32); deterministic algorithms and cuBLAS
// workspaces where a test compares two GPU runs bit for bit.
void exact_cuda(bool deterministic) {
  setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", 1);
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setDeterministicAlgorithms(deterministic, false);
}

struct Trained {
  std::vector<double> losses;
  std::vector<Tensor> weights;  // on the CPU
};

Trained train_reference(Config c, const c10::Device& device, int64_t steps) {
  GPT model(c.model);
  SequentialBackprop trainer(model, model.init_params(4).to(device), c.train);
  Trained r;
  trainer.run(
      0, steps, [&](int64_t t) { return random_batch(c, 100 + static_cast<uint64_t>(t % 3)); },
      [&](int64_t, double loss) { r.losses.push_back(loss); });
  for (const auto& t : trainer.params().tensors()) {
    EXPECT_EQ(t.device(), device);
    r.weights.push_back(t.detach().cpu());
  }
  return r;
}

// Float32 on CUDA and on the CPU sum in other orders: each loss within 1e-4 relative, each weight
// within 1e-3 absolute after 10 Adam steps (weights are O(0.02..1)). With dropout the attention
// is the explicit form on both (the masks come from the CPU generators either way); without, the
// GPU runs the fused attention kernel.
TEST(Gpu, ReferenceTrainerOnCudaMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  exact_cuda(false);
  at::set_num_threads(1);
  for (double dropout : {0.1, 0.0}) {
    SCOPED_TRACE("dropout " + std::to_string(dropout));
    Config cfg = tiny_config();
    cfg.model.dropout = dropout;
    const Trained cpu = train_reference(cfg, c10::Device(c10::kCPU), 10);
    const Trained gpu = train_reference(cfg, run_device("cuda"), 10);
    ASSERT_EQ(cpu.losses.size(), gpu.losses.size());
    for (size_t t = 0; t < cpu.losses.size(); ++t) {
      EXPECT_NEAR(gpu.losses[t], cpu.losses[t], 1e-4 * cpu.losses[t]) << "step " << t;
    }
    for (size_t i = 0; i < cpu.weights.size(); ++i) {
      EXPECT_LT((gpu.weights[i] - cpu.weights[i]).abs().max().item<double>(), 1e-3) << i;
    }
  }
}

TEST(Gpu, RuntimeEqualsSimulatorOnCuda) {
  SKIP_WITHOUT_CUDA();
  exact_cuda(true);
  Config cfg = tiny_config(3, "adam");
  cfg.model.dropout = 0.1;
  cfg.train.device = "cuda:0";  // both workers on one GPU
  GPT model(cfg.model);
  const c10::Device cuda = run_device("cuda");
  OuroborosThreads engine(model, model.init_params(7).to(cuda), cfg);
  OuroborosSimulator sim(model, model.init_params(7).to(cuda), cfg);
  auto batch = [&](int64_t t) { return random_batch(cfg, 1000 + static_cast<uint64_t>(t)); };
  ouroboros_test::expect_identical(ouroboros_test::record(engine, batch, 12),
                                   ouroboros_test::record(sim, batch, 12), engine.params().names());
  EXPECT_EQ(engine.params().tensors().front().device(), cuda);
}

// With --device cuda and two GPUs, worker w of the threads trains on cuda:w: K = 4 on three
// workers spread over the GPUs equals the serial simulator on one GPU bit for bit (the same
// kernels on the same model of GPU), and params() gathers the whole model onto cuda:0.
TEST(Gpu, ThreadsSpreadOverGpusEqualTheSimulatorOnOne) {
  SKIP_WITHOUT_CUDA();
  if (torch::cuda::device_count() < 2) {
    GTEST_SKIP() << "needs two GPUs, " << torch::cuda::device_count() << " visible";
  }
  exact_cuda(true);
  Config cfg = tiny_config(4, "adam");
  cfg.model.dropout = 0.1;
  cfg.train.device = "cuda";
  GPT model(cfg.model);
  const c10::Device first(c10::kCUDA, 0);
  OuroborosThreads engine(model, model.init_params(7).to(first), cfg);
  EXPECT_EQ(engine.worker(1).params().tensors().front().device(), c10::Device(c10::kCUDA, 1));
  EXPECT_NE(engine.describe().find("workers on cuda:0, cuda:1"), std::string::npos)
      << engine.describe();
  Config one = cfg;
  one.train.device = "cuda:0";
  OuroborosSimulator sim(model, model.init_params(7).to(first), one);
  auto batch = [&](int64_t t) { return random_batch(cfg, 1000 + static_cast<uint64_t>(t)); };
  ouroboros_test::expect_identical(ouroboros_test::record(engine, batch, 12),
                                   ouroboros_test::record(sim, batch, 12), engine.params().names());
  for (const auto& t : engine.params().tensors()) EXPECT_EQ(t.device(), first);
}

// bfloat16 keeps 8 bits of mantissa: 20 steps on one batch stay within 3% of float32.
TEST(Gpu, Bfloat16OnCudaFollowsFloat32) {
  SKIP_WITHOUT_CUDA();
  Config cfg = tiny_config();
  std::vector<double> losses[2];
  for (int i = 0; i < 2; ++i) {
    Config c = cfg;
    c.model.dtype = i == 0 ? DType::kFloat32 : DType::kBfloat16;
    GPT model(c.model);
    SequentialBackprop trainer(model, model.init_params(4).to(run_device("cuda")), c.train);
    trainer.run(
        0, 20, [&](int64_t) { return random_batch(c, 100); },
        [&](int64_t, double loss) { losses[i].push_back(loss); });
  }
  EXPECT_LT(losses[0].back(), losses[0].front() - 0.3);
  for (size_t t = 0; t < 20; ++t) {
    EXPECT_NEAR(losses[1][t], losses[0][t], 0.03 * losses[0][t]) << "step " << t;
  }
}

// Ouroboros K = 3 trained on the GPU through `train`, checkpoint included: the checkpoint holds
// CPU tensors only, loads without CUDA, and its weights are the run's.
TEST(Gpu, CheckpointOfAGpuRunLoadsOnTheCpu) {
  SKIP_WITHOUT_CUDA();
  ouroboros_test::TempDir dir;
  const std::filesystem::path data =
      dir.write("corpus.txt", std::string(4000, 'a') + "the ring of modules\n");
  Config cfg = ouroboros_test::on_corpus(tiny_config(3), data);
  cfg.train.out_dir = (dir.path() / "out").string();
  cfg.train.steps = 6;
  cfg.train.device = "cuda";
  TrainOptions quiet;
  quiet.quiet = true;
  const TrainResult r = train(cfg, quiet);
  const Checkpoint ck = load_checkpoint(r.checkpoint);
  ASSERT_EQ(ck.model.size(), r.params.size());
  for (size_t i = 0; i < ck.model.size(); ++i) {
    EXPECT_TRUE(ck.model.tensors()[i].is_cpu());
    EXPECT_TRUE(torch::equal(ck.model.tensors()[i], r.params.tensors()[i].detach().cpu()))
        << ck.model.names()[i];
  }
}

}  // namespace
