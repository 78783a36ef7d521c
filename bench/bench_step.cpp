// Experiment: time one training step of the library's method (the reference trainer for
// --modules 1) on random token batches, or (--peak) the machine's matrix-multiply peak. Prints
// one JSON line; bench/reference_vs_pytorch.sh runs it beside bench/gpt_pytorch.py.
#include <iostream>
#include <string>

#include <torch/torch.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/timing.h"
#include "ouroboros/core/config.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/core/presets.h"
#include "ouroboros/core/system.h"

namespace {

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
  return {{"impl", "matmul_peak"}, {"threads", threads}, {"gflops", best},
          {"n", best_n},           {"by_size", sizes},   {"blas", ouroboros::check_blas().library}};
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1, steps = 30, warmup = 5;
  bool peak = false;
  // The benchmark model with 4 layers, as bench/gpt_pytorch.py builds it; plain backprop unless
  // --modules says otherwise.
  ouroboros::Config cfg = ouroboros::benchmark_config();
  cfg.model.n_layer = 4;
  cfg.engine.modules = 1;
  // Constant learning rate 1e-3, as the PyTorch side's torch.optim.Adam; clipping stays at 1.0.
  cfg.train.schedule = ouroboros::LrSchedule::kConstant;
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
  // Options by name, parsed by the config's field table once the flags are read.
  std::string model = ouroboros::name_of(cfg.model.model),
              mode = ouroboros::name_of(cfg.engine.mode),
              recompute = ouroboros::name_of(cfg.engine.recompute);
  app.add_option("--model", model, ouroboros::option_names<ouroboros::ModelKind>());
  app.add_option("--mem-len", cfg.model.mem_len, "transformer-xl memory length");
  app.add_option("--d-inner", cfg.model.d_inner, "transformer-xl feed-forward width; 0 = 4C");
  app.add_option("--adaptive-cutoffs", cfg.model.adaptive_cutoffs,
                 "transformer-xl adaptive softmax");
  app.add_option("--dropout", cfg.model.dropout, "dropout probability");
  app.add_option("--modules", cfg.engine.modules, "K; 1 = reference trainer");
  app.add_option("--partition", cfg.engine.partition, "even | auto | a1,a2,...");
  app.add_option("--mode", mode, ouroboros::option_names<ouroboros::Mode>());
  app.add_option("--micro-batches", cfg.engine.micro_batches,
                 "gpipe, ouroboros: micro-batches per step; 0 = auto");
  app.add_option("--workers", cfg.engine.workers, "data-parallel: replicas");
  app.add_option("--recompute", recompute, ouroboros::option_names<ouroboros::Recompute>());
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
  try {
    cfg.set_from_string("model.model", model);
    cfg.set_from_string("engine.mode", mode);
    cfg.set_from_string("engine.recompute", recompute);
  } catch (const ouroboros::ConfigError& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  }

  at::set_num_threads(threads);
  if (peak) {
    std::cout << matmul_peak(threads).dump() << std::endl;
    return 0;
  }
  cfg.train.threads = threads;
  try {
    ouroboros::TimingOptions o;
    o.warmup = warmup;
    o.steps = steps;
    o.whole = whole;
    o.profile = profile;
    const ouroboros::Timing t = ouroboros::time_method(cfg, o);
    std::cout << nlohmann::ordered_json{{"impl", "ouroboros"},
                                        {"mode", t.mode},
                                        {"threads", threads},
                                        {"modules", cfg.engine.modules},
                                        {"partition", cfg.engine.partition},
                                        {"recompute", recompute},
                                        {"ms_per_step", t.ms_per_step},
                                        {"tokens_per_s", t.tokens_per_s},
                                        {"gflops", t.flop_per_step / (t.ms_per_step / 1e3) / 1e9},
                                        {"flop_per_step", t.flop_per_step},
                                        {"peak_rss_mib", t.peak_rss_mib},
                                        {"final_loss", t.final_loss},
                                        {"transport_wait_share", t.transport_wait_share}}
                     .dump()
              << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "bench_step: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
