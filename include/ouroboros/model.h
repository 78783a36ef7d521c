// The GPT-2 style language model, written as functions of an explicit set of named weights, so a
// module of the model can run forward with any weight version (ALGORITHM.md section 7).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/config.h"
#include "ouroboros/partition.h"

namespace ouroboros {

using torch::Tensor;

// Named tensors in a fixed order, with GPT-2 names ("wte.weight", "h.3.attn.c_attn.weight").
class ParamSet {
 public:
  void add(const std::string& name, Tensor t);
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  const Tensor& at(const std::string& name) const;
  Tensor& at(const std::string& name);
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }
  size_t size() const { return names_.size(); }
  int64_t numel() const;
  // The named subset, sharing storage with this set.
  ParamSet subset(const std::vector<std::string>& names) const;
  // Detached copies that require grad: a frozen weight version for a delayed backward.
  ParamSet snapshot() const;

 private:
  std::vector<std::string> names_;
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

// Randomness of one forward pass: dropout masks come from this generator (one per module, so
// parallel workers never share a stream). Evaluation passes training = false.
struct ForwardContext {
  bool training = false;
  c10::optional<at::Generator> generator;
};

class GPT {
 public:
  // cfg must be valid with vocab_size > 0.
  explicit GPT(const ModelConfig& cfg);
  const ModelConfig& config() const { return cfg_; }

  // All parameters, GPT-2 initialisation: normal(0, 0.02) for matrices and embeddings, residual
  // projections (attn.c_proj, mlp.c_proj) scaled by 1/sqrt(2L), zero biases, unit LayerNorm gains.
  ParamSet init_params(uint64_t seed) const;
  std::vector<std::string> block_param_names(int64_t i) const;
  // The parameters a module reads: its blocks, plus wte/wpe (module 1) and ln_f and wte (module K).
  std::vector<std::string> module_param_names(const ModulePlan& m) const;

  // idx: [B, T] int64 -> h: [B, T, C]
  Tensor embed(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const;
  // h: [B, T, C] -> [B, T, C]
  Tensor block(const ParamSet& p, int64_t i, const Tensor& h, ForwardContext& ctx) const;
  // h: [B, T, C] -> logits [B, T, V] = ln_f(h) . wte^T
  Tensor logits(const ParamSet& p, const Tensor& h) const;
  // Mean cross-entropy of logits(h) against targets [B, T].
  Tensor head_loss(const ParamSet& p, const Tensor& h, const Tensor& targets) const;

  // A module's forward: input is idx for module 1 (else the hidden state); returns the loss for
  // module K (targets needed), else the hidden state.
  Tensor forward_module(const ParamSet& p, const ModulePlan& m, const Tensor& input,
                        const Tensor& targets, ForwardContext& ctx) const;
  // The whole model: hidden state before the head, and the loss.
  Tensor hidden(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const;
  Tensor loss(const ParamSet& p, const Tensor& idx, const Tensor& targets,
              ForwardContext& ctx) const;

 private:
  Tensor dropout(const Tensor& x, ForwardContext& ctx) const;
  ModelConfig cfg_;
  Tensor causal_mask_;  // [T, T] bool, true above the diagonal
};

// A module's dropout generator: seeded from the run seed and the module index.
at::Generator make_generator(uint64_t seed);

}  // namespace ouroboros
