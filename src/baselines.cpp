// GPipe and data parallelism on worker threads, for side-by-side comparison with Ouroboros.
#include "ouroboros/baselines.h"

#include <map>

#include "ouroboros/errors.h"
#include "ouroboros/worker.h"

namespace ouroboros {

// ---------------------------------------------------------------------------------------------
// ThreadTeam

ThreadTeam::ThreadTeam(int64_t workers, int64_t intra_op_threads, std::function<void()> on_failure)
    : workers_(workers), intra_op_threads_(intra_op_threads), on_failure_(std::move(on_failure)) {
  for (int64_t w = 1; w < workers_; ++w) threads_.emplace_back([this, w] { loop(w); });
}

ThreadTeam::~ThreadTeam() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadTeam::loop(int64_t w) {
  at::set_num_threads(static_cast<int>(intra_op_threads_));
  int64_t seen = 0;
  while (true) {
    const std::function<void(int64_t)>* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || job_id_ != seen; });
      if (stopping_) return;
      seen = job_id_;
      job = job_;
    }
    std::exception_ptr error;
    try {
      (*job)(w);
    } catch (...) {
      error = std::current_exception();
      if (on_failure_) on_failure_();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (error) failures_.push_back(error);
      ++done_;
    }
    cv_.notify_all();
  }
}

namespace {

bool is_transport_error(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const TransportError&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

void ThreadTeam::run(const std::function<void(int64_t)>& fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    done_ = 0;
    ++job_id_;
  }
  cv_.notify_all();
  std::exception_ptr mine;
  try {
    fn(0);
  } catch (...) {
    mine = std::current_exception();
    if (on_failure_) on_failure_();
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_ == workers_ - 1; });
  std::vector<std::exception_ptr> all;
  if (mine) all.push_back(mine);
  all.insert(all.end(), failures_.begin(), failures_.end());
  failures_.clear();
  if (all.empty()) return;
  // Report the real failure, not the aborts it caused in the other workers.
  for (const auto& e : all) {
    if (!is_transport_error(e)) std::rethrow_exception(e);
  }
  std::rethrow_exception(all.front());
}

// ---------------------------------------------------------------------------------------------
// GPipe

struct GPipeTrainer::Stage {
  Stage(const LanguageModel& model, const Partition& partition, int64_t rank, const ParamSet& all,
        const Config& cfg)
      : rank(rank),
        params(all.subset(worker_param_names(model, partition, all, rank))),
        optimizer(cfg.train, params) {
    for (int64_t k : partition.modules_of_worker(rank)) {
      module_params[k] = all.subset(model.module_param_names(partition.module(k)));
      ForwardContext ctx;
      ctx.training = true;
      ctx.generator = make_generator(dropout_seed(static_cast<uint64_t>(cfg.train.seed), k));
      contexts[k] = ctx;
    }
  }
  int64_t rank;
  ParamSet params;
  Optimizer optimizer;
  std::map<int64_t, ParamSet> module_params;
  std::map<int64_t, ForwardContext> contexts;
};

GPipeTrainer::GPipeTrainer(const LanguageModel& model, ParamSet params, const Config& cfg)
    : model_(model), cfg_(cfg), params_(std::move(params)), plan_(make_plan(cfg)) {
  const int64_t W = plan_.partition.num_workers();
  for (int64_t w = 0; w < W; ++w) {
    transports_.push_back(hub_.endpoint(w));
    stages_.push_back(std::make_unique<Stage>(model_, plan_.partition, w, params_, cfg_));
  }
  team_ = std::make_unique<ThreadTeam>(W, cfg.train.threads,
                                       [this] { hub_.abort("a gpipe worker failed"); });
}

GPipeTrainer::~GPipeTrainer() = default;

void GPipeTrainer::run_worker(int64_t w, int64_t first, int64_t count, const BatchFn* batch,
                              const LossFn* on_loss) {
  Stage& st = *stages_[w];
  Transport& tr = *transports_[w];
  const Partition& part = plan_.partition;
  const int64_t K = part.K, M = cfg_.engine.micro_batches;
  const int64_t Bm = cfg_.train.batch_size / M;
  const std::vector<int64_t> shape = {Bm, cfg_.model.block_size, cfg_.model.n_embd};
  auto worker_of = [&](int64_t k) { return module_worker(K, k); };
  for (int64_t t = first; t < first + count; ++t) {
    if (w == 0) {
      auto [x, y] = (*batch)(t);
      // Module 1: every micro-batch back to back; the ring works on them meanwhile.
      std::vector<Tensor> h1(static_cast<size_t>(M));
      for (int64_t m = 0; m < M; ++m) {
        Tensor h = model_.forward_module(st.module_params.at(1), part.module(1),
                                         x.narrow(0, m * Bm, Bm), Tensor(), st.contexts.at(1));
        tr.send(worker_of(2), MessageKey{false, 1, t * M + m}, h.detach());
        h1[static_cast<size_t>(m)] = h;
      }
      // Module K: forward and backward each micro-batch as its activation arrives.
      double loss_sum = 0.0;
      for (int64_t m = 0; m < M; ++m) {
        Tensor a = tr.recv(worker_of(K - 1), MessageKey{false, K - 1, t * M + m}, shape)
                       .detach()
                       .requires_grad_(true);
        Tensor loss = model_.forward_module(st.module_params.at(K), part.module(K), a,
                                            y.narrow(0, m * Bm, Bm), st.contexts.at(K));
        loss_sum += loss.item<double>();
        (M == 1 ? loss : loss / static_cast<double>(M)).backward();
        tr.send(worker_of(K - 1), MessageKey{true, K - 1, t * M + m}, a.grad());
      }
      // Module 1: backward as the errors come back round the ring.
      for (int64_t m = 0; m < M; ++m) {
        Tensor e = tr.recv(worker_of(2), MessageKey{true, 1, t * M + m}, shape);
        torch::autograd::backward({h1[static_cast<size_t>(m)]}, {e});
        h1[static_cast<size_t>(m)] = Tensor();
      }
      st.optimizer.apply(learning_rate(cfg_.train, t), cfg_.train.grad_clip);
      (*on_loss)(t, loss_sum / static_cast<double>(M));
    } else {
      const int64_t k = w + 1;  // the middle module this worker holds
      std::vector<std::pair<Tensor, Tensor>> io(static_cast<size_t>(M));
      for (int64_t m = 0; m < M; ++m) {
        Tensor a = tr.recv(worker_of(k - 1), MessageKey{false, k - 1, t * M + m}, shape)
                       .detach()
                       .requires_grad_(true);
        Tensor h = model_.forward_module(st.module_params.at(k), part.module(k), a, Tensor(),
                                         st.contexts.at(k));
        tr.send(worker_of(k + 1), MessageKey{false, k, t * M + m}, h.detach());
        io[static_cast<size_t>(m)] = {a, h};
      }
      for (int64_t m = 0; m < M; ++m) {
        auto& [a, h] = io[static_cast<size_t>(m)];
        Tensor e = tr.recv(worker_of(k + 1), MessageKey{true, k, t * M + m}, shape);
        torch::autograd::backward({h}, {e});
        tr.send(worker_of(k - 1), MessageKey{true, k - 1, t * M + m}, a.grad());
        a = Tensor();
        h = Tensor();
      }
      st.optimizer.apply(learning_rate(cfg_.train, t), cfg_.train.grad_clip);
    }
  }
}

void GPipeTrainer::run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) {
  team_->run([&](int64_t w) { run_worker(w, first, count, &batch, &on_loss); });
}

c10::impl::GenericDict GPipeTrainer::optimizer_state() const {
  c10::impl::GenericDict all(c10::StringType::get(), c10::AnyType::get());
  for (const auto& st : stages_) {
    for (const auto& item : st->optimizer.state_dict()) all.insert(item.key(), item.value());
  }
  return all;
}

void GPipeTrainer::load_optimizer_state(const c10::impl::GenericDict& d) {
  for (auto& st : stages_) st->optimizer.load_state_dict(d);
}

std::vector<Tensor> GPipeTrainer::generator_states() const {
  std::vector<Tensor> states(static_cast<size_t>(plan_.partition.K));
  for (const auto& st : stages_) {
    for (auto& [k, ctx] : st->contexts) {
      states[static_cast<size_t>(k - 1)] = ctx.generator->get_state();
    }
  }
  return states;
}

void GPipeTrainer::set_generator_states(const std::vector<Tensor>& s) {
  if (static_cast<int64_t>(s.size()) != plan_.partition.K) {
    throw CheckpointError("checkpoint holds " + std::to_string(s.size()) +
                              " dropout generators, the gpipe run has " +
                              std::to_string(plan_.partition.K) + " modules",
                          "resume with the --mode and --modules the checkpoint was written with");
  }
  for (auto& st : stages_) {
    for (auto& [k, ctx] : st->contexts) ctx.generator->set_state(s[static_cast<size_t>(k - 1)]);
  }
}

// ---------------------------------------------------------------------------------------------
// Data parallelism

DataParallelTrainer::DataParallelTrainer(const LanguageModel& model, ParamSet params, const Config& cfg)
    : model_(model), cfg_(cfg), params_(std::move(params)), optimizer_(cfg.train, params_) {
  const int64_t W = cfg.engine.workers;
  for (int64_t r = 0; r < W; ++r) {
    ParamSet alias;
    for (size_t i = 0; i < params_.size(); ++i) {
      alias.add(params_.names()[i], params_.tensors()[i].detach().requires_grad_(true));
    }
    replicas_.push_back(std::move(alias));
    ForwardContext ctx;
    ctx.training = true;
    ctx.generator = make_generator(dropout_seed(static_cast<uint64_t>(cfg.train.seed), r + 1));
    contexts_.push_back(ctx);
  }
  team_ = std::make_unique<ThreadTeam>(W, cfg.train.threads);
}

DataParallelTrainer::~DataParallelTrainer() = default;

void DataParallelTrainer::run(int64_t first, int64_t count, const BatchFn& batch,
                              const LossFn& on_loss) {
  const int64_t W = cfg_.engine.workers, Br = cfg_.train.batch_size / W;
  const int64_t P = static_cast<int64_t>(params_.size());
  std::vector<double> losses(static_cast<size_t>(W));
  for (int64_t t = first; t < first + count; ++t) {
    auto [x, y] = batch(t);
    const std::function<void(int64_t)> replica_step = [&](int64_t r) {
      Tensor loss = model_.loss(replicas_[static_cast<size_t>(r)], x.narrow(0, r * Br, Br),
                                y.narrow(0, r * Br, Br), contexts_[static_cast<size_t>(r)]);
      losses[static_cast<size_t>(r)] = loss.item<double>();
      loss.backward();
    };
    team_->run(replica_step);
    // The all-reduce: worker r averages parameters r, r + W, ... over the replicas in order 0..W-1.
    const std::function<void(int64_t)> average = [&](int64_t r) {
      torch::NoGradGuard no_grad;
      for (int64_t i = r; i < P; i += W) {
        Tensor g;
        for (auto& rep : replicas_) {
          Tensor p = rep.tensors()[static_cast<size_t>(i)];
          if (!p.grad().defined()) continue;
          g = g.defined() ? g + p.grad() : p.grad();
          p.mutable_grad() = Tensor();
        }
        if (!g.defined()) continue;
        if (W > 1) g = g / static_cast<double>(W);
        params_.tensors()[static_cast<size_t>(i)].mutable_grad() = g;
      }
    };
    team_->run(average);
    optimizer_.apply(learning_rate(cfg_.train, t), cfg_.train.grad_clip);
    double sum = 0.0;
    for (double l : losses) sum += l;
    on_loss(t, W == 1 ? losses[0] : sum / static_cast<double>(W));
  }
}

std::vector<Tensor> DataParallelTrainer::generator_states() const {
  std::vector<Tensor> states;
  for (const auto& ctx : contexts_) states.push_back(ctx.generator->get_state());
  return states;
}

void DataParallelTrainer::set_generator_states(const std::vector<Tensor>& s) {
  if (s.size() != contexts_.size()) {
    throw CheckpointError("checkpoint holds " + std::to_string(s.size()) +
                              " dropout generators, the data-parallel run has " +
                              std::to_string(contexts_.size()) + " replicas",
                          "resume with the --mode and --workers the checkpoint was written with");
  }
  for (size_t r = 0; r < s.size(); ++r) contexts_[r].generator->set_state(s[r]);
}

double train_step_flops(const ModelConfig& m, int64_t batch_size) {
  const double B = static_cast<double>(batch_size), T = static_cast<double>(m.block_size),
               C = static_cast<double>(m.n_embd), V = static_cast<double>(m.vocab_size),
               L = static_cast<double>(m.n_layer);
  const double forward = 2.0 * B * T * (12.0 * L * C * C + C * V) + 4.0 * L * B * T * T * C;
  return 3.0 * forward;
}

}  // namespace ouroboros
