// Transformer-XL following Dai et al. 2019 and its reference implementation
// (RelPartialLearnableMultiHeadAttn, PositionwiseFF, MemTransformerLM), batch-first.
#include "ouroboros/model/transformer_xl.h"
#include "ouroboros/model/precision.h"

#include <cmath>
#include <limits>

#include "ouroboros/core/errors.h"
#include "ouroboros/model/gpt.h"

namespace ouroboros {
namespace {

std::string layer_prefix(int64_t i) { return "layers." + std::to_string(i) + "."; }

}  // namespace

TransformerXL::TransformerXL(const ModelConfig& cfg) : cfg_(cfg) {
  if (cfg_.vocab_size <= 0) throw ConfigError("vocab_size must be set before building the model");
  if (cfg_.n_embd % cfg_.n_head != 0) {
    throw ConfigError("n_embd " + std::to_string(cfg_.n_embd) + " is not divisible by n_head " +
                      std::to_string(cfg_.n_head));
  }
  if (cfg_.n_embd % 2 != 0) {
    throw ConfigError("transformer-xl needs an even n_embd for its sinusoidal encodings, got " +
                      std::to_string(cfg_.n_embd));
  }
  bounds_ = {0};
  std::string rest = cfg_.adaptive_cutoffs;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string item = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    int64_t c = 0;
    try {
      size_t used = 0;
      c = std::stoll(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw ConfigError(
          "adaptive_cutoffs '" + cfg_.adaptive_cutoffs + "' is not a list of integers",
          "write increasing token ids, e.g. --adaptive-cutoffs 20000,40000,200000");
    }
    if (c <= bounds_.back() || c >= cfg_.vocab_size) {
      throw ConfigError("adaptive_cutoffs must increase strictly within (0, vocab_size " +
                            std::to_string(cfg_.vocab_size) + "), got " + cfg_.adaptive_cutoffs,
                        "drop the cutoffs at or above the vocabulary size");
    }
    bounds_.push_back(c);
  }
  bounds_.push_back(cfg_.vocab_size);
  for (size_t i = 0; i + 1 < bounds_.size(); ++i) {
    if (cluster_dim(i) < 1) {
      throw ConfigError("div_val " + std::to_string(cfg_.div_val) + " leaves cluster " +
                            std::to_string(i) + " no embedding width",
                        "use a smaller --div-val or fewer cutoffs");
    }
  }
}

int64_t TransformerXL::cluster_dim(size_t i) const {
  int64_t d = cfg_.n_embd;
  for (size_t j = 0; j < i; ++j) d /= cfg_.div_val;
  return d;
}

std::vector<std::string> TransformerXL::embedding_names() const {
  if (!adaptive()) return {"word_emb.weight"};
  std::vector<std::string> names;
  for (size_t i = 0; i + 1 < bounds_.size(); ++i) {
    names.push_back("word_emb.emb_layers." + std::to_string(i) + ".weight");
    if (cluster_dim(i) != cfg_.n_embd) names.push_back("word_emb.emb_projs." + std::to_string(i));
  }
  return names;
}

RecurrenceLengths TransformerXL::train_lengths() const {
  return {cfg_.mem_len, cfg_.clamp_len, cfg_.same_length == 1};
}

RecurrenceLengths TransformerXL::eval_lengths() const {
  RecurrenceLengths r = train_lengths();
  if (cfg_.eval_mem_len >= 0) r.mem_len = cfg_.eval_mem_len;
  if (cfg_.eval_clamp_len >= 0) r.clamp_len = cfg_.eval_clamp_len;
  if (cfg_.eval_same_length >= 0) r.same_length = cfg_.eval_same_length == 1;
  return r;
}

std::vector<std::string> TransformerXL::layer_param_names(int64_t i) const {
  const std::string l = layer_prefix(i);
  return {l + "r_w_bias",
          l + "r_r_bias",
          l + "attn.qkv_net.weight",
          l + "attn.r_net.weight",
          l + "attn.o_net.weight",
          l + "attn.layer_norm.weight",
          l + "attn.layer_norm.bias",
          l + "ff.layer_1.weight",
          l + "ff.layer_1.bias",
          l + "ff.layer_2.weight",
          l + "ff.layer_2.bias",
          l + "ff.layer_norm.weight",
          l + "ff.layer_norm.bias"};
}

std::vector<std::string> TransformerXL::module_param_names(const ModulePlan& m) const {
  std::vector<std::string> names;
  if (m.embed) names = embedding_names();
  for (int64_t i = m.first_block; i < m.end_block; ++i) {
    for (auto& n : layer_param_names(i)) names.push_back(std::move(n));
  }
  if (m.head) {
    names.push_back("crit.bias");
    if (adaptive()) {
      names.push_back("crit.cluster_weight");
      names.push_back("crit.cluster_bias");
    }
    if (!m.embed) {  // the tied output weights (and projections)
      for (auto& n : embedding_names()) names.push_back(std::move(n));
    }
  }
  return names;
}

ParamSet TransformerXL::init_params(uint64_t seed) const {
  const int64_t C = cfg_.n_embd, V = cfg_.vocab_size, H = cfg_.n_head, D = C / H;
  const int64_t Di = d_inner();
  const double std = 0.02;
  at::Generator gen = make_generator(seed);
  auto normal = [&](std::vector<int64_t> shape) {
    return at::normal(0.0, std, shape, gen).requires_grad_(true);
  };
  auto ones = [](int64_t n) { return torch::ones({n}).requires_grad_(true); };
  auto zeros = [](int64_t n) { return torch::zeros({n}).requires_grad_(true); };

  ParamSet p;
  if (adaptive()) {
    for (size_t c = 0; c + 1 < bounds_.size(); ++c) {
      const int64_t d = cluster_dim(c);
      p.add("word_emb.emb_layers." + std::to_string(c) + ".weight",
            normal({bounds_[c + 1] - bounds_[c], d}));
      if (d != C) p.add("word_emb.emb_projs." + std::to_string(c), normal({C, d}));
    }
  } else {
    p.add("word_emb.weight", normal({V, C}));
  }
  for (int64_t i = 0; i < cfg_.n_layer; ++i) {
    const std::string l = layer_prefix(i);
    p.add(l + "r_w_bias", normal({H, D}));
    p.add(l + "r_r_bias", normal({H, D}));
    p.add(l + "attn.qkv_net.weight", normal({3 * H * D, C}));  // torch.nn.Linear [out, in]
    p.add(l + "attn.r_net.weight", normal({H * D, C}));
    p.add(l + "attn.o_net.weight", normal({C, H * D}));
    p.add(l + "attn.layer_norm.weight", ones(C));
    p.add(l + "attn.layer_norm.bias", zeros(C));
    p.add(l + "ff.layer_1.weight", normal({Di, C}));
    p.add(l + "ff.layer_1.bias", zeros(Di));
    p.add(l + "ff.layer_2.weight", normal({C, Di}));
    p.add(l + "ff.layer_2.bias", zeros(C));
    p.add(l + "ff.layer_norm.weight", ones(C));
    p.add(l + "ff.layer_norm.bias", zeros(C));
  }
  p.add("crit.bias", zeros(V));
  if (adaptive()) {
    const int64_t clusters = static_cast<int64_t>(bounds_.size()) - 2;
    p.add("crit.cluster_weight", normal({clusters, cluster_dim(0)}));
    p.add("crit.cluster_bias", zeros(clusters));
  }
  return p;
}

Tensor TransformerXL::dropout(const Tensor& x, double rate, ForwardContext& ctx) const {
  if (!ctx.training || rate == 0.0) return x;
  const double keep = 1.0 - rate;
  // One multiply by the scaled mask (as torch.nn.functional.dropout does), not two passes.
  Tensor mask = dropout_mask(x, keep, ctx.generator).div_(keep);
  return x * mask;
}

Tensor TransformerXL::embed(const ParamSet& p, const Tensor& idx_in, ForwardContext& ctx) const {
  const Tensor idx = on_device_of(p, idx_in);
  const double scale = std::sqrt(static_cast<double>(cfg_.n_embd));
  if (!adaptive())
    return dropout(at::embedding(p.at("word_emb.weight"), idx) * scale, cfg_.dropout, ctx);
  Tensor e;
  for (size_t c = 0; c + 1 < bounds_.size(); ++c) {
    const std::string i = std::to_string(c);
    const int64_t lo = bounds_[c], n = bounds_[c + 1] - lo;
    Tensor in = idx.ge(lo).logical_and(idx.lt(lo + n));
    Tensor part =
        at::embedding(p.at("word_emb.emb_layers." + i + ".weight"), (idx - lo).clamp(0, n - 1));
    if (cluster_dim(c) != cfg_.n_embd) part = at::linear(part, p.at("word_emb.emb_projs." + i));
    part = part * in.unsqueeze(-1).to(part.scalar_type());
    e = e.defined() ? e + part : part;
  }
  return dropout(e * scale, cfg_.dropout, ctx);
}

Tensor TransformerXL::cluster_hidden(const ParamSet& p, const Tensor& h, size_t c) const {
  if (cluster_dim(c) == cfg_.n_embd) return h;
  // emb_projs.c maps the cluster width to C ([C, d]); the output side applies its transpose.
  return at::matmul(h, p.at("word_emb.emb_projs." + std::to_string(c)));
}

Tensor TransformerXL::adaptive_log_probs(const ParamSet& p, const Tensor& h) const {
  const Tensor& bias = p.at("crit.bias");
  const int64_t head_n = bounds_[1];
  Tensor head_w = at::cat({p.at("word_emb.emb_layers.0.weight"), p.at("crit.cluster_weight")}, 0);
  Tensor head_b = at::cat({bias.narrow(0, 0, head_n), p.at("crit.cluster_bias")}, 0);
  Tensor head = at::log_softmax(at::linear(cluster_hidden(p, h, 0), head_w, head_b), -1);
  std::vector<Tensor> parts = {head.narrow(-1, 0, head_n)};
  for (size_t c = 1; c + 1 < bounds_.size(); ++c) {
    const int64_t lo = bounds_[c], n = bounds_[c + 1] - lo;
    Tensor tail =
        at::log_softmax(at::linear(cluster_hidden(p, h, c),
                                   p.at("word_emb.emb_layers." + std::to_string(c) + ".weight"),
                                   bias.narrow(0, lo, n)),
                        -1);
    parts.push_back(head.narrow(-1, head_n + static_cast<int64_t>(c) - 1, 1) + tail);
  }
  return at::cat(parts, -1);
}

Tensor TransformerXL::adaptive_nll(const ParamSet& p, const Tensor& h,
                                   const Tensor& targets) const {
  const Tensor& bias = p.at("crit.bias");
  const int64_t head_n = bounds_[1];
  Tensor head_w = at::cat({p.at("word_emb.emb_layers.0.weight"), p.at("crit.cluster_weight")}, 0);
  Tensor head_b = at::cat({bias.narrow(0, 0, head_n), p.at("crit.cluster_bias")}, 0);
  Tensor head = at::log_softmax(at::linear(cluster_hidden(p, h, 0), head_w, head_b), -1);
  // Head column of each target: itself in cluster 0, else its cluster's entry.
  Tensor column = targets.clone();
  for (size_t c = 1; c + 1 < bounds_.size(); ++c) {
    Tensor in = targets.ge(bounds_[c]).logical_and(targets.lt(bounds_[c + 1]));
    column.masked_fill_(in, head_n + static_cast<int64_t>(c) - 1);
  }
  Tensor nll = -head.gather(1, column.unsqueeze(1)).squeeze(1);
  for (size_t c = 1; c + 1 < bounds_.size(); ++c) {
    const int64_t lo = bounds_[c], n = bounds_[c + 1] - lo;
    Tensor rows = targets.ge(lo).logical_and(targets.lt(lo + n)).nonzero().squeeze(1);
    if (rows.numel() == 0) continue;
    Tensor hc = cluster_hidden(p, h.index_select(0, rows), c);
    Tensor tail =
        at::log_softmax(at::linear(hc, p.at("word_emb.emb_layers." + std::to_string(c) + ".weight"),
                                   bias.narrow(0, lo, n)),
                        -1);
    Tensor within = (targets.index_select(0, rows) - lo).unsqueeze(1);
    nll = nll.index_add(0, rows, -tail.gather(1, within).squeeze(1));
  }
  return nll;
}

Tensor TransformerXL::positional_encoding(int64_t klen, int64_t n_embd, int64_t clamp_len,
                                          const at::TensorOptions& options) {
  Tensor pos = torch::arange(klen - 1, -1, -1.0, options);  // distances klen-1 .. 0
  if (clamp_len > 0) pos = pos.clamp_max(static_cast<double>(clamp_len));
  Tensor inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0.0, n_embd, 2.0, options) /
                                                  static_cast<double>(n_embd));
  Tensor angles = at::outer(pos, inv_freq);  // [klen, C/2]
  return at::cat({angles.sin(), angles.cos()}, -1);
}

Tensor TransformerXL::rel_shift(const Tensor& x) {
  const int64_t nd = x.dim();
  const int64_t Q = x.size(nd - 2), K = x.size(nd - 1);
  std::vector<int64_t> pad_shape(x.sizes().begin(), x.sizes().end());
  pad_shape[nd - 1] = 1;
  Tensor padded = at::cat({at::zeros(pad_shape, x.options()), x}, nd - 1);  // [..., Q, K+1]
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[nd - 2] = K + 1;
  shape[nd - 1] = Q;
  padded = padded.view(shape);                            // [..., K+1, Q]
  return padded.narrow(nd - 2, 1, K).reshape(x.sizes());  // [..., Q, K]
}

Tensor TransformerXL::attention_mask(int64_t qlen, int64_t mlen,
                                     const RecurrenceLengths& len) const {
  const int64_t klen = mlen + qlen;
  Tensor ones = torch::ones({qlen, klen}, torch::kBool);
  Tensor mask = ones.triu(1 + mlen);  // the future
  if (len.same_length) {
    const int64_t mask_len = klen - len.mem_len;
    const int64_t shift = mask_len > 0 ? qlen - mask_len : qlen;
    mask = mask.logical_or(ones.tril(-shift));  // the far past, so every query sees as many keys
  }
  return mask;
}

Tensor TransformerXL::rel_attention(const ParamSet& p, int64_t i, const Tensor& h,
                                    const Tensor& mem, const Tensor& pos, const Tensor& mask,
                                    ForwardContext& ctx) const {
  const std::string l = layer_prefix(i);
  const int64_t B = h.size(0), Q = h.size(1), C = cfg_.n_embd, H = cfg_.n_head, D = C / H;
  Tensor cat = mem.defined() && mem.size(1) > 0 ? at::cat({mem, h}, 1) : h;  // [B, K, C]
  const int64_t K = cat.size(1);
  if (cfg_.pre_lnorm) {
    cat = at::layer_norm(cat, {C}, p.at(l + "attn.layer_norm.weight"),
                         p.at(l + "attn.layer_norm.bias"), 1e-5);
  }
  Tensor heads = at::linear(cat, p.at(l + "attn.qkv_net.weight"));  // [B, K, 3HD]
  auto parts = heads.split(H * D, 2);
  Tensor q = parts[0].narrow(1, K - Q, Q).reshape({B, Q, H, D}).transpose(1, 2);  // [B, H, Q, D]
  Tensor k = parts[1].reshape({B, K, H, D}).permute({0, 2, 3, 1});                // [B, H, D, K]
  Tensor v = parts[2].reshape({B, K, H, D}).transpose(1, 2);                      // [B, H, K, D]
  Tensor r = at::linear(pos, p.at(l + "attn.r_net.weight")).view({K, H, D}).permute({1, 2, 0});
  Tensor u = p.at(l + "r_w_bias").view({1, H, 1, D});  // content bias
  Tensor w = p.at(l + "r_r_bias").view({1, H, 1, D});  // position bias
  // The 1/sqrt(D) scale goes on the [B, H, Q, D] queries, not on the [B, H, Q, K] scores, and the
  // mask is filled in place: the score tensors are the biggest of the model, and every pass over
  // them is memory-bound.
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Tensor ac = at::matmul((q + u) * scale, k);             // [B, H, Q, K]
  Tensor bd = rel_shift(at::matmul((q + w) * scale, r));  // [B, H, Q, K]
  Tensor score = ac.add_(bd);
  score.masked_fill_(mask, -std::numeric_limits<double>::infinity());
  Tensor prob = dropout(at::softmax(score, -1), cfg_.attn_dropout, ctx);
  Tensor vec = at::matmul(prob, v).transpose(1, 2).reshape({B, Q, H * D});
  return at::linear(vec, p.at(l + "attn.o_net.weight"));
}

Tensor TransformerXL::layer(const ParamSet& p, int64_t i, const Tensor& h, const Tensor& mem,
                            const Tensor& pos, const Tensor& mask, ForwardContext& ctx) const {
  const std::string l = layer_prefix(i);
  const int64_t C = cfg_.n_embd;
  const double eps = 1e-5;
  Tensor attn = dropout(rel_attention(p, i, h, mem, pos, mask, ctx), cfg_.dropout, ctx);
  auto ln = [&](const Tensor& x, const std::string& name) {
    return at::layer_norm(x, {C}, p.at(l + name + ".weight"), p.at(l + name + ".bias"), eps);
  };
  Tensor a = cfg_.pre_lnorm ? h + attn : ln(h + attn, "attn.layer_norm");
  auto core = [&](const Tensor& x) {
    Tensor f = at::relu(at::linear(x, p.at(l + "ff.layer_1.weight"), p.at(l + "ff.layer_1.bias")));
    f = dropout(f, cfg_.dropout, ctx);
    f = at::linear(f, p.at(l + "ff.layer_2.weight"), p.at(l + "ff.layer_2.bias"));
    return dropout(f, cfg_.dropout, ctx);
  };
  return cfg_.pre_lnorm ? a + core(ln(a, "ff.layer_norm")) : ln(a + core(a), "ff.layer_norm");
}

Tensor TransformerXL::layers(const ParamSet& p, int64_t first, int64_t end, const Tensor& h_in,
                             ForwardContext& ctx) const {
  if (first >= end) return h_in;
  const RecurrenceLengths len = ctx.lengths ? *ctx.lengths : train_lengths();
  const int64_t B = h_in.size(0), Q = h_in.size(1);
  // Every layer of a module holds as much memory as the others: they advance together.
  auto mem_of = [&](int64_t i) {
    auto it = ctx.memory.find(i);
    return it == ctx.memory.end() ? Tensor() : it->second.to(h_in.device());
  };
  Tensor first_mem = mem_of(first);
  const int64_t mlen = first_mem.defined() ? first_mem.size(1) : 0;
  if (first_mem.defined() && first_mem.size(0) != B) {
    throw Error("transformer-xl memory holds " + std::to_string(first_mem.size(0)) +
                    " streams but the batch has " + std::to_string(B),
                "keep the batch size fixed within a run (memory is per stream)");
  }
  Tensor pos = positional_encoding(mlen + Q, cfg_.n_embd, len.clamp_len, h_in.options());
  pos = dropout(pos, cfg_.dropout, ctx);
  const Tensor mask = attention_mask(Q, mlen, len).to(h_in.device());
  Tensor h = h_in;
  for (int64_t i = first; i < end; ++i) {
    Tensor mem = mem_of(i);
    if ((mem.defined() ? mem.size(1) : 0) != mlen) {
      throw Error("transformer-xl layer " + std::to_string(i) + " has a memory of another length");
    }
    Tensor out = layer(p, i, h, mem, pos, mask, ctx);
    // The memory of layer i is its input of the last mem_len positions, with no gradient.
    if (len.mem_len > 0) {
      Tensor cat = mlen > 0 ? at::cat({mem, h.detach()}, 1) : h.detach();
      const int64_t keep = std::min<int64_t>(len.mem_len, cat.size(1));
      ctx.memory[i] = cat.narrow(1, cat.size(1) - keep, keep).contiguous();
    } else {
      ctx.memory.erase(i);
    }
    h = out;
  }
  return h;
}

Tensor TransformerXL::logits(const ParamSet& p, const Tensor& h, ForwardContext& ctx) const {
  Tensor d = dropout(h, cfg_.dropout, ctx);
  if (adaptive()) return adaptive_log_probs(p, d);
  return at::linear(d, p.at("word_emb.weight"), p.at("crit.bias"));
}

Tensor TransformerXL::head_nll(const ParamSet& p, const Tensor& h, const Tensor& targets,
                               ForwardContext& ctx) const {
  if (adaptive()) {
    Tensor d = dropout(h, cfg_.dropout, ctx);
    return adaptive_nll(p, d.reshape({-1, cfg_.n_embd}), targets.reshape({-1}));
  }
  return at::cross_entropy_loss(logits(p, h, ctx).view({-1, cfg_.vocab_size}),
                                targets.reshape({-1}), {}, at::Reduction::None);
}

Tensor TransformerXL::forward_module(const ParamSet& p, const ModulePlan& m, const Tensor& input,
                                     const Tensor& targets, ForwardContext& ctx) const {
  PrecisionScope precision(cfg_.dtype);
  Tensor h = m.embed ? embed(p, input, ctx) : on_device_of(p, input);
  h = layers(p, m.first_block, m.end_block, h, ctx);
  if (!m.head) return h;
  return head_loss(p, h, targets, ctx, ctx.sum_loss);
}

Tensor TransformerXL::head_loss(const ParamSet& p, const Tensor& h, const Tensor& targets_in,
                                ForwardContext& ctx, bool sum) const {
  const Tensor targets = on_device_of(p, targets_in);
  if (adaptive()) {
    Tensor nll = head_nll(p, h, targets, ctx);
    return sum ? nll.sum() : nll.mean();
  }
  return at::cross_entropy_loss(logits(p, h, ctx).view({-1, cfg_.vocab_size}),
                                targets.reshape({-1}), {},
                                sum ? at::Reduction::Sum : at::Reduction::Mean);
}

Tensor TransformerXL::hidden(const ParamSet& p, const Tensor& idx, ForwardContext& ctx) const {
  return layers(p, 0, cfg_.n_layer, embed(p, idx, ctx), ctx);
}

Tensor TransformerXL::loss(const ParamSet& p, const Tensor& idx, const Tensor& targets,
                           ForwardContext& ctx) const {
  PrecisionScope precision(cfg_.dtype);
  return head_loss(p, hidden(p, idx, ctx), targets, ctx, false);
}

Tensor TransformerXL::loss_sum(const ParamSet& p, const Tensor& idx, const Tensor& targets,
                               ForwardContext& ctx) const {
  PrecisionScope precision(cfg_.dtype);
  return head_loss(p, hidden(p, idx, ctx), targets, ctx, true);
}

Tensor TransformerXL::output_logits(const ParamSet& p, const Tensor& idx,
                                    ForwardContext& ctx) const {
  PrecisionScope precision(cfg_.dtype);
  return logits(p, hidden(p, idx, ctx), ctx);
}

}  // namespace ouroboros
