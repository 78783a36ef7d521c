// The GPT-2 style language model, written as functions of an explicit set of named weights, so a
// module of the model can run forward with any weight version (docs/ALGORITHM.md section 7).
#pragma once

#include <string>
#include <vector>

#include "ouroboros/model/language_model.h"

namespace ouroboros {

class GPT : public LanguageModel {
 public:
  // cfg must be valid with vocab_size > 0.
  explicit GPT(const ModelConfig& cfg);
  const ModelConfig& config() const override { return cfg_; }

  // All parameters, GPT-2 initialisation: normal(0, 0.02) for matrices and embeddings, residual
  // projections (attn.c_proj, mlp.c_proj) scaled by 1/sqrt(2L), zero biases, unit LayerNorm gains.
  ParamSet init_params(uint64_t seed) const override;
  int64_t param_count() const override;
  std::vector<std::string> block_param_names(int64_t i) const;
  // The parameters a module reads: its blocks, plus wte/wpe (module 1) and ln_f and wte (module K).
  std::vector<std::string> module_param_names(const ModulePlan& m) const override;

  // idx: [B, T] int64 -> h: [B, T, C]
  Tensor embed(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const;
  // h: [B, T, C] -> [B, T, C]
  Tensor block(const ParamSet& p, int64_t i, const Tensor& h, ForwardContext& ctx) const;
  // h: [B, T, C] -> logits [B, T, V] = ln_f(h) . wte^T
  Tensor logits(const ParamSet& p, const Tensor& h) const;
  // Cross-entropy of logits(h) against targets [B, T]: the mean, or the sum.
  Tensor head_loss(const ParamSet& p, const Tensor& h, const Tensor& targets,
                   bool sum = false) const;

  // A module's forward: input is idx for module 1 (else the hidden state); returns the loss for
  // module K (targets needed), else the hidden state.
  Tensor forward_module(const ParamSet& p, const ModulePlan& m, const Tensor& input,
                        const Tensor& targets, ForwardContext& ctx) const override;
  // The whole model: hidden state before the head, and the loss.
  Tensor hidden(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const;
  Tensor loss(const ParamSet& p, const Tensor& idx, const Tensor& targets,
              ForwardContext& ctx) const override;
  Tensor loss_sum(const ParamSet& p, const Tensor& idx, const Tensor& targets,
                  ForwardContext& ctx) const override;
  Tensor output_logits(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const override;
  CostModel cost_model(int64_t batch_size) const override;
  double train_step_flops(int64_t batch_size) const override;

 private:
  Tensor dropout(const Tensor& x, ForwardContext& ctx) const;
  ModelConfig cfg_;
  Tensor causal_mask_;  // [T, T] bool, true above the diagonal
};

}  // namespace ouroboros
