// Timing of training steps on random batches, shared by `ouroboros bench` and bench_step.
#include "bench/timing.h"

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <optional>
#include <ostream>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "ouroboros/core/system.h"
#include "ouroboros/dist/context.h"
#include "ouroboros/engine/ouroboros_threads.h"
#include "ouroboros/run/methods.h"

namespace ouroboros {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

Timing time_method(const Config& cfg_in, const TimingOptions& opts) {
  Config cfg = cfg_in;
  if (cfg.model.vocab_size == 0) cfg.model.vocab_size = 256;
  const int64_t total = opts.warmup + opts.steps;
  cfg.train.steps = total;
  cfg.validate();
  at::set_num_threads(static_cast<int>(cfg.train.threads));
  auto model = make_model(cfg.model);
  const int64_t local_rank = opts.ctx ? opts.ctx->env().local_rank : 0;
  const c10::Device device = run_device(cfg.train.device, local_rank);
  set_tf32(cfg.train.tf32 != 0, device);
  ParamSet params = model->init_params(static_cast<uint64_t>(cfg.train.seed)).to(device);
  auto method = opts.ctx ? make_process_method(cfg, *model, std::move(params), *opts.ctx, nullptr)
                         : make_method(cfg, *model, std::move(params));

  // Random batches, prepared before timing: [R B, T+1] windows split into inputs and targets
  // (replica r of R processes trains on rows [r B, (r+1) B)).
  at::Generator gen = make_generator(42);
  const int64_t B = cfg.train.batch_size, T = cfg.model.block_size;
  const int64_t replicas = opts.ctx ? opts.ctx->replicas() : 1;
  std::vector<Batch> batches;
  for (int64_t i = 0; i < total; ++i) {
    Tensor w = at::randint(cfg.model.vocab_size, {replicas * B, T + 1}, gen);
    batches.emplace_back(w.narrow(1, 0, T).contiguous(), w.narrow(1, 1, T).contiguous());
  }
  const BatchFn batch = [&](int64_t t) { return batches.at(static_cast<size_t>(t)); };
  Timing r;
  const int64_t every = std::max<int64_t>(1, total / 5);
  const auto start = Clock::now();
  const LossFn on_loss = [&](int64_t t, double loss) {
    r.final_loss = loss;
    if (opts.progress && ((t + 1) % every == 0 || t + 1 == total)) {
      *opts.progress << "  step " << (t + 1) << "/" << total
                     << (t < opts.warmup ? " (warm-up)" : "") << " | loss " << std::fixed
                     << std::setprecision(3) << loss << " | " << std::setprecision(1)
                     << ms_since(start) / 1e3 << " s" << std::endl;
    }
  };

  std::vector<double> ms;
  std::optional<torch::autograd::profiler::RecordProfile> recording;  // the timed steps only
  if (opts.whole) {
    method->run(0, opts.warmup, batch, on_loss);
    if (!opts.profile.empty()) recording.emplace(opts.profile);
    const auto t0 = Clock::now();
    method->run(opts.warmup, opts.steps, batch, on_loss);
    ms.push_back(ms_since(t0) / static_cast<double>(opts.steps));
  } else {
    // One step per run() call: with K = 1 a call is exactly one forward, backward and update.
    for (int64_t t = 0; t < total; ++t) {
      if (!opts.profile.empty() && t == opts.warmup) recording.emplace(opts.profile);
      const auto t0 = Clock::now();
      method->run(t, 1, batch, on_loss);
      if (t >= opts.warmup) ms.push_back(ms_since(t0));
    }
  }
  recording.reset();  // writes the trace
  r.mode = name_of(resolved_mode(cfg.engine));
  r.ms_per_step = median(ms);
  r.tokens_per_s = static_cast<double>(replicas * B * T) / (r.ms_per_step / 1e3);
  r.flop_per_step = static_cast<double>(replicas) * model->train_step_flops(B);
  r.peak_rss_mib = peak_rss_mib();
  if (const auto* engine = dynamic_cast<const OuroborosThreads*>(method.get())) {
    for (int64_t w = 0; w < engine->plan().partition.num_workers(); ++w) {
      r.transport_wait_share.push_back(static_cast<double>(engine->transport(w).stats().wait_ns) /
                                       1e6 / (r.ms_per_step * static_cast<double>(total)));
    }
  }
  return r;
}

}  // namespace ouroboros
