// The threaded Ouroboros engine: workers 1..W-1 on threads of the team, worker 0 on the caller's,
// each walking its schedule row tick after tick with no barrier between ticks.
#include "ouroboros/engine/ouroboros_threads.h"

#include <algorithm>

#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"

namespace ouroboros {

OuroborosThreads::OuroborosThreads(const LanguageModel& model, ParamSet params, const Config& cfg)
    : OuroborosThreads(model, std::move(params), cfg,
                       make_plan(cfg, model.cost_model(cfg.train.batch_size))) {}

OuroborosThreads::OuroborosThreads(const LanguageModel& model, ParamSet params, const Config& cfg,
                                   Plan plan)
    : model_(model), cfg_(cfg), params_(std::move(params)), plan_(std::move(plan)), clock_(cfg) {
  const int64_t W = plan_.partition.num_workers();
  const c10::Device base = params_.size() > 0 ? params_.tensors().front().device() : c10::kCPU;
  for (int64_t w = 0; w < W; ++w) {
    devices_.push_back(worker_device(cfg.train.device, base, w));
    transports_.push_back(hub_.endpoint(w));
    // A worker on another device gets its own weights there (ParamSet::to copies).
    const ParamSet own =
        devices_[w] == base
            ? params_
            : params_.subset(worker_param_names(model_, plan_.partition, params_, w))
                  .to(devices_[w]);
    workers_.push_back(std::make_unique<Worker>(model_, plan_, w, own, cfg_, *transports_[w]));
  }
  team_ =
      std::make_unique<ThreadTeam>(W, cfg.train.threads, [this] { hub_.abort("a worker failed"); });
}

OuroborosThreads::~OuroborosThreads() = default;

void OuroborosThreads::run_job(const ClockJob& job, const BatchFn* batch, const LossFn* on_loss) {
  gathered_ = false;
  team_->run([&](int64_t w) {
    // Tensors made without a device index land on the worker's GPU.
    c10::OptionalDeviceGuard on_device;
    if (devices_[w].is_cuda()) on_device.reset_device(devices_[w]);
    Worker& worker = *workers_[w];
    for (int64_t t = job.first; t < job.first + job.count; ++t) {
      const TickWindow win = clock_.window(job, t);
      worker.run_tick(win.synchronous ? plan_.synchronous : plan_.delayed, win,
                      w == 0 ? batch : nullptr, w == 0 ? on_loss : nullptr);
    }
  });
  clock_.finished(job);
}

const ParamSet& OuroborosThreads::params() const {
  if (gathered_) return params_;
  torch::NoGradGuard no_grad;
  for (size_t w = 0; w < workers_.size(); ++w) {
    if (devices_[w] == devices_.front()) continue;  // shares params_' tensors
    const ParamSet& own = workers_[w]->params();
    for (size_t i = 0; i < own.size(); ++i) {
      params_.at(own.names()[i]).detach().copy_(own.tensors()[i]);
    }
  }
  gathered_ = true;
  return params_;
}

std::string OuroborosThreads::describe() const {
  std::string s = plan_.summary();
  if (std::any_of(devices_.begin(), devices_.end(),
                  [&](const c10::Device& d) { return d != devices_.front(); })) {
    s += "workers on";
    for (size_t w = 0; w < devices_.size(); ++w) s += (w ? ", " : " ") + devices_[w].str();
    s += "\n";
  }
  return s;
}

void OuroborosThreads::run(int64_t first, int64_t count, const BatchFn& batch,
                           const LossFn& on_loss) {
  run_job(clock_.run(first, count), &batch, &on_loss);
}

std::vector<ModuleStats> OuroborosThreads::take_diagnostics() {
  std::vector<ModuleStats> all;
  for (auto& w : workers_) {
    for (const ModuleStats& m : w->take_diagnostics()) all.push_back(m);
  }
  std::stable_sort(all.begin(), all.end(), [](const ModuleStats& a, const ModuleStats& b) {
    return a.step != b.step ? a.step < b.step : a.module < b.module;
  });
  return all;
}

void OuroborosThreads::drain() {
  const ClockJob job = clock_.drain();
  if (job.count > 0) run_job(job, nullptr, nullptr);
}

MethodState OuroborosThreads::state() const {
  MethodState s;
  s.generators.resize(static_cast<size_t>(plan_.partition.K));
  for (const auto& w : workers_) w->collect_state(s);
  s.pipeline.start = clock_.pipeline_start();
  for (const auto& w : workers_) s.pipeline.workers.push_back(w->save_pipeline(clock_.next_tick()));
  return s;
}

void OuroborosThreads::restore(const MethodState& s, int64_t tick) {
  check_generator_count(s, static_cast<size_t>(plan_.partition.K), "modules");
  gathered_ = false;
  for (auto& w : workers_) w->restore_state(s);
  if (!s.pipeline.saved()) {
    clock_.resume(tick);
    return;
  }
  const std::vector<WorkerInFlight>& workers = s.pipeline.workers;
  if (workers.size() != workers_.size()) {
    throw CheckpointError("the checkpoint's pipeline has " + std::to_string(workers.size()) +
                              " workers, this run " + std::to_string(workers_.size()),
                          "resume with the --modules and --partition that wrote it");
  }
  clock_.resume(tick, s.pipeline.start);
  for (size_t w = 0; w < workers_.size(); ++w) workers_[w]->restore_pipeline(workers[w]);
}

}  // namespace ouroboros
