// GPT-2 style decoder as pure functions of named weights: embeddings, pre-LayerNorm blocks, and
// the tied output head with mean cross-entropy.
#include "ouroboros/model/gpt.h"
#include "ouroboros/core/torch_compat.h"
#include "ouroboros/model/precision.h"

#include <algorithm>
#include <cmath>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {
std::string str(int64_t v) { return std::to_string(v); }
}  // namespace

GPT::GPT(const ModelConfig& cfg) : cfg_(cfg) {
  if (cfg_.vocab_size <= 0) throw ConfigError("vocab_size must be set before building the model");
  if (cfg_.n_embd % cfg_.n_head != 0) {
    throw ConfigError("n_embd " + std::to_string(cfg_.n_embd) + " is not divisible by n_head " +
                      std::to_string(cfg_.n_head));
  }
  causal_mask_ = torch::ones({cfg_.block_size, cfg_.block_size}, torch::kBool).triu(1);
}

std::vector<std::string> GPT::block_param_names(int64_t i) const {
  const std::string h = "h." + std::to_string(i) + ".";
  return {h + "ln_1.weight",      h + "ln_1.bias",          h + "attn.c_attn.weight",
          h + "attn.c_attn.bias", h + "attn.c_proj.weight", h + "attn.c_proj.bias",
          h + "ln_2.weight",      h + "ln_2.bias",          h + "mlp.c_fc.weight",
          h + "mlp.c_fc.bias",    h + "mlp.c_proj.weight",  h + "mlp.c_proj.bias"};
}

std::vector<std::string> GPT::module_param_names(const ModulePlan& m) const {
  std::vector<std::string> names;
  if (m.embed) names = {"wte.weight", "wpe.weight"};
  for (int64_t i = m.first_block; i < m.end_block; ++i) {
    for (auto& n : block_param_names(i)) names.push_back(std::move(n));
  }
  if (m.head) {
    names.push_back("ln_f.weight");
    names.push_back("ln_f.bias");
    if (!m.embed) names.push_back("wte.weight");  // the tied output projection
  }
  return names;
}

ParamSet GPT::init_params(uint64_t seed) const {
  const int64_t C = cfg_.n_embd, V = cfg_.vocab_size, T = cfg_.block_size;
  const double std = 0.02, proj_std = 0.02 / std::sqrt(2.0 * cfg_.n_layer);
  at::Generator gen = make_generator(seed);
  auto normal = [&](std::vector<int64_t> shape, double s) {
    return at::normal(0.0, s, shape, gen).requires_grad_(true);
  };
  auto ones = [](int64_t n) { return torch::ones({n}).requires_grad_(true); };
  auto zeros = [](int64_t n) { return torch::zeros({n}).requires_grad_(true); };

  ParamSet p;
  p.add("wte.weight", normal({V, C}, std));
  p.add("wpe.weight", normal({T, C}, std));
  for (int64_t i = 0; i < cfg_.n_layer; ++i) {
    const std::string h = "h." + std::to_string(i) + ".";
    p.add(h + "ln_1.weight", ones(C));
    p.add(h + "ln_1.bias", zeros(C));
    p.add(h + "attn.c_attn.weight", normal({3 * C, C}, std));  // torch.nn.Linear layout [out, in]
    p.add(h + "attn.c_attn.bias", zeros(3 * C));
    p.add(h + "attn.c_proj.weight", normal({C, C}, proj_std));
    p.add(h + "attn.c_proj.bias", zeros(C));
    p.add(h + "ln_2.weight", ones(C));
    p.add(h + "ln_2.bias", zeros(C));
    p.add(h + "mlp.c_fc.weight", normal({4 * C, C}, std));
    p.add(h + "mlp.c_fc.bias", zeros(4 * C));
    p.add(h + "mlp.c_proj.weight", normal({C, 4 * C}, proj_std));
    p.add(h + "mlp.c_proj.bias", zeros(C));
  }
  p.add("ln_f.weight", ones(C));
  p.add("ln_f.bias", zeros(C));
  return p;
}

Tensor GPT::dropout(const Tensor& x, ForwardContext& ctx) const {
  if (!ctx.training || cfg_.dropout == 0.0) return x;
  // An explicit generator keeps each module's masks reproducible when workers run in parallel.
  const double keep = 1.0 - cfg_.dropout;
  Tensor mask = dropout_mask(x, keep, ctx.generator);
  return x * mask / keep;
}

Tensor GPT::embed(const ParamSet& p, const Tensor& idx_in, ForwardContext& ctx) const {
  const Tensor idx = on_device_of(p, idx_in);
  const int64_t T = idx.size(1);
  if (T > cfg_.block_size) {
    throw Error("sequence of " + std::to_string(T) + " tokens exceeds block_size " +
                std::to_string(cfg_.block_size));
  }
  Tensor tok = at::embedding(p.at("wte.weight"), idx);  // [B, T, C]
  Tensor pos = p.at("wpe.weight").narrow(0, 0, T);      // [T, C]
  return dropout(tok + pos, ctx);
}

Tensor GPT::block(const ParamSet& p, int64_t i, const Tensor& x, ForwardContext& ctx) const {
  const std::string h = "h." + std::to_string(i) + ".";
  const int64_t B = x.size(0), T = x.size(1), C = cfg_.n_embd, H = cfg_.n_head, D = C / H;
  const double eps = 1e-5;

  // Causal self-attention; c_attn's output is q, k, v, each split into H contiguous heads.
  Tensor a = at::layer_norm(x, {C}, p.at(h + "ln_1.weight"), p.at(h + "ln_1.bias"), eps);
  Tensor qkv = at::linear(a, p.at(h + "attn.c_attn.weight"), p.at(h + "attn.c_attn.bias"));
  auto parts = qkv.split(C, 2);                            // 3 x [B, T, C]
  Tensor q = parts[0].view({B, T, H, D}).transpose(1, 2);  // [B, H, T, D]
  Tensor k = parts[1].view({B, T, H, D}).transpose(1, 2);
  Tensor v = parts[2].view({B, T, H, D}).transpose(1, 2);
  Tensor y;
#if OUROBOROS_TORCH_AT_LEAST(2, 0)
  if (x.is_cuda() && !(ctx.training && cfg_.dropout > 0.0)) {
    // On a GPU, the fused kernels (flash or memory-efficient attention) compute the same
    // function to rounding without the [B, H, T, T] scores; with attention dropout the masks
    // must come from the module's generator, so the explicit form below runs.
    y = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
  }
#endif
  if (!y.defined()) {
    Tensor att = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(D)));
    att = att.masked_fill(causal_mask_.narrow(0, 0, T).narrow(1, 0, T).to(x.device()),
                          -std::numeric_limits<float>::infinity());
    att = dropout(at::softmax(att, -1), ctx);  // [B, H, T, T]
    y = at::matmul(att, v);
  }
  y = y.transpose(1, 2).reshape({B, T, C});
  y = at::linear(y, p.at(h + "attn.c_proj.weight"), p.at(h + "attn.c_proj.bias"));
  Tensor r = x + dropout(y, ctx);

  // MLP: C -> 4C -> GELU (tanh approximation) -> C.
  Tensor m = at::layer_norm(r, {C}, p.at(h + "ln_2.weight"), p.at(h + "ln_2.bias"), eps);
  m = at::gelu(at::linear(m, p.at(h + "mlp.c_fc.weight"), p.at(h + "mlp.c_fc.bias")), "tanh");
  m = at::linear(m, p.at(h + "mlp.c_proj.weight"), p.at(h + "mlp.c_proj.bias"));
  return r + dropout(m, ctx);
}

Tensor GPT::logits(const ParamSet& p, const Tensor& h) const {
  Tensor n = at::layer_norm(h, {cfg_.n_embd}, p.at("ln_f.weight"), p.at("ln_f.bias"), 1e-5);
  return at::linear(n, p.at("wte.weight"));  // [B, T, V]
}

Tensor GPT::head_loss(const ParamSet& p, const Tensor& h, const Tensor& targets, bool sum) const {
  Tensor lg = logits(p, h);
  return at::cross_entropy_loss(lg.view({-1, cfg_.vocab_size}),
                                on_device_of(p, targets).reshape({-1}), {},
                                sum ? at::Reduction::Sum : at::Reduction::Mean);
}

Tensor GPT::forward_module(const ParamSet& p, const ModulePlan& m, const Tensor& input,
                           const Tensor& targets, ForwardContext& ctx) const {
  PrecisionScope precision(cfg_.dtype);
  Tensor h = m.embed ? embed(p, input, ctx) : on_device_of(p, input);
  for (int64_t i = m.first_block; i < m.end_block; ++i) h = block(p, i, h, ctx);
  return m.head ? head_loss(p, h, targets, ctx.sum_loss) : h;
}

Tensor GPT::hidden(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const {
  Tensor h = embed(p, idx, ctx);
  for (int64_t i = 0; i < cfg_.n_layer; ++i) h = block(p, i, h, ctx);
  return h;
}

Tensor GPT::loss(const ParamSet& p, const Tensor& idx, const Tensor& targets,
                 ForwardContext& ctx) const {
  PrecisionScope precision(cfg_.dtype);
  return head_loss(p, hidden(p, idx, ctx), targets);
}

Tensor GPT::loss_sum(const ParamSet& p, const Tensor& idx, const Tensor& targets,
                     ForwardContext& ctx) const {
  PrecisionScope precision(cfg_.dtype);
  return head_loss(p, hidden(p, idx, ctx), targets, true);
}

Tensor GPT::output_logits(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const {
  PrecisionScope precision(cfg_.dtype);
  return logits(p, hidden(p, idx, ctx));
}

// wte V C, wpe T C; per block two LayerNorms 4C, c_attn 3C C + 3C, c_proj C C + C, c_fc 4C C + 4C,
// mlp c_proj 4C C + C; ln_f 2C.
int64_t GPT::param_count() const {
  const int64_t C = cfg_.n_embd, V = cfg_.vocab_size, T = cfg_.block_size, L = cfg_.n_layer;
  return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C;
}

// Matmul FLOPs at kMatmulFlopsPerSecond plus elementwise passes at kElementwisePerSecond; the
// per-head softmax assumes head dim 64 (at least one head), as the cut search always has.
CostModel GPT::cost_model(int64_t batch_size) const {
  const int64_t n_layer = cfg_.n_layer, n_embd = cfg_.n_embd, block_size = cfg_.block_size,
                vocab_size = cfg_.vocab_size;
  if (n_layer < 0 || n_embd < 1 || block_size < 1 || vocab_size < 1 || batch_size < 1)
    throw PlanError("model shape L=" + str(n_layer) + " C=" + str(n_embd) +
                        " T=" + str(block_size) + " V=" + str(vocab_size) +
                        " B=" + str(batch_size) + " is impossible",
                    "all sizes must be >= 1 (L >= 0)");
  const double C = n_embd, T = block_size, V = vocab_size, B = batch_size, N = B * T;
  const double heads = std::max<int64_t>(1, n_embd / 64);               // head dim 64 assumed
  const double block_matmul = N * 24 * C * C + 4 * B * T * T * C;       // qkv, proj, MLP; QK^T, AV
  const double block_elementwise = N * C * 20 + B * T * T * heads * 4;  // LN, GELU, adds; softmax
  CostModel cost;
  cost.block_forward.assign(
      n_layer, block_matmul / kMatmulFlopsPerSecond + block_elementwise / kElementwisePerSecond);
  cost.embed_forward = N * C * 3 / kElementwisePerSecond;
  cost.head_forward =
      2 * N * C * V / kMatmulFlopsPerSecond + (N * V * 6 + N * C * 8) / kElementwisePerSecond;
  cost.backward_ratio = 2.0;
  cost.update_per_block = 12 * C * C * 10 / kElementwisePerSecond;
  cost.update_embed_head = (V * C + T * C) * 10 / kElementwisePerSecond;
  // q, k, v and the projection (C x C each), the MLP's 4C x C and C x 4C.
  cost.newton_schulz_per_block =
      (4 * newton_schulz_flops(C, C) + 2 * newton_schulz_flops(4 * C, C)) / kMatmulFlopsPerSecond;
  return cost;
}

// Forward 2*B*T*(12*L*C*C + C*V) + 4*L*B*T*T*C: the weights' matmuls, the tied head, q.k^T and
// att.v; backward twice the forward.
double GPT::train_step_flops(int64_t batch_size) const {
  const double B = static_cast<double>(batch_size), T = static_cast<double>(cfg_.block_size),
               C = static_cast<double>(cfg_.n_embd), V = static_cast<double>(cfg_.vocab_size),
               L = static_cast<double>(cfg_.n_layer);
  const double forward = 2.0 * B * T * (12.0 * L * C * C + C * V) + 4.0 * L * B * T * T * C;
  return 3.0 * forward;
}

}  // namespace ouroboros
