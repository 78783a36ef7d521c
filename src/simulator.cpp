// Serial simulator of the Ouroboros update rule, written straight from the specification.
#include "ouroboros/simulator.h"

#include "ouroboros/engine.h"
#include "ouroboros/errors.h"
#include "ouroboros/worker.h"

namespace ouroboros {

SerialSimulator::SerialSimulator(const LanguageModel& model, ParamSet params, const Config& cfg)
    : model_(model),
      cfg_(cfg),
      params_(std::move(params)),
      partition_(make_plan(cfg).partition) {
  const int64_t K = partition_.K;
  for (int64_t k = 1; k <= K; ++k) {
    module_params_.push_back(params_.subset(model.module_param_names(partition_.module(k))));
    ForwardContext ctx;
    ctx.training = true;
    ctx.generator = make_generator(dropout_seed(static_cast<uint64_t>(cfg.train.seed), k));
    contexts_.push_back(ctx);
  }
  stored_.resize(static_cast<size_t>(K));
  for (int64_t w = 0; w < partition_.num_workers(); ++w) {
    optimizers_.push_back(std::make_unique<Optimizer>(
        cfg.train, params_.subset(worker_param_names(model, partition_, params_, w))));
  }
  pipeline_start_ = cfg.engine.sync_warmup;
}

void SerialSimulator::tick(int64_t t, bool synchronous, int64_t horizon, double lr,
                           const BatchFn* batch, const LossFn* on_loss) {
  const int64_t K = partition_.K;
  // 1. Forward batch t with the current weights w^t; each module keeps its weight version.
  if (t < horizon) {
    auto [x, y] = (*batch)(t);
    Tensor h = x;
    for (int64_t k = 1; k <= K; ++k) {
      const ModulePlan& m = partition_.module(k);
      Stored s;
      s.weights = module_params_[k - 1].snapshot();
      if (!m.embed) s.input = h.detach().requires_grad_(true);
      s.output = model_.forward_module(s.weights, m, m.embed ? x : s.input, y, contexts_[k - 1]);
      h = s.output;
      stored_[k - 1].emplace(t, std::move(s));
    }
    if (on_loss) (*on_loss)(t, h.item<double>());
  }
  // 2. Module k back-propagates batch s = t - (K - k) with the error module k+1 produced for s.
  std::vector<ParamSet> grads(static_cast<size_t>(K));
  std::vector<bool> has_grad(static_cast<size_t>(K), false);
  for (int64_t k = K; k >= 1; --k) {
    const int64_t s = synchronous ? t : t - (K - k);
    if (s < (synchronous ? t : pipeline_start_) || s >= horizon) continue;
    Stored st = std::move(stored_[k - 1].at(s));
    stored_[k - 1].erase(s);
    if (k == K) {
      st.output.backward();
    } else {
      torch::autograd::backward({st.output}, {errors_.at({k, s})});
      errors_.erase({k, s});
    }
    if (k > 1) errors_[{k - 1, s}] = st.input.grad();
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
  for (auto& opt : optimizers_) opt->apply(lr, cfg_.train.grad_clip);
}

void SerialSimulator::run(int64_t first, int64_t count, const BatchFn& batch,
                          const LossFn& on_loss) {
  if (first != next_tick_) throw Error("simulator expected tick " + std::to_string(next_tick_));
  for (int64_t t = first; t < first + count; ++t) {
    const bool sync = t < cfg_.engine.sync_warmup;
    tick(t, sync, std::numeric_limits<int64_t>::max(), learning_rate(cfg_.train, t), &batch,
         &on_loss);
  }
  next_tick_ = first + count;
}

void SerialSimulator::drain() {
  const int64_t end = next_tick_;
  if (end <= pipeline_start_) return;
  const double lr = learning_rate(cfg_.train, end - 1);
  for (int64_t t = end; t < end + partition_.K - 1; ++t) tick(t, false, end, lr, nullptr, nullptr);
  pipeline_start_ = end;
}

void SerialSimulator::resume_at(int64_t tick) {
  next_tick_ = tick;
  pipeline_start_ = std::max(tick, cfg_.engine.sync_warmup);
}

c10::impl::GenericDict SerialSimulator::optimizer_state() const {
  c10::impl::GenericDict all(c10::StringType::get(), c10::AnyType::get());
  for (const auto& o : optimizers_) {
    for (const auto& item : o->state_dict()) all.insert(item.key(), item.value());
  }
  return all;
}

void SerialSimulator::load_optimizer_state(const c10::impl::GenericDict& d) {
  for (auto& o : optimizers_) o->load_state_dict(d);
}

std::vector<Tensor> SerialSimulator::generator_states() const {
  std::vector<Tensor> s;
  for (const auto& c : contexts_) s.push_back(c.generator->get_state());
  return s;
}

void SerialSimulator::set_generator_states(const std::vector<Tensor>& s) {
  if (s.size() != contexts_.size()) throw CheckpointError("dropout generator count mismatch");
  for (size_t i = 0; i < s.size(); ++i) contexts_[i].generator->set_state(s[i]);
}

}  // namespace ouroboros

namespace ouroboros {

std::map<int64_t, Tensor> SerialSimulator::memory() const {
  std::map<int64_t, Tensor> all;
  for (const auto& c : contexts_) {
    for (const auto& [layer, t] : c.memory) all[layer] = t;
  }
  return all;
}

void SerialSimulator::set_memory(const std::map<int64_t, Tensor>& m) {
  for (int64_t k = 1; k <= partition_.K; ++k) {
    const ModulePlan& plan = partition_.module(k);
    auto& mine = contexts_[k - 1].memory;
    mine.clear();
    for (int64_t i = plan.first_block; i < plan.end_block; ++i) {
      if (m.count(i)) mine[i] = m.at(i);
    }
  }
}

}  // namespace ouroboros
