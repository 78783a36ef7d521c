// Transformer-XL (Dai et al. 2019) as pure functions of named weights: relative positional
// attention with sinusoidal encodings and two learned global biases per head, segment-level
// recurrence through per-layer memories (ForwardContext::memory, never differentiated), post- or
// pre-LayerNorm blocks with a ReLU feed-forward, and a tied embedding/softmax. block_size is the
// training segment length (tgt_len). Details and deviations: docs/TRANSFORMER_XL.md.
#pragma once

#include <string>
#include <vector>

#include "ouroboros/model/language_model.h"

namespace ouroboros {

class TransformerXL : public LanguageModel {
 public:
  // cfg must be valid with vocab_size > 0 and model == "transformer-xl".
  explicit TransformerXL(const ModelConfig& cfg);
  const ModelConfig& config() const override { return cfg_; }
  bool recurrent() const override { return true; }
  int64_t d_inner() const { return cfg_.d_inner > 0 ? cfg_.d_inner : 4 * cfg_.n_embd; }

  // normal(0, 0.02) matrices, embedding and r_w/r_r biases; zero linear biases; unit LayerNorms.
  ParamSet init_params(uint64_t seed) const override;
  int64_t param_count() const override;
  std::vector<std::string> layer_param_names(int64_t i) const;
  std::vector<std::string> module_param_names(const ModulePlan& m) const override;

  // Training lengths, or evaluation lengths (the eval_* fields resolved against the training ones).
  RecurrenceLengths train_lengths() const;
  RecurrenceLengths eval_lengths() const override;
  int64_t eval_tgt_len() const {
    return cfg_.eval_tgt_len > 0 ? cfg_.eval_tgt_len : cfg_.block_size;
  }
  int64_t eval_segment_length() const override { return eval_tgt_len(); }

  // Adaptive softmax: cluster boundaries 0 = b_0 < b_1 < ... < b_n = V (from adaptive_cutoffs);
  // {0, V} for the full softmax.
  const std::vector<int64_t>& bounds() const { return bounds_; }
  bool adaptive() const { return bounds_.size() > 2; }
  // Width of cluster i's embedding: n_embd / div_val^i.
  int64_t cluster_dim(size_t i) const;

  // idx [B, T] -> dropout(E(idx) * sqrt(C)): [B, T, C]; E is word_emb, or for the adaptive input
  // the cluster's table emb_layers.i, projected to C by emb_projs.i when narrower.
  Tensor embed(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const;
  // Adaptive softmax log-probabilities of every token, h [N, C] -> [N, V] (after dropout): the
  // head scores cluster 0's tokens and one entry per tail cluster; a tail token's log-probability
  // is its cluster's head entry plus its log-probability within the cluster. Weights and
  // projections are the input embedding's (tied).
  Tensor adaptive_log_probs(const ParamSet& p, const Tensor& h) const;
  // Per-target negative log-likelihood, h [N, C], targets [N] -> [N], computing each tail
  // cluster only for the rows whose target is in it.
  Tensor adaptive_nll(const ParamSet& p, const Tensor& h, const Tensor& targets) const;
  // Sinusoidal encodings of the relative distances klen-1, ..., 0 (clamped to clamp_len when it is
  // > 0): [klen, C], first half sin, second half cos.
  static Tensor positional_encoding(int64_t klen, int64_t n_embd, int64_t clamp_len,
                                    const at::TensorOptions& options);
  // x [..., Q, K] with column j holding distance K-1-j -> out[..., i, j] = x[..., i, j + Q-1-i]
  // (relative distance (K-Q+i) - j), done with a pad and two views; entries j > K-Q+i are junk.
  static Tensor rel_shift(const Tensor& x);
  // [Q, K] bool, true where query i may not attend to key j (mlen keys of memory come first).
  Tensor attention_mask(int64_t qlen, int64_t mlen, const RecurrenceLengths& len) const;
  // Relative multi-head attention of layer i: h [B, Q, C] over cat(mem, h) ([B, M+Q, C]), with
  // pos [M+Q, C] from positional_encoding; returns o_net's output [B, Q, C] (before dropout and
  // the residual). x is h, or LayerNorm(h) for pre-LayerNorm (cat likewise).
  Tensor rel_attention(const ParamSet& p, int64_t i, const Tensor& h, const Tensor& mem,
                       const Tensor& pos, const Tensor& mask, ForwardContext& ctx) const;
  // One block: attention sub-layer and feed-forward, each with dropout and LayerNorm.
  Tensor layer(const ParamSet& p, int64_t i, const Tensor& h, const Tensor& mem, const Tensor& pos,
               const Tensor& mask, ForwardContext& ctx) const;
  // Layers [first, end) on h, reading and advancing ctx.memory for each of them.
  Tensor layers(const ParamSet& p, int64_t first, int64_t end, const Tensor& h,
                ForwardContext& ctx) const;
  // h [B, T, C] -> logits [B, T, V] = dropout(h) . word_emb^T + bias (adaptive: log-probs).
  Tensor logits(const ParamSet& p, const Tensor& h, ForwardContext& ctx) const;
  // Per-target negative log-likelihood [B T] of the head on h [B, T, C].
  Tensor head_nll(const ParamSet& p, const Tensor& h, const Tensor& targets,
                  ForwardContext& ctx) const;
  // The cross-entropy of the head on h against targets [B, T]: the mean, or the sum.
  Tensor head_loss(const ParamSet& p, const Tensor& h, const Tensor& targets, ForwardContext& ctx,
                   bool sum) const;

  Tensor forward_module(const ParamSet& p, const ModulePlan& m, const Tensor& input,
                        const Tensor& targets, ForwardContext& ctx) const override;
  Tensor hidden(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const;
  Tensor loss(const ParamSet& p, const Tensor& idx, const Tensor& targets,
              ForwardContext& ctx) const override;
  Tensor loss_sum(const ParamSet& p, const Tensor& idx, const Tensor& targets,
                  ForwardContext& ctx) const override;
  Tensor output_logits(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const override;
  // Sampling feeds the last tgt_len + mem_len tokens at once, without memory.
  int64_t max_context() const override { return cfg_.block_size + cfg_.mem_len; }
  // Relative attention over mem_len + T keys (a full memory), the r_net projection of the
  // encodings, the ReLU feed-forward of width d_inner, and the (adaptive) softmax head. Its
  // backward_ratio is 1.5: per-op timings of the workers measured the forward at about 40% of a
  // block's work (the score tensors' elementwise passes weigh more than in GPT).
  CostModel cost_model(int64_t batch_size) const override;
  double train_step_flops(int64_t batch_size) const override;

 private:
  Tensor dropout(const Tensor& x, double rate, ForwardContext& ctx) const;
  std::vector<std::string> embedding_names() const;
  // cluster i's tail (or head, i = 0) scores: project h to the cluster's width, then . emb^T.
  Tensor cluster_hidden(const ParamSet& p, const Tensor& h, size_t i) const;
  ModelConfig cfg_;
  std::vector<int64_t> bounds_;
};

}  // namespace ouroboros
