// Helpers of the model tests: tiny Transformer-XL shapes, double-precision weights nudged off their
// initial values, random token ids.
#pragma once

#include <cstdint>

#include "ouroboros/model/language_model.h"
#include "test_util.h"

namespace ouroboros_test {

using namespace ouroboros;

inline ModelConfig tiny_xl(int64_t pre_lnorm = 0) {
  ModelConfig cfg = ouroboros_test::tiny_config().model;
  cfg.model = ModelKind::kTransformerXl;
  cfg.n_layer = 2;
  cfg.n_embd = 8;  // C, 2 heads: D = 4
  cfg.d_inner = 12;
  cfg.block_size = 4;  // T
  cfg.mem_len = 8;
  cfg.vocab_size = 11;
  cfg.pre_lnorm = pre_lnorm;
  return cfg;
}

// The model's initial weights in double precision, nudged by normal noise of the given scale so
// biases and LayerNorm gains are generic (not exactly 0 and 1); leaves that require grad.
inline ParamSet double_params(const LanguageModel& model, uint64_t seed, double noise) {
  ParamSet init = model.init_params(seed);
  at::Generator gen = make_generator(seed + 1);
  ParamSet p;
  for (size_t i = 0; i < init.size(); ++i) {
    Tensor t = init.tensors()[i].detach().to(torch::kDouble);
    t = t + noise * at::normal(0.0, 1.0, t.sizes(), gen, torch::kDouble);
    p.add(init.names()[i], t.requires_grad_(true));
  }
  return p;
}

inline Tensor random_tokens(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  at::Generator gen = make_generator(seed);
  return at::randint(V, {B, T}, gen, torch::kInt64);
}

}  // namespace ouroboros_test
