// Serial simulator of the Ouroboros update rule, written straight from the specification.
#include "ouroboros/engine/ouroboros_simulator.h"

#include "ouroboros/core/errors.h"
#include "ouroboros/engine/worker.h"
#include "ouroboros/plan/planner.h"

namespace ouroboros {
namespace {

Partition own_partition(const Config& cfg) {
  const std::string& spec = cfg.engine.partition;
  const int64_t L = cfg.model.n_layer, K = cfg.engine.modules;
  if (spec == "auto") {
    throw PlanError("the serial simulator takes an even or explicit cut, not auto",
                    "set engine.partition to even or to the boundaries the engine's plan chose");
  }
  check_partition_shape(L, K);
  return make_partition(L, K, spec == "even" ? even_boundaries(L, K) : parse_boundaries(spec));
}

}  // namespace

OuroborosSimulator::OuroborosSimulator(const LanguageModel& model, ParamSet params,
                                       const Config& cfg)
    : model_(model), cfg_(cfg), params_(std::move(params)), partition_(own_partition(cfg)) {
  const int64_t K = partition_.K;
  for (int64_t k = 1; k <= K; ++k) {
    module_params_.push_back(params_.subset(model.module_param_names(partition_.module(k))));
    contexts_.push_back(training_context(cfg.train.seed, k));
  }
  stored_.resize(static_cast<size_t>(K));
  // The micro-batch count the runtime's plan takes (the cut here is the config's own).
  micro_batches_ = make_plan(cfg, model.cost_model(cfg.train.batch_size)).micro_batches;
  for (int64_t w = 0; w < partition_.num_workers(); ++w) {
    optimizers_.push_back(std::make_unique<Optimizer>(
        cfg.train, params_.subset(worker_param_names(model, partition_, params_, w)),
        delay_correction_scale(cfg.engine)));
  }
  pipeline_start_ = cfg.engine.sync_warmup;
  // Module k runs on worker 0 when k is 1 or K, else on worker k-1. A parameter's staleness is
  // its module's delay; the tied V counts as module K's (delay 0).
  for (int64_t k = 1; k <= K; ++k) worker_of_.push_back(k == 1 || k == K ? 0 : k - 1);
  for (const auto& opt : optimizers_) {
    std::vector<int64_t> delay(opt->params().size(), -1);
    for (int64_t k = K; k >= 1; --k) {
      for (const auto& name : module_params_[k - 1].names()) {
        if (!opt->params().contains(name)) continue;
        int64_t& d = delay[opt->params().index(name)];
        if (d < 0) d = K - k;
      }
    }
    param_delay_.push_back(delay);
  }
}

std::vector<double> OuroborosSimulator::lr_scale(size_t worker, int64_t t, bool synchronous) const {
  std::vector<double> f;
  if (synchronous || cfg_.engine.stale_lr == StaleLr::kNone) return f;
  for (int64_t d : param_delay_[worker]) f.push_back(stale_lr_factor(cfg_.engine, d, t));
  return f;
}

std::vector<int64_t> OuroborosSimulator::micros() const {
  if (micro_batches_ == 1) return {0};
  std::vector<int64_t> out;
  for (int64_t m = 1; m <= micro_batches_; ++m) out.push_back(m);
  return out;
}

Tensor OuroborosSimulator::rows(const Tensor& t, int64_t micro) const {
  if (micro == 0) return t;
  const int64_t n = t.size(0) / micro_batches_;
  return t.narrow(0, (micro - 1) * n, n);
}

void OuroborosSimulator::tick(int64_t t, bool synchronous, int64_t horizon, double lr,
                              const BatchFn* batch, const LossFn* on_loss) {
  const int64_t K = partition_.K;
  // 1. Forward batch t with the current weights w^t; each module keeps its weight version. With
  //    M micro-batches the batch goes through in M pieces of B / M rows, one after the other; a
  //    recurrent model's pieces read and advance their own rows of the memories.
  if (t < horizon) {
    auto [x, y] = (*batch)(t);
    std::vector<std::map<int64_t, Tensor>> memory_before;
    std::vector<std::vector<std::map<int64_t, Tensor>>> memory_after(static_cast<size_t>(K));
    for (int64_t k = 1; k <= K; ++k) {
      Stored s;
      const int64_t delay = synchronous ? 0 : K - k;
      const size_t w = static_cast<size_t>(worker_of_[k - 1]);
      s.weights = delay > 0 && predicts_weights(cfg_.engine)
                      ? optimizers_[w]->predict(module_params_[k - 1],
                                                prediction_horizon(cfg_.engine, delay) * lr,
                                                lr_scale(w, t, synchronous))
                      : module_params_[k - 1].snapshot();
      stored_[k - 1].emplace(t, std::move(s));
      memory_before.push_back(contexts_[k - 1].memory);
    }
    const bool split_memory = micro_batches_ > 1 && model_.recurrent();
    double loss_sum = 0.0;
    for (int64_t m : micros()) {
      Tensor h = rows(x, m);
      for (int64_t k = 1; k <= K; ++k) {
        const ModulePlan& mod = partition_.module(k);
        ForwardContext& ctx = contexts_[k - 1];
        if (split_memory) {
          ctx.memory.clear();
          for (const auto& [layer, mem] : memory_before[k - 1]) ctx.memory[layer] = rows(mem, m);
        }
        Stored& s = stored_[k - 1].at(t);
        Piece p;
        if (!mod.embed) p.input = h.detach().requires_grad_(true);
        p.output = model_.forward_module(s.weights, mod, mod.embed ? h : p.input, rows(y, m), ctx);
        if (split_memory) memory_after[k - 1].push_back(ctx.memory);
        h = p.output;
        s.pieces.emplace(m, std::move(p));
      }
      loss_sum += h.item<double>();
    }
    if (split_memory) {
      for (int64_t k = 1; k <= K; ++k) {
        std::map<int64_t, Tensor>& memory = contexts_[k - 1].memory;
        memory.clear();
        for (const auto& [layer, first] : memory_after[k - 1].front()) {
          std::vector<Tensor> parts;
          for (const auto& piece : memory_after[k - 1]) parts.push_back(piece.at(layer));
          memory[layer] = at::cat(parts, 0);
        }
      }
    }
    if (on_loss) (*on_loss)(t, loss_sum / static_cast<double>(micro_batches_));
  }
  // 2. Module k back-propagates batch s = t - (K - k) with the error module k+1 produced for s,
  //    piece by piece; module K's loss is the batch's mean, 1/M of each piece's.
  std::vector<ParamSet> grads(static_cast<size_t>(K));
  std::vector<bool> has_grad(static_cast<size_t>(K), false);
  for (int64_t k = K; k >= 1; --k) {
    const int64_t s = synchronous ? t : t - (K - k);
    if (s < (synchronous ? t : pipeline_start_) || s >= horizon) continue;
    Stored st = std::move(stored_[k - 1].at(s));
    stored_[k - 1].erase(s);
    for (int64_t m : micros()) {
      Piece& p = st.pieces.at(m);
      if (k == K) {
        (m == 0 ? p.output : p.output / static_cast<double>(micro_batches_)).backward();
      } else {
        torch::autograd::backward({p.output}, {errors_.at({k, s, m})});
        errors_.erase({k, s, m});
      }
      if (k > 1) errors_[{k - 1, s, m}] = p.input.grad();
      p = Piece();
    }
    grads[k - 1] = st.weights;
    has_grad[k - 1] = true;
  }
  // 3. Update: each live weight gets its module's gradient; wte sums output and input side.
  for (int64_t k = 1; k <= K; ++k) {
    if (!has_grad[k - 1]) continue;
    const ParamSet& live = module_params_[k - 1];
    for (size_t i = 0; i < live.size(); ++i) {
      Tensor p = live.tensors()[i];
      const Tensor& g = grads[k - 1].tensors()[i].grad();
      if (!g.defined()) continue;
      p.mutable_grad() = p.grad().defined() ? p.grad() + g : g;
    }
  }
  for (size_t w = 0; w < optimizers_.size(); ++w) {
    optimizers_[w]->apply(lr, cfg_.train.grad_clip, lr_scale(w, t, synchronous),
                          synchronous ? std::vector<int64_t>{} : param_delay_[w]);
  }
}

void OuroborosSimulator::run(int64_t first, int64_t count, const BatchFn& batch,
                             const LossFn& on_loss) {
  if (first != next_tick_) throw Error("simulator expected tick " + std::to_string(next_tick_));
  for (int64_t t = first; t < first + count; ++t) {
    const bool sync = t < cfg_.engine.sync_warmup;
    tick(t, sync, std::numeric_limits<int64_t>::max(), learning_rate(cfg_.train, t), &batch,
         &on_loss);
  }
  next_tick_ = first + count;
}

void OuroborosSimulator::drain() {
  const int64_t end = next_tick_;
  if (end <= pipeline_start_) return;
  const double lr = learning_rate(cfg_.train, end - 1);
  for (int64_t t = end; t < end + partition_.K - 1; ++t) tick(t, false, end, lr, nullptr, nullptr);
  pipeline_start_ = end;
}

MethodState OuroborosSimulator::state() const {
  MethodState s;
  for (const auto& o : optimizers_) merge_optimizer_state(s.optimizer, o->state_dict());
  for (const auto& ctx : contexts_) {
    s.generators.push_back(ctx.generator->get_state());
    collect_memory(ctx, s.memory);
  }
  return s;
}

void OuroborosSimulator::restore(const MethodState& s, int64_t tick) {
  check_generator_count(s, contexts_.size(), "modules");
  for (auto& o : optimizers_) o->load_state_dict(s.optimizer);
  for (int64_t k = 1; k <= partition_.K; ++k) {
    ForwardContext& ctx = contexts_[static_cast<size_t>(k - 1)];
    ctx.generator->set_state(s.generators[static_cast<size_t>(k - 1)]);
    restore_memory(ctx, partition_.module(k), s.memory);
  }
  next_tick_ = tick;
  pipeline_start_ = std::max(tick, cfg_.engine.sync_warmup);
}

}  // namespace ouroboros
