// Named-parameter optimizers with a state dict keyed by GPT-2 names, so a checkpoint restores
// moments to the right tensors whatever the worker layout. The updates are written out here
// (rather than taken from torch::optim) so that every optimizer can scale its learning rate per
// parameter, predict weights along its direction and report what an update did; SGD, Adam and
// AdamW keep libtorch's exact operation order (tests/train/optim_test.cpp compares them).
#include "ouroboros/train/optim.h"

#include <cmath>

#include "ouroboros/core/errors.h"

namespace ouroboros {
bool decays(const std::string& name) {
  const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  const bool is_norm =
      name.find("ln_") != std::string::npos || name.find("layer_norm") != std::string::npos;
  return !is_bias && !is_norm;
}

bool muon_matrix(const std::string& name, const Tensor& p) {
  const bool in_block = name.rfind("h.", 0) == 0 || name.rfind("layers.", 0) == 0;
  const bool weight = name.size() >= 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
  return p.dim() == 2 && in_block && weight && decays(name);
}

int64_t muon_slices(const std::string& name) {
  const bool fused = name.find("attn.c_attn.") != std::string::npos ||
                     name.find("attn.qkv_net.") != std::string::npos;
  return fused ? 3 : 1;
}

Tensor newton_schulz(const Tensor& g, int64_t steps, double eps) {
  const double a = 3.4445, b = -4.775, c = 2.0315;
  const bool tall = g.size(0) > g.size(1);
  Tensor x = tall ? g.t() : g;
  x = x.div(x.norm().clamp_min(eps));
  for (int64_t i = 0; i < steps; ++i) {
    Tensor gram = x.mm(x.t());
    Tensor poly = gram * b + gram.mm(gram) * c;
    x = x * a + poly.mm(x);
  }
  return tall ? x.t().contiguous() : x;
}

double muon_lr_factor(MuonLrAdjust adjust, int64_t rows, int64_t cols) {
  const double r = static_cast<double>(rows), c = static_cast<double>(cols);
  if (adjust == MuonLrAdjust::kOriginal) return std::sqrt(std::max(1.0, r / c));
  return 0.2 * std::sqrt(std::max(r, c));
}

ModuleStats summarize(int64_t module, const std::vector<UpdateStats>& stats,
                      const std::vector<size_t>& indices) {
  double g = 0.0, u = 0.0, dot = 0.0, prev = 0.0;
  int64_t n = 0;
  bool has_prev = true, updated = false;
  for (size_t i : indices) {
    const UpdateStats& s = stats.at(i);
    if (!s.updated) continue;
    updated = true;
    g += s.grad_sq;
    u += s.update_sq;
    dot += s.dot_prev;
    prev += s.prev_sq;
    n += s.numel;
    has_prev = has_prev && s.has_prev;
  }
  ModuleStats m;
  m.module = module;
  m.grad_norm = std::sqrt(g);
  m.update_rms = n > 0 ? std::sqrt(u / static_cast<double>(n)) : 0.0;
  m.updated = updated;
  m.has_cos = updated && has_prev && u > 0.0 && prev > 0.0;
  m.update_cos = m.has_cos ? dot / std::sqrt(u * prev) : 0.0;
  return m;
}

Optimizer::Optimizer(const TrainConfig& cfg, const ParamSet& params, double correction_scale)
    : cfg_(cfg),
      skip_budget_(cfg.skip_nonfinite),
      params_(params),
      correction_scale_(correction_scale) {
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params.names()[i];
    weight_decay_.push_back(decays(name) ? cfg.weight_decay : 0.0);
    muon_.push_back(cfg.optimizer == OptimizerKind::kMuon &&
                    muon_matrix(name, params.tensors()[i]));
  }
  if (cfg.muon_lr > 0.0) muon_lr_ratio_ = cfg.muon_lr / cfg.lr;
  state_.resize(params.size());
}

Optimizer::State& Optimizer::state_of(size_t i) {
  std::optional<State>& st = state_[i];
  if (!st) st.emplace();
  return *st;
}

void Optimizer::step_one(size_t i, double lr) {
  if (muon_[i]) return step_muon(i, lr * muon_lr_ratio_);
  const OptimizerKind type = cfg_.optimizer;
  if (type == OptimizerKind::kMuon) return step_adam(i, lr, OptimizerKind::kAdamW);
  if (type != OptimizerKind::kSgd) return step_adam(i, lr, type);
  // torch::optim::SGD, dampening 0, no Nesterov
  Tensor p = params_.tensors()[i];
  Tensor d_p = p.grad();
  const double wd = weight_decay_[i];
  if (wd != 0) d_p = d_p.add(p, wd);
  if (cfg_.momentum != 0) {
    State& st = state_of(i);
    if (!st.momentum_buffer.defined()) {
      st.momentum_buffer = torch::clone(d_p).detach();
    } else {
      st.momentum_buffer.mul_(cfg_.momentum).add_(d_p, 1 - 0.0);
    }
    d_p = st.momentum_buffer;
  }
  p.add_(d_p, -1 * lr);
}

// torch.optim.Muon's step: B <- lerp(B, g, 1 - mu); U = lerp(g, B, mu) (Nesterov) or B;
// W <- W (1 - lr wd) - lr factor NS(U), slice by slice for a fused query-key-value matrix.
void Optimizer::step_muon(size_t i, double lr) {
  Tensor p = params_.tensors()[i];
  const Tensor& grad = p.grad();
  State& st = state_of(i);
  if (!st.momentum_buffer.defined()) {
    st.momentum_buffer = torch::zeros_like(p, at::MemoryFormat::Preserve);
  }
  st.step += 1;
  const double mu = cfg_.muon_momentum;
  st.momentum_buffer.lerp_(grad, 1 - mu);
  Tensor u = cfg_.muon_nesterov ? grad.lerp(st.momentum_buffer, mu) : st.momentum_buffer;
  const int64_t slices = muon_slices(params_.names()[i]);
  std::vector<Tensor> parts;
  for (const Tensor& slice : u.chunk(slices, 0)) {
    const double factor = muon_lr_factor(cfg_.muon_adjust_lr, slice.size(0), slice.size(1));
    parts.push_back(newton_schulz(slice, cfg_.muon_ns_steps).mul_(factor));
  }
  st.last_update = slices == 1 ? parts[0] : torch::cat(parts, 0);
  if (weight_decay_[i] != 0) p.mul_(1 - lr * weight_decay_[i]);
  p.add_(st.last_update, -lr);
}

void Optimizer::step_adam(size_t i, double lr, OptimizerKind type) {
  Tensor p = params_.tensors()[i];
  Tensor grad = p.grad();
  const double wd = weight_decay_[i];
  State& st = state_of(i);
  if (!st.exp_avg.defined()) {
    st.exp_avg = torch::zeros_like(p, at::MemoryFormat::Preserve);
    st.exp_avg_sq = torch::zeros_like(p, at::MemoryFormat::Preserve);
    if (type == OptimizerKind::kNAdam)
      st.mu_product = torch::ones({}, p.options().dtype(torch::kFloat32));
  }
  st.step += 1;
  const double b1 = cfg_.beta1, b2 = cfg_.beta2;
  const double n = static_cast<double>(st.step);
  const double bias_correction1 = 1 - std::pow(b1, n);
  const double bias_correction2 = 1 - std::pow(b2, n);
  if (type == OptimizerKind::kAdamW) {
    if (wd != 0) p.mul_(1 - lr * wd);  // decoupled
  } else if (wd != 0) {
    grad = grad.add(p, wd);
  }
  st.exp_avg.mul_(b1).add_(grad, 1 - b1);
  st.exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1 - b2);
  if (type == OptimizerKind::kNAdam) {
    const double psi = cfg_.momentum_decay;
    const double mu = b1 * (1. - 0.5 * std::pow(0.96, n * psi));
    const double mu_next = b1 * (1. - 0.5 * std::pow(0.96, (n + 1) * psi));
    st.mu_product.mul_(mu);
    const double mu_product = st.mu_product.item<double>();
    const double mu_product_next = mu_product * mu_next;
    Tensor denom = st.exp_avg_sq.div(bias_correction2).sqrt().add_(cfg_.eps);
    p.addcdiv_(grad, denom, -lr * (1. - mu) / (1. - mu_product));
    p.addcdiv_(st.exp_avg, denom, (-lr * mu_next) / (1. - mu_product_next));
    return;
  }
  Tensor denom = (st.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(cfg_.eps);
  if (type == OptimizerKind::kQhAdam) {
    const double nu = cfg_.qh_nu;
    p.addcdiv_(st.exp_avg, denom, -lr * nu / bias_correction1);
    p.addcdiv_(grad, denom, -lr * (1 - nu));
    return;
  }
  p.addcdiv_(st.exp_avg, denom, -lr / bias_correction1);
}

// The delay correction: the update u_t just applied (the weight change since `before`) is
// extrapolated over the parameter's delay, W += scale d (u_t - u_(t-1)).
void Optimizer::correct(size_t i, const Tensor& before, int64_t delay) {
  Tensor p = params_.tensors()[i];
  Tensor change = p.detach() - before;
  State& st = state_of(i);
  if (st.last_change.defined()) {
    p.add_(change - st.last_change, correction_scale_ * static_cast<double>(delay));
  }
  st.last_change = change;
}

void Optimizer::step(double lr, const std::vector<double>& lr_scale,
                     const std::vector<int64_t>& delays) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_.tensors()[i];
    if (tracking_) stats_[i].updated = false;
    if (!p.grad().defined()) continue;
    const int64_t delay = delays.empty() ? 0 : delays.at(i);
    const bool corrected = correction_scale_ > 0.0 && delay > 0;
    Tensor before;
    if (tracking_ || corrected) before = p.detach().clone();
    step_one(i, lr_scale.empty() ? lr : lr * lr_scale.at(i));
    if (corrected) correct(i, before, delay);
    if (!tracking_) continue;
    Tensor change = p.detach() - before;
    UpdateStats& s = stats_.at(i);
    s.update_sq = change.square().sum().item<double>();
    s.numel = p.numel();
    s.updated = true;
    s.has_prev = last_change_.at(i).defined();
    s.dot_prev = s.has_prev ? (change * last_change_[i]).sum().item<double>() : 0.0;
    s.prev_sq = s.has_prev ? last_change_[i].square().sum().item<double>() : 0.0;
    last_change_[i] = change;
  }
}

void Optimizer::set_tracking(bool on) {
  tracking_ = on;
  stats_.assign(params_.size(), UpdateStats{});
  last_change_.assign(params_.size(), Tensor());
}

void Optimizer::zero_grad() {
  for (const auto& p : params_.tensors()) {
    if (p.grad().defined()) p.mutable_grad() = Tensor();
  }
}

bool Optimizer::apply(double lr, double max_norm, const std::vector<double>& lr_scale,
                      const std::vector<int64_t>& delays) {
  bool any = false;
  for (const auto& p : params_.tensors()) any = any || p.grad().defined();
  if (!any) return false;
  if (tracking_) {
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor& g = params_.tensors()[i].grad();
      stats_[i].grad_sq = g.defined() ? g.square().sum().item<double>() : 0.0;
    }
  }
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
  step(lr, lr_scale, delays);
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

ParamSet Optimizer::predict(const ParamSet& weights, double step,
                            const std::vector<double>& lr_scale) const {
  torch::NoGradGuard no_grad;
  ParamSet out;
  for (size_t j = 0; j < weights.size(); ++j) {
    const std::string& name = weights.names()[j];
    const size_t i = params_.index(name);
    const std::optional<State>& st = state_[i];
    const Tensor& w = weights.tensors()[j];
    const double s = lr_scale.empty() ? step : step * lr_scale.at(i);
    const bool sgd = cfg_.optimizer == OptimizerKind::kSgd;
    const Tensor* direction = !st        ? nullptr
                              : muon_[i] ? &st->last_update
                              : sgd      ? &st->momentum_buffer
                                         : &st->exp_avg;
    Tensor hat;
    if (direction == nullptr || !direction->defined() || s == 0.0) {
      hat = w.detach().clone();
    } else if (muon_[i]) {
      hat = w.detach().add(st->last_update, -s * muon_lr_ratio_);
    } else if (sgd) {
      hat = w.detach().add(st->momentum_buffer, -s);
    } else {
      const double n = static_cast<double>(st->step);
      const double bias_correction1 = 1 - std::pow(cfg_.beta1, n);
      const double bias_correction2 = 1 - std::pow(cfg_.beta2, n);
      Tensor denom = (st->exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(cfg_.eps);
      hat = w.detach().addcdiv(st->exp_avg, denom, -s / bias_correction1);
    }
    out.add(name, hat.requires_grad_(true));
  }
  return out;
}

c10::impl::GenericDict Optimizer::state_dict() const {
  c10::impl::GenericDict out(c10::StringType::get(), c10::AnyType::get());
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::optional<State>& st = state_[i];
    if (!st) continue;
    c10::impl::GenericDict s(c10::StringType::get(), c10::AnyType::get());
    if (cfg_.optimizer == OptimizerKind::kSgd) {
      if (st->momentum_buffer.defined()) s.insert("momentum_buffer", st->momentum_buffer);
    } else if (muon_[i]) {
      s.insert("step", st->step);
      s.insert("momentum_buffer", st->momentum_buffer);
      s.insert("last_update", st->last_update);
    } else {
      s.insert("step", st->step);
      s.insert("exp_avg", st->exp_avg);
      s.insert("exp_avg_sq", st->exp_avg_sq);
      if (st->mu_product.defined()) s.insert("mu_product", st->mu_product);
    }
    if (st->last_change.defined()) s.insert("last_change", st->last_change);
    if (s.size() > 0) out.insert(params_.names()[i], s);
  }
  return out;
}

void Optimizer::load_state_dict(const c10::impl::GenericDict& d) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_.names()[i];
    if (!d.contains(name)) continue;
    auto s = d.at(name).toGenericDict();
    auto need = [&](const char* key) {
      if (!s.contains(key)) {
        throw CheckpointError("optimizer state of " + name + " lacks " + key,
                              "the checkpoint was written with another optimizer");
      }
      return s.at(key);
    };
    // A copy on the parameter's device (checkpoints hold CPU tensors).
    const c10::Device device = params_.tensors()[i].device();
    auto tensor = [&](const char* key) {
      return need(key).toTensor().to(device, /*non_blocking=*/false, /*copy=*/true);
    };
    State st;
    if (cfg_.optimizer == OptimizerKind::kSgd) {
      if (s.contains("momentum_buffer")) st.momentum_buffer = tensor("momentum_buffer");
    } else if (muon_[i]) {
      st.step = need("step").toInt();
      st.momentum_buffer = tensor("momentum_buffer");
      st.last_update = tensor("last_update");
    } else {
      st.step = need("step").toInt();
      st.exp_avg = tensor("exp_avg");
      st.exp_avg_sq = tensor("exp_avg_sq");
      if (cfg_.optimizer == OptimizerKind::kNAdam) st.mu_product = tensor("mu_product");
    }
    if (s.contains("last_change")) st.last_change = tensor("last_change");
    state_[i] = std::move(st);
  }
}

double learning_rate(const TrainConfig& cfg, int64_t step) {
  if (cfg.warmup_steps > 0 && step < cfg.warmup_steps) {
    return cfg.lr * static_cast<double>(step + 1) / static_cast<double>(cfg.warmup_steps);
  }
  if (cfg.schedule == LrSchedule::kConstant) return cfg.lr;
  const double span = static_cast<double>(std::max<int64_t>(1, cfg.steps - cfg.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - cfg.warmup_steps) / span);
  return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + std::cos(M_PI * progress));
}

double delay_correction_scale(const EngineConfig& e) {
  return e.delay_correction == DelayCorrection::kExtrapolate ? e.correction_scale : 0.0;
}

double stale_lr_factor(const EngineConfig& e, int64_t delay, int64_t tick) {
  if (e.stale_lr == StaleLr::kNone || delay <= 0) return 1.0;
  const double since = static_cast<double>(std::max<int64_t>(0, tick - e.sync_warmup));
  const double T = static_cast<double>(std::max<int64_t>(1, e.stale_lr_ticks));
  return 1.0 / std::pow(static_cast<double>(delay), 1.0 - std::min(since / T, 1.0));
}

}  // namespace ouroboros
