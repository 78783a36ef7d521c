// Experiment: time one training step of the library's method (the reference trainer for
// --modules 1) on random token batches, or (--peak) the machine's matrix-multiply peak. Prints
// one JSON line; bench/reference_vs_pytorch.sh runs it beside bench/gpt_pytorch.py.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include "ouroboros/baselines.h"
#include "ouroboros/config.h"
#include "ouroboros/model.h"
#include "ouroboros/transformer_xl.h"
#include "ouroboros/engine.h"
#include "ouroboros/system.h"
#include "ouroboros/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The best rate over square multiplies of the sizes the model's matmuls span.
nlohmann::ordered_json matmul_peak(int threads) {
  nlohmann::ordered_json sizes = nlohmann::ordered_json::object();
  double best = 0.0;
  int64_t best_n = 0;
  for (int64_t n : {256, 512, 1024}) {
    const double g = ouroboros::measure_matmul_gflops(n, threads, 1.0);
    sizes[std::to_string(n)] = g;
    if (g > best) best = g, best_n = n;
  }
  return {{"impl", "matmul_peak"}, {"threads", threads}, {"gflops", best}, {"n", best_n},
          {"by_size", sizes}, {"blas", ouroboros::check_blas().library}};
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1, steps = 30, warmup = 5;
  bool peak = false;
  ouroboros::Config cfg;
  cfg.model.n_layer = 4;
  cfg.model.n_head = 4;
  cfg.model.n_embd = 256;
  cfg.model.block_size = 128;
  cfg.model.vocab_size = 256;
  cfg.train.batch_size = 8;
  // Constant learning rate 1e-3, as the PyTorch side's torch.optim.Adam; clipping stays at 1.0.
  cfg.train.schedule = "constant";
  cfg.train.warmup_steps = 0;

  CLI::App app{"Time training steps of the ouroboros method on random byte batches"};
  app.add_option("--threads", threads, "libtorch intra-op threads")->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "timed steps")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed steps first")->check(CLI::NonNegativeNumber);
  app.add_option("--n-layer", cfg.model.n_layer, "L");
  app.add_option("--n-head", cfg.model.n_head, "heads");
  app.add_option("--n-embd", cfg.model.n_embd, "C");
  app.add_option("--block-size", cfg.model.block_size, "T");
  app.add_option("--batch-size", cfg.train.batch_size, "B");
  app.add_option("--vocab", cfg.model.vocab_size, "V");
  app.add_option("--model", cfg.model.model, "gpt | transformer-xl");
  app.add_option("--mem-len", cfg.model.mem_len, "transformer-xl memory length");
  app.add_option("--d-inner", cfg.model.d_inner, "transformer-xl feed-forward width; 0 = 4C");
  app.add_option("--adaptive-cutoffs", cfg.model.adaptive_cutoffs, "transformer-xl adaptive softmax");
  app.add_option("--dropout", cfg.model.dropout, "dropout probability");
  app.add_option("--modules", cfg.engine.modules, "K; 1 = reference trainer");
  app.add_option("--partition", cfg.engine.partition, "even | auto | a1,a2,...");
  app.add_option("--mode", cfg.engine.mode, "auto | sequential | ouroboros | gpipe | data-parallel");
  app.add_option("--micro-batches", cfg.engine.micro_batches, "gpipe: micro-batches per step");
  app.add_option("--workers", cfg.engine.workers, "data-parallel: replicas");
  bool whole = false;
  app.add_flag("--whole", whole,
               "time all steps in one run() call (mean per step); K > 1 needs it, since a call "
               "ends with every worker idle");
  app.add_flag("--peak", peak, "measure the matrix-multiply peak instead");
  std::string profile;
  app.add_option("--profile", profile,
                 "write a Chrome trace (chrome://tracing, or bench/profile_summary.py) of the "
                 "timed steps to this file");
  CLI11_PARSE(app, argc, argv);

  at::set_num_threads(threads);
  if (peak) {
    std::cout << matmul_peak(threads).dump() << std::endl;
    return 0;
  }
  cfg.train.threads = threads;
  cfg.train.steps = warmup + steps;
  try {
    cfg.validate();
    auto model = ouroboros::make_model(cfg.model);
    ouroboros::ParamSet params = model->init_params(static_cast<uint64_t>(cfg.train.seed));
    auto method = ouroboros::make_method(cfg, *model, params);

    // Random batches, prepared before timing: [B, T+1] windows split into inputs and targets.
    at::Generator gen = ouroboros::make_generator(42);
    const int64_t B = cfg.train.batch_size, T = cfg.model.block_size;
    std::vector<ouroboros::Batch> batches;
    for (int i = 0; i < warmup + steps; ++i) {
      torch::Tensor w = torch::randint(cfg.model.vocab_size, {B, T + 1}, gen, torch::kLong);
      batches.emplace_back(w.narrow(1, 0, T).contiguous(), w.narrow(1, 1, T).contiguous());
    }
    const ouroboros::BatchFn batch = [&](int64_t tick) { return batches.at(tick); };
    double last_loss = 0.0;
    const ouroboros::LossFn on_loss = [&](int64_t, double loss) { last_loss = loss; };

    // One step per run() call: with K = 1 a call is exactly one forward, backward and update.
    std::vector<double> ms;
    std::optional<torch::autograd::profiler::RecordProfile> recording;  // the timed steps only
    if (whole) {
      method->run(0, warmup, batch, on_loss);
      if (!profile.empty()) recording.emplace(profile);
      const auto start = Clock::now();
      method->run(warmup, steps, batch, on_loss);
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count() /
                   steps);
    } else {
      for (int t = 0; t < warmup + steps; ++t) {
        if (!profile.empty() && t == warmup) recording.emplace(profile);
        const auto start = Clock::now();
        method->run(t, 1, batch, on_loss);
        const double dt = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        if (t >= warmup) ms.push_back(dt);
      }
    }
    recording.reset();  // writes the trace
    const double step_ms = median(ms);
    // Engine only: share of the timed run each worker spent blocked on the transport.
    nlohmann::json waits = nlohmann::json::array();
    if (auto* engine = dynamic_cast<ouroboros::OuroborosEngine*>(method.get())) {
      for (int64_t w = 0; w < engine->plan().partition.num_workers(); ++w) {
        waits.push_back(static_cast<double>(engine->transport(w).stats().wait_ns) / 1e6 /
                        (step_ms * (warmup + steps)));
      }
    }
    const double tokens = static_cast<double>(B * T);
    std::cout << nlohmann::ordered_json{{"impl", "ouroboros"},
                                {"mode", ouroboros::resolved_mode(cfg.engine)},
                                {"threads", threads},
                                {"modules", cfg.engine.modules},
                                {"partition", cfg.engine.partition},
                                {"ms_per_step", step_ms},
                                {"tokens_per_s", tokens / (step_ms / 1e3)},
                                {"gflops", ouroboros::train_step_flops(cfg.model, cfg.train.batch_size) / (step_ms / 1e3) / 1e9},
                                {"flop_per_step", ouroboros::train_step_flops(cfg.model, cfg.train.batch_size)},
                                {"peak_rss_mib", ouroboros::peak_rss_mib()},
                                {"final_loss", last_loss},
                                {"transport_wait_share", waits}}
                     .dump()
              << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "bench_step: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
