// Optimizers over named parameters (libtorch's SGD, Adam, AdamW), the learning-rate schedule, and
// gradient clipping. One Optimizer per worker: each parameter keeps its own moments and step
// count, so a module's Adam bias correction counts the updates that module has made.
#pragma once

#include <memory>
#include <string>

#include <torch/torch.h>

#include "ouroboros/core/config.h"
#include "ouroboros/model/language_model.h"

namespace ouroboros {

class Optimizer {
 public:
  // params share storage with the model: step() updates them in place.
  Optimizer(const TrainConfig& cfg, const ParamSet& params);
  // Applies the gradients present; a parameter whose grad is undefined is left alone.
  void step(double lr);
  void zero_grad();
  // One update: clip the gradients present to max_norm (0 = off), step at lr, clear them.
  // Returns false, changing nothing, when no parameter has a gradient (a pipeline not yet full).
  // A gradient that is not finite is dropped without an update while the config's
  // skip_nonfinite budget lasts (skipped() counts them); after that NumericError names the
  // parameter.
  bool apply(double lr, double max_norm);
  int64_t skipped() const { return skipped_; }
  // Scales the gradients present so their global L2 norm is at most max_norm (0 = no-op).
  // Returns the norm before clipping.
  double clip(double max_norm);
  // {param name: {"step": int, "exp_avg": T, ...}} for the parameters that have state.
  c10::impl::GenericDict state_dict() const;
  // Restores state for the parameters named in d that this optimizer holds.
  void load_state_dict(const c10::impl::GenericDict& d);
  const ParamSet& params() const { return params_; }

 private:
  std::string type_;
  int64_t skip_budget_ = 0, skipped_ = 0;
  ParamSet params_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
};

// Learning rate at a step: linear warm-up from lr/warmup to lr over warmup_steps, then cosine
// decay to min_lr at cfg.steps (or constant).
double learning_rate(const TrainConfig& cfg, int64_t step);

// Whether a parameter gets weight decay: matrices and embeddings yes, biases and LayerNorm no.
bool decays(const std::string& name);

}  // namespace ouroboros
