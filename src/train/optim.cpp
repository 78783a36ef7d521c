// Named-parameter optimizers on top of torch::optim, with a state dict keyed by GPT-2 names so a
// checkpoint restores moments to the right tensors whatever the worker layout.
#include "ouroboros/train/optim.h"

#include <cmath>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

using torch::optim::OptimizerParamGroup;

std::string state_key(const Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

// Two groups: weight decay on matrices/embeddings, none on biases and LayerNorm.
template <typename Options>
std::vector<OptimizerParamGroup> groups(const ParamSet& params, const Options& base, double wd) {
  std::vector<Tensor> decay, plain;
  for (size_t i = 0; i < params.size(); ++i) {
    (decays(params.names()[i]) ? decay : plain).push_back(params.tensors()[i]);
  }
  std::vector<OptimizerParamGroup> g;
  auto with_decay = std::make_unique<Options>(base);
  with_decay->weight_decay(wd);
  auto without = std::make_unique<Options>(base);
  without->weight_decay(0.0);
  if (!decay.empty()) g.emplace_back(decay, std::move(with_decay));
  if (!plain.empty()) g.emplace_back(plain, std::move(without));
  return g;
}

}  // namespace

bool decays(const std::string& name) {
  const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  const bool is_norm = name.find("ln_") != std::string::npos;
  return !is_bias && !is_norm;
}

Optimizer::Optimizer(const TrainConfig& cfg, const ParamSet& params)
    : type_(cfg.optimizer), skip_budget_(cfg.skip_nonfinite), params_(params) {
  const double wd = cfg.weight_decay;
  if (type_ == "sgd") {
    auto o = torch::optim::SGDOptions(cfg.lr).momentum(cfg.momentum);
    opt_ = std::make_unique<torch::optim::SGD>(groups(params, o, wd), o);
  } else if (type_ == "adam") {
    auto o = torch::optim::AdamOptions(cfg.lr).betas({cfg.beta1, cfg.beta2}).eps(cfg.eps);
    opt_ = std::make_unique<torch::optim::Adam>(groups(params, o, wd), o);
  } else if (type_ == "adamw") {
    auto o = torch::optim::AdamWOptions(cfg.lr).betas({cfg.beta1, cfg.beta2}).eps(cfg.eps);
    opt_ = std::make_unique<torch::optim::AdamW>(groups(params, o, wd), o);
  } else {
    throw ConfigError("unknown optimizer '" + type_ + "'", "use sgd, adam or adamw");
  }
}

void Optimizer::step(double lr) {
  for (auto& group : opt_->param_groups()) group.options().set_lr(lr);
  torch::NoGradGuard no_grad;
  opt_->step();
}

void Optimizer::zero_grad() {
  for (const auto& p : params_.tensors()) {
    if (p.grad().defined()) p.mutable_grad() = Tensor();
  }
}

bool Optimizer::apply(double lr, double max_norm) {
  bool any = false;
  for (const auto& p : params_.tensors()) any = any || p.grad().defined();
  if (!any) return false;
  const double norm = clip(max_norm);
  if (!std::isfinite(norm)) {
    if (skipped_ < skip_budget_) {
      ++skipped_;
      zero_grad();
      return false;
    }
    std::string where = "?";
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor& g = params_.tensors()[i].grad();
      if (g.defined() && !torch::isfinite(g).all().item<bool>()) {
        where = params_.names()[i];
        break;
      }
    }
    throw NumericError("non-finite gradient (norm " + std::to_string(norm) + ") of " + where,
                       "lower --lr, keep --grad-clip on, or step over rare spikes with "
                       "--skip-nonfinite N");
  }
  step(lr);
  zero_grad();
  return true;
}

double Optimizer::clip(double max_norm) {
  std::vector<Tensor> with_grad;
  for (const auto& p : params_.tensors()) {
    if (p.grad().defined()) with_grad.push_back(p);
  }
  if (with_grad.empty()) return 0.0;
  if (max_norm <= 0.0) {
    // Still report the norm (for the log) without changing anything.
    std::vector<Tensor> norms;
    for (const auto& p : with_grad) norms.push_back(p.grad().norm());
    return torch::stack(norms).norm().item<double>();
  }
  return torch::nn::utils::clip_grad_norm_(with_grad, max_norm);
}

c10::impl::GenericDict Optimizer::state_dict() const {
  c10::impl::GenericDict out(c10::StringType::get(), c10::AnyType::get());
  const auto& state = opt_->state();
  for (size_t i = 0; i < params_.size(); ++i) {
    auto it = state.find(state_key(params_.tensors()[i]));
    if (it == state.end()) continue;
    c10::impl::GenericDict s(c10::StringType::get(), c10::AnyType::get());
    if (type_ == "sgd") {
      const auto& st = static_cast<const torch::optim::SGDParamState&>(*it->second);
      if (!st.momentum_buffer().defined()) continue;
      s.insert("momentum_buffer", st.momentum_buffer());
    } else if (type_ == "adam") {
      const auto& st = static_cast<const torch::optim::AdamParamState&>(*it->second);
      s.insert("step", st.step());
      s.insert("exp_avg", st.exp_avg());
      s.insert("exp_avg_sq", st.exp_avg_sq());
    } else {
      const auto& st = static_cast<const torch::optim::AdamWParamState&>(*it->second);
      s.insert("step", st.step());
      s.insert("exp_avg", st.exp_avg());
      s.insert("exp_avg_sq", st.exp_avg_sq());
    }
    out.insert(params_.names()[i], s);
  }
  return out;
}

void Optimizer::load_state_dict(const c10::impl::GenericDict& d) {
  auto& state = opt_->state();
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_.names()[i];
    if (!d.contains(name)) continue;
    auto s = d.at(name).toGenericDict();
    auto tensor = [&](const char* key) {
      if (!s.contains(key)) {
        throw CheckpointError("optimizer state of " + name + " lacks " + key,
                              "the checkpoint was written with another optimizer");
      }
      return s.at(key).toTensor().clone();
    };
    const std::string key = state_key(params_.tensors()[i]);
    if (type_ == "sgd") {
      auto st = std::make_unique<torch::optim::SGDParamState>();
      st->momentum_buffer(tensor("momentum_buffer"));
      state[key] = std::move(st);
    } else if (type_ == "adam") {
      auto st = std::make_unique<torch::optim::AdamParamState>();
      st->step(s.at("step").toInt());
      st->exp_avg(tensor("exp_avg"));
      st->exp_avg_sq(tensor("exp_avg_sq"));
      state[key] = std::move(st);
    } else {
      auto st = std::make_unique<torch::optim::AdamWParamState>();
      st->step(s.at("step").toInt());
      st->exp_avg(tensor("exp_avg"));
      st->exp_avg_sq(tensor("exp_avg_sq"));
      state[key] = std::move(st);
    }
  }
}

double learning_rate(const TrainConfig& cfg, int64_t step) {
  if (cfg.warmup_steps > 0 && step < cfg.warmup_steps) {
    return cfg.lr * static_cast<double>(step + 1) / static_cast<double>(cfg.warmup_steps);
  }
  if (cfg.schedule == "constant") return cfg.lr;
  const double span = static_cast<double>(std::max<int64_t>(1, cfg.steps - cfg.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - cfg.warmup_steps) / span);
  return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace ouroboros
