// The threaded Ouroboros engine: workers 1..W-1 on their own threads, worker 0 on the caller's,
// each walking its schedule row tick after tick with no barrier between ticks.
#include "ouroboros/engine.h"

#include <sstream>

#include "ouroboros/errors.h"

namespace ouroboros {

Plan make_plan(const Config& cfg) {
  const ModelConfig& m = cfg.model;
  Plan p;
  p.cost = cost_model_for(m.n_layer, m.n_embd, m.block_size, std::max<int64_t>(m.vocab_size, 1),
                          cfg.train.batch_size);
  p.partition = plan_partition(m.n_layer, cfg.engine.modules, cfg.engine.partition, p.cost);
  p.delayed = build_schedule(p.partition, false);
  p.synchronous = build_schedule(p.partition, true);
  p.delayed.validate();
  p.synchronous.validate();
  return p;
}

std::string Plan::summary() const {
  std::ostringstream s;
  SimResult sim = simulate(delayed, partition, cost);
  s << "plan: K = " << partition.K << " modules on " << partition.num_workers() << " workers\n"
    << partition.describe(cost) << "schedule (one tick t):\n"
    << delayed.to_string();
  s.precision(2);
  s << std::fixed << "cost model: speed-up " << sim.speedup() << "x over sequential backprop\n";
  return s.str();
}

OuroborosEngine::OuroborosEngine(const LanguageModel& model, ParamSet params, const Config& cfg)
    : model_(model), cfg_(cfg), params_(std::move(params)), plan_(make_plan(cfg)) {
  pipeline_start_ = cfg.engine.sync_warmup;
  const int64_t W = plan_.partition.num_workers();
  for (int64_t w = 0; w < W; ++w) {
    transports_.push_back(hub_.endpoint(w));
    workers_.push_back(
        std::make_unique<Worker>(model_, plan_.partition, w, params_, cfg_, *transports_[w]));
  }
  for (int64_t w = 1; w < W; ++w) threads_.emplace_back([this, w] { worker_loop(w); });
}

OuroborosEngine::~OuroborosEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void OuroborosEngine::run_ticks(int64_t w, const Job& job, const BatchFn* batch,
                                const LossFn* on_loss) {
  Worker& worker = *workers_[w];
  for (int64_t t = job.first; t < job.first + job.count; ++t) {
    TickWindow win = job.window;
    win.tick = t;
    win.synchronous = !job.drain && t < cfg_.engine.sync_warmup;
    if (win.synchronous) {
      win.start = t;
      win.horizon = t + 1;
    }
    // Drain ticks apply what is left at the last forward tick's learning rate.
    win.lr = learning_rate(cfg_.train, job.drain ? job.window.horizon - 1 : t);
    worker.run_tick(win.synchronous ? plan_.synchronous : plan_.delayed, win, batch, on_loss);
  }
}

void OuroborosEngine::worker_loop(int64_t w) {
  at::set_num_threads(static_cast<int>(cfg_.train.threads));
  int64_t seen = 0;
  while (true) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || job_id_ != seen; });
      if (stopping_) return;
      seen = job_id_;
      job = job_;
    }
    try {
      run_ticks(w, job, nullptr, nullptr);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!failure_) failure_ = std::current_exception();
      hub_.abort("worker " + std::to_string(w) + " failed");
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++done_count_;
    }
    cv_.notify_all();
  }
}

void OuroborosEngine::run_job(const Job& job, const BatchFn* batch, const LossFn* on_loss) {
  const int64_t helpers = static_cast<int64_t>(threads_.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = job;
    done_count_ = 0;
    ++job_id_;
  }
  cv_.notify_all();
  std::exception_ptr mine;
  try {
    run_ticks(0, job, batch, on_loss);
  } catch (...) {
    mine = std::current_exception();
    hub_.abort("worker 0 failed");
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_count_ == helpers; });
  // Report the first real failure, not the aborts it caused in the other workers.
  std::exception_ptr first = failure_ ? failure_ : mine;
  if (mine) {
    try {
      std::rethrow_exception(mine);
    } catch (const TransportError&) {
    } catch (...) {
      first = mine;
    }
  }
  failure_ = nullptr;
  if (first) std::rethrow_exception(first);
}

void OuroborosEngine::run(int64_t first, int64_t count, const BatchFn& batch,
                          const LossFn& on_loss) {
  if (first != next_tick_) {
    throw Error("engine expected tick " + std::to_string(next_tick_) + ", got " +
                std::to_string(first));
  }
  Job job;
  job.first = first;
  job.count = count;
  job.window.start = pipeline_start_;
  run_job(job, &batch, &on_loss);
  next_tick_ = first + count;
}

void OuroborosEngine::drain() {
  const int64_t end = next_tick_;
  if (end <= pipeline_start_) return;  // nothing delayed in flight
  Job job;
  job.first = end;
  job.count = plan_.partition.K - 1;
  job.window.start = pipeline_start_;
  job.window.horizon = end;
  job.drain = true;
  run_job(job, nullptr, nullptr);
  pipeline_start_ = end;
}

void OuroborosEngine::resume_at(int64_t tick) {
  next_tick_ = tick;
  pipeline_start_ = std::max(tick, cfg_.engine.sync_warmup);
}

c10::impl::GenericDict OuroborosEngine::optimizer_state() const {
  c10::impl::GenericDict all(c10::StringType::get(), c10::AnyType::get());
  for (const auto& w : workers_) {
    for (const auto& item : const_cast<Worker&>(*w).optimizer().state_dict()) {
      all.insert(item.key(), item.value());
    }
  }
  return all;
}

void OuroborosEngine::load_optimizer_state(const c10::impl::GenericDict& d) {
  for (auto& w : workers_) w->optimizer().load_state_dict(d);
}

std::vector<Tensor> OuroborosEngine::generator_states() const {
  std::vector<Tensor> states(static_cast<size_t>(plan_.partition.K));
  for (const auto& w : workers_) {
    for (int64_t k : w->modules()) {
      states[static_cast<size_t>(k - 1)] = const_cast<Worker&>(*w).generator(k).get_state();
    }
  }
  return states;
}

void OuroborosEngine::set_generator_states(const std::vector<Tensor>& s) {
  if (static_cast<int64_t>(s.size()) != plan_.partition.K) {
    throw CheckpointError("checkpoint holds " + std::to_string(s.size()) +
                              " dropout generators, the run has " +
                              std::to_string(plan_.partition.K) + " modules",
                          "resume with the --modules the checkpoint was written with");
  }
  for (auto& w : workers_) {
    for (int64_t k : w->modules()) w->generator(k).set_state(s[static_cast<size_t>(k - 1)]);
  }
}

}  // namespace ouroboros

namespace ouroboros {

std::map<int64_t, Tensor> OuroborosEngine::memory() const {
  std::map<int64_t, Tensor> all;
  for (const auto& w : workers_) {
    for (int64_t k : w->modules()) {
      for (const auto& [layer, t] : const_cast<Worker&>(*w).context(k).memory) all[layer] = t;
    }
  }
  return all;
}

void OuroborosEngine::set_memory(const std::map<int64_t, Tensor>& m) {
  for (auto& w : workers_) {
    for (int64_t k : w->modules()) {
      const ModulePlan& plan = plan_.partition.module(k);
      auto& mine = w->context(k).memory;
      mine.clear();
      for (int64_t i = plan.first_block; i < plan.end_block; ++i) {
        if (m.count(i)) mine[i] = m.at(i);
      }
    }
  }
}

}  // namespace ouroboros
