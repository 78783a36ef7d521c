// The language-model interface the trainer, the Ouroboros engine, evaluation, sampling,
// checkpoints and the planner are written against, with the named-weight set and the per-module
// forward context every model shares. Models are pure functions of named weights, so a module can
// run forward with any weight version (docs/ALGORITHM.md section 7). Implementations: GPT
// (gpt.h) and TransformerXL (transformer_xl.h); make_model picks one from the config.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/core/config.h"
#include "ouroboros/plan/partition.h"

namespace ouroboros {

using torch::Tensor;

// Named tensors in a fixed order ("wte.weight", "h.3.attn.c_attn.weight", "layers.0.r_w_bias").
class ParamSet {
 public:
  void add(const std::string& name, Tensor t);
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  const Tensor& at(const std::string& name) const;
  Tensor& at(const std::string& name);
  // Position of a parameter in names() and tensors(); throws Error for an unknown name.
  size_t index(const std::string& name) const;
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }
  size_t size() const { return names_.size(); }
  int64_t numel() const;
  // The named subset, sharing storage with this set.
  ParamSet subset(const std::vector<std::string>& names) const;
  // Detached copies that require grad: a frozen weight version for a delayed backward, or
  // trainable weights of their own (a checkpoint's weights, a test's second run).
  ParamSet snapshot() const;
  // The set on `device`: this very set when every tensor is there, else copies that require
  // grad as trainable weights.
  ParamSet to(const c10::Device& device) const;

 private:
  std::vector<std::string> names_;
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

// Attention span settings of a recurrent model for one pass; evaluation uses its own.
struct RecurrenceLengths {
  int64_t mem_len = 0;       // hidden states kept per layer after a segment
  int64_t clamp_len = -1;    // relative distances above it use its encoding; -1 = no clamp
  bool same_length = false;  // every query attends over the same number of positions
};

// State of one module's forward passes. Dropout masks come from `generator` (one per module, so
// parallel workers never share a stream); evaluation passes training = false. A recurrent model
// keeps each of its layers' memory of the previous segment here (layer index -> [B, M, C], no
// gradient); since every module sees the segments in order, each module's context holds exactly
// the memories of its own layers.
struct ForwardContext {
  bool training = false;
  c10::optional<at::Generator> generator;
  std::map<int64_t, Tensor> memory;
  std::optional<RecurrenceLengths> lengths;  // unset: the model's training lengths
  bool sum_loss = false;  // module K returns the summed cross-entropy (as loss_sum), not the mean
};

class LanguageModel {
 public:
  virtual ~LanguageModel() = default;
  virtual const ModelConfig& config() const = 0;
  // True when forward passes read and advance ForwardContext::memory (segment recurrence): the
  // training data must then come as consecutive segments of parallel streams.
  virtual bool recurrent() const { return false; }

  virtual ParamSet init_params(uint64_t seed) const = 0;
  // The number of weights init_params makes, without making them.
  virtual int64_t param_count() const = 0;
  // The parameters a module reads: its blocks, plus the input embedding (module 1) and the output
  // head (module K; tied weights are listed there too unless the module also embeds).
  virtual std::vector<std::string> module_param_names(const ModulePlan& m) const = 0;
  // A module's forward: input is the token ids [B, T] for module 1 (else the hidden state
  // [B, T, C]); returns the mean loss for module K (targets needed), else the hidden state.
  virtual Tensor forward_module(const ParamSet& p, const ModulePlan& m, const Tensor& input,
                                const Tensor& targets, ForwardContext& ctx) const = 0;
  // The whole model: mean and summed cross-entropy of next-token prediction, targets [B, T].
  virtual Tensor loss(const ParamSet& p, const Tensor& idx, const Tensor& targets,
                      ForwardContext& ctx) const = 0;
  virtual Tensor loss_sum(const ParamSet& p, const Tensor& idx, const Tensor& targets,
                          ForwardContext& ctx) const = 0;
  // Scores whose softmax is the next-token distribution at every position: [B, T, V].
  virtual Tensor output_logits(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const = 0;
  // The longest context sampling feeds the model at once.
  virtual int64_t max_context() const { return config().block_size; }
  // Evaluation of a recurrent model: segment length and attention spans (unused otherwise).
  virtual int64_t eval_segment_length() const { return config().block_size; }
  virtual RecurrenceLengths eval_lengths() const { return {}; }

  // Estimated forward cost of each piece for one batch of B sequences, in seconds on one core
  // (plan/cost_model.h): what the "auto" cut is balanced on and the schedule simulated with.
  virtual CostModel cost_model(int64_t batch_size) const = 0;
  // FLOPs of one training step on B sequences, counting matmuls only (2 per multiply-add), the
  // backward twice the forward: what the benchmarks divide by time.
  virtual double train_step_flops(int64_t batch_size) const = 0;
};

// The model the config names (model.model: gpt | transformer-xl); cfg.vocab_size must be set.
std::unique_ptr<LanguageModel> make_model(const ModelConfig& cfg);

// A module's dropout generator: seeded from the run seed and the module index.
at::Generator make_generator(uint64_t seed);

// t on the device of p's weights (a model runs where its weights are: token ids, targets,
// received activations and restored memories follow them); t itself when it is there already.
Tensor on_device_of(const ParamSet& p, const Tensor& t);

// A dropout mask shaped like x with entries 1 (probability keep) and 0, drawn from gen. The
// generators are CPU generators (saved in checkpoints, one per module), so on a GPU the mask is
// drawn on the CPU, exactly as the same run on the CPU draws it, and copied to x's device.
Tensor dropout_mask(const Tensor& x, double keep, const c10::optional<at::Generator>& gen);

}  // namespace ouroboros
