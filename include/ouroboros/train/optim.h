// Optimizers over named parameters (SGD, Adam, AdamW, QHAdam, NAdam, Muon), the learning-rate
// schedule, delay-scaled learning rates, weight prediction, the delay correction, gradient
// clipping and per-update statistics.
// One Optimizer per worker: each parameter keeps its own moments and step count, so a module's
// bias correction counts the updates that module has made. SGD, Adam and AdamW run the same
// tensor operations as libtorch's torch::optim classes (bit for bit, tested); NAdam follows
// torch.optim.NAdam of torch >= 2.0; QHAdam is Ma and Yarats (ICLR 2019); Muon follows
// torch.optim.Muon (torch >= 2.9) with its Newton-Schulz iteration in float32 rather than
// bfloat16, for the blocks' weight matrices, and AdamW for every other parameter.
// docs/DELAY.md says why the delay-tolerant options exist.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/core/config.h"
#include "ouroboros/model/language_model.h"

namespace ouroboros {

// What one update did to one parameter (recorded when tracking is on).
struct UpdateStats {
  double grad_sq = 0.0;    // squared L2 norm of the gradient before clipping
  double update_sq = 0.0;  // squared L2 norm of the weight change
  double dot_prev = 0.0;   // <this change, the previous change> (0 without a previous one)
  double prev_sq = 0.0;    // squared norm of the previous change
  int64_t numel = 0;
  bool has_prev = false;
  bool updated = false;  // the last update changed this parameter (it had a gradient)
};

// The statistics of a group of parameters (a module): what the metrics file reports.
struct ModuleStats {
  int64_t step = 0;         // steps done when the update was made
  int64_t module = 0;       // 1..K; 0 = the whole model (methods without modules)
  double grad_norm = 0.0;   // L2 norm of the module's gradient, before clipping
  double update_rms = 0.0;  // root mean square of the weight change
  double update_cos = 0.0;  // cosine between this update and the module's previous one
  bool has_cos = false;
  bool updated = false;  // any of the group's parameters took part in the update
};
// Sums the statistics of the parameters at `indices` that took part in the last update.
ModuleStats summarize(int64_t module, const std::vector<UpdateStats>& stats,
                      const std::vector<size_t>& indices);

class Optimizer {
 public:
  // params share storage with the model: step() updates them in place. correction_scale > 0
  // turns the delay correction on (delay_correction_scale()).
  Optimizer(const TrainConfig& cfg, const ParamSet& params, double correction_scale = 0.0);
  // Applies the gradients present; a parameter whose grad is undefined is left alone.
  // lr_scale (empty, or one factor per parameter) multiplies lr parameter by parameter.
  // delays (empty, or the delay in ticks of each parameter's gradient) turn on the delay
  // correction (engine.delay_correction) for the parameters whose delay is above 0.
  void step(double lr, const std::vector<double>& lr_scale = {},
            const std::vector<int64_t>& delays = {});
  void zero_grad();
  // One update: clip the gradients present to max_norm (0 = off), step at lr, clear them.
  // Returns false, changing nothing, when no parameter has a gradient (a pipeline not yet full).
  // A gradient that is not finite is dropped without an update while the config's
  // skip_nonfinite budget lasts (skipped() counts them); after that NumericError names the
  // parameter.
  bool apply(double lr, double max_norm, const std::vector<double>& lr_scale = {},
             const std::vector<int64_t>& delays = {});
  int64_t skipped() const { return skipped_; }
  // Scales the gradients present so their global L2 norm is at most max_norm (0 = no-op).
  // Returns the norm before clipping.
  double clip(double max_norm);
  // Weight prediction: detached copies of `weights` (a subset of params(), same tensors) moved
  // `step` (a horizon times a learning rate, times lr_scale of each parameter when given) along
  // the optimizer's current update direction: m_hat / (sqrt(v_hat) + eps) for the Adam family,
  // the momentum buffer for SGD, the last applied (orthogonalized, shape-scaled) update for
  // Muon's matrices. A parameter without state yet is copied unchanged. The copies require
  // grad, so they can stand in for a frozen weight version.
  ParamSet predict(const ParamSet& weights, double step,
                   const std::vector<double>& lr_scale = {}) const;
  // While tracking, every update records UpdateStats per parameter (costs one copy of the
  // weights per update and keeps the previous change).
  void set_tracking(bool on);
  const std::vector<UpdateStats>& last_stats() const { return stats_; }
  // {param name: {"step": int, "exp_avg": T, ...}} for the parameters that have state.
  c10::impl::GenericDict state_dict() const;
  // Restores state for the parameters named in d that this optimizer holds.
  void load_state_dict(const c10::impl::GenericDict& d);
  const ParamSet& params() const { return params_; }
  // Whether the parameter at index i takes Muon's update (a block's weight matrix under
  // --optimizer muon); the others take AdamW.
  bool uses_muon(size_t i) const { return muon_.at(i); }

 private:
  struct State {
    int64_t step = 0;
    Tensor exp_avg, exp_avg_sq;  // Adam family
    Tensor mu_product;           // NAdam: product of the momentum schedule, float32 scalar
    Tensor momentum_buffer;      // SGD, Muon
    Tensor last_update;          // Muon: the last orthogonalized update times its shape scale
    Tensor last_change;          // delay correction: the optimizer's previous weight change
  };
  void step_one(size_t i, double lr);
  void step_adam(size_t i, double lr, OptimizerKind type);
  void step_muon(size_t i, double lr);
  void correct(size_t i, const Tensor& before, int64_t delay);
  State& state_of(size_t i);

  TrainConfig cfg_;
  int64_t skip_budget_ = 0, skipped_ = 0;
  ParamSet params_;
  std::vector<double> weight_decay_;  // per parameter: cfg.weight_decay or 0 (decays())
  std::vector<bool> muon_;            // per parameter: takes Muon's update
  double muon_lr_ratio_ = 1.0;        // muon_lr / lr: Muon's learning rate on lr's schedule
  double correction_scale_ = 0.0;     // extrapolation per tick of delay; 0 = no correction
  std::vector<std::optional<State>> state_;
  bool tracking_ = false;
  std::vector<UpdateStats> stats_;
  std::vector<Tensor> last_change_;
};

// Learning rate at a step: linear warm-up from lr/warmup to lr over warmup_steps, then cosine
// decay to min_lr at cfg.steps (or constant).
double learning_rate(const TrainConfig& cfg, int64_t step);

// The factor on the learning rate of a parameter updated with `delay` ticks of staleness at tick
// t (engine.stale_lr): 1 for "none" and for delay 0; PipeMare's 1 / d^(1 - min(u / T, 1)) with u
// the ticks since the delays started (after the synchronous warm-up) and T engine.stale_lr_ticks.
double stale_lr_factor(const EngineConfig& e, int64_t delay, int64_t tick);

// The delay correction's extrapolation per tick of delay (engine.correction_scale), or 0 when
// engine.delay_correction is none.
double delay_correction_scale(const EngineConfig& e);

// Whether a parameter gets weight decay: matrices and embeddings yes, biases and LayerNorm no.
bool decays(const std::string& name);

// Whether --optimizer muon gives a parameter Muon's update: the weight matrices inside the
// Transformer blocks (GPT's h.N., Transformer-XL's layers.N.), not embeddings, the output head,
// LayerNorm gains, biases or Transformer-XL's position biases.
bool muon_matrix(const std::string& name, const Tensor& p);
// How many square matrices a fused query-key-value weight stacks (3 for GPT's c_attn and
// Transformer-XL's qkv_net, which Muon orthogonalizes slice by slice), 1 for any other.
int64_t muon_slices(const std::string& name);
// Newton-Schulz orthogonalization as torch.optim.Muon runs it (quintic coefficients 3.4445,
// -4.775, 2.0315; input scaled by its Frobenius norm, at least eps), in g's dtype.
Tensor newton_schulz(const Tensor& g, int64_t steps, double eps = 1e-7);
// Muon's per-shape learning-rate factor for a rows x cols matrix.
double muon_lr_factor(MuonLrAdjust adjust, int64_t rows, int64_t cols);

}  // namespace ouroboros
