// label: unit
// Transformer-XL: relative attention with the shift against a loop over the paper's formula,
// segment recurrence against the concatenated text, no gradient through memory, gradients against
// finite differences (double precision), stream batching, and the presets' shapes.
#include "ouroboros/transformer_xl.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "ouroboros/config.h"
#include "ouroboros/errors.h"
#include "ouroboros/presets.h"
#include "ouroboros/stream.h"

namespace ouroboros {
namespace {

ModelConfig tiny_xl(int64_t pre_lnorm = 0) {
  ModelConfig cfg;
  cfg.model = "transformer-xl";
  cfg.n_layer = 2;
  cfg.n_embd = 8;   // C
  cfg.n_head = 2;   // D = 4
  cfg.d_inner = 12;
  cfg.block_size = 4;  // T
  cfg.mem_len = 8;
  cfg.vocab_size = 11;
  cfg.pre_lnorm = pre_lnorm;
  return cfg;
}

// Initial weights in double, nudged by noise so LayerNorm gains and biases are generic.
ParamSet double_params(const LanguageModel& model, uint64_t seed) {
  ParamSet init = model.init_params(seed);
  at::Generator gen = make_generator(seed + 1);
  ParamSet p;
  for (size_t i = 0; i < init.size(); ++i) {
    Tensor t = init.tensors()[i].detach().to(torch::kDouble);
    t = t + 0.1 * at::normal(0.0, 1.0, t.sizes(), gen, torch::kDouble);
    p.add(init.names()[i], t.requires_grad_(true));
  }
  return p;
}

Tensor random_tokens(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  at::Generator gen = make_generator(seed);
  return at::randint(V, {B, T}, gen, torch::kInt64);
}

// The attention of one layer written as the paper's formula, one score at a time:
//   a[i, j] = (q_i + u) . k_j + (q_i + v) . W_r r(d),  d = min(M + i - j, clamp_len),
// r(d) = [sin(d f_0) .. sin(d f_{C/2-1}), cos(d f_0) ..], f_c = 10000^(-2c/C), softmax over the
// keys j <= M + i (and, with same_length, j > i - shift), summed values, then o_net.
Tensor loop_attention(const ParamSet& p, const ModelConfig& cfg, const Tensor& h,
                      const Tensor& mem, const RecurrenceLengths& len) {
  const int64_t B = h.size(0), Q = h.size(1), M = mem.size(1), K = M + Q, C = cfg.n_embd,
                H = cfg.n_head, D = C / H;
  const Tensor cat_t = at::cat({mem, h}, 1).contiguous();
  const Tensor W_t = p.at("layers.0.attn.qkv_net.weight").detach().contiguous();  // [3HD, C]
  const Tensor Wr_t = p.at("layers.0.attn.r_net.weight").detach().contiguous();   // [HD, C]
  const Tensor u_t = p.at("layers.0.r_w_bias").detach().contiguous();
  const Tensor v_t = p.at("layers.0.r_r_bias").detach().contiguous();
  auto cat = cat_t.accessor<double, 3>();
  auto W = W_t.accessor<double, 2>();
  auto Wr = Wr_t.accessor<double, 2>();
  auto u = u_t.accessor<double, 2>();
  auto v = v_t.accessor<double, 2>();
  auto proj = [&](int64_t b, int64_t pos, int64_t row) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += W[row][c] * cat[b][pos][c];
    return s;
  };
  const int64_t mask_len = K - len.mem_len;
  const int64_t shift = mask_len > 0 ? Q - mask_len : Q;
  Tensor vec = torch::zeros({B, Q, H * D}, torch::kDouble);
  auto out = vec.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t n = 0; n < H; ++n) {
      for (int64_t i = 0; i < Q; ++i) {
        std::vector<double> score(K, -INFINITY);
        for (int64_t j = 0; j < K; ++j) {
          if (j > M + i) continue;
          if (len.same_length && j <= i - shift) continue;
          int64_t d = M + i - j;
          if (len.clamp_len > 0) d = std::min(d, len.clamp_len);
          std::vector<double> r(C);
          for (int64_t c = 0; c < C / 2; ++c) {
            const double f = std::pow(10000.0, -2.0 * c / C);
            r[c] = std::sin(d * f);
            r[C / 2 + c] = std::cos(d * f);
          }
          double s = 0;
          for (int64_t e = 0; e < D; ++e) {
            const int64_t row = n * D + e;
            const double q = proj(b, M + i, row);
            const double k = proj(b, j, H * D + row);
            double wr = 0;
            for (int64_t c = 0; c < C; ++c) wr += Wr[row][c] * r[c];
            s += (q + u[n][e]) * k + (q + v[n][e]) * wr;
          }
          score[j] = s / std::sqrt(static_cast<double>(D));
        }
        double mx = -INFINITY, z = 0;
        for (double s : score) mx = std::max(mx, s);
        for (double s : score) z += std::exp(s - mx);
        for (int64_t j = 0; j < K; ++j) {
          const double pr = std::exp(score[j] - mx) / z;
          for (int64_t e = 0; e < D; ++e) out[b][i][n * D + e] += pr * proj(b, j, 2 * H * D + n * D + e);
        }
      }
    }
  }
  return at::linear(vec, p.at("layers.0.attn.o_net.weight").detach());
}

TEST(TransformerXLTest, RelShiftMovesEachRowToItsDistances) {
  const int64_t Q = 3, K = 5;
  Tensor x = torch::arange(Q * K, torch::kDouble).view({1, Q, K});
  Tensor y = TransformerXL::rel_shift(x);
  for (int64_t i = 0; i < Q; ++i) {
    for (int64_t j = 0; j <= K - Q + i; ++j) {
      EXPECT_EQ(y[0][i][j].item<double>(), x[0][i][j + Q - 1 - i].item<double>()) << i << "," << j;
    }
  }
}

TEST(TransformerXLTest, RelativeAttentionEqualsTheLoopFormula) {
  for (int variant = 0; variant < 4; ++variant) {
    ModelConfig cfg = tiny_xl();
    TransformerXL model(cfg);
    ParamSet p = double_params(model, 3 + variant);
    const int64_t B = 2, Q = 3, M = variant == 3 ? 0 : 4;
    at::Generator gen = make_generator(50 + variant);
    Tensor h = at::normal(0.0, 1.0, {B, Q, cfg.n_embd}, gen, torch::kDouble);
    Tensor mem = at::normal(0.0, 1.0, {B, M, cfg.n_embd}, gen, torch::kDouble);
    RecurrenceLengths len{M, 0, false};
    if (variant == 1) len.clamp_len = 2;                       // distances 3..6 share r(2)
    if (variant == 2) len.same_length = true;                  // every query sees M keys
    ForwardContext ctx;
    Tensor pos = TransformerXL::positional_encoding(M + Q, cfg.n_embd, len.clamp_len,
                                                    h.options());
    Tensor got = model.rel_attention(p, 0, h, mem, pos, model.attention_mask(Q, M, len), ctx);
    Tensor want = loop_attention(p, cfg, h, mem, len);
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-12) << "variant " << variant;
    EXPECT_GT(want.abs().max().item<double>(), 1e-2);
  }
}

// With memory of every earlier position (mem_len >= 2T), three segments one after the other give
// the logits of one pass over their concatenation: the same keys at the same relative distances.
// Tolerance 1e-10 in double (only the order of additions differs). With mem_len = T the third
// segment no longer sees the first, so its logits differ.
TEST(TransformerXLTest, SegmentsWithMemoryEqualTheConcatenation) {
  for (int64_t pre : {0, 1}) {
    ModelConfig cfg = tiny_xl(pre);
    TransformerXL model(cfg);
    ParamSet p = double_params(model, 11);
    const int64_t T = 4;
    Tensor x = random_tokens(2, 3 * T, cfg.vocab_size, 5);
    ForwardContext whole;
    Tensor full = model.output_logits(p, x, whole);  // [B, 3T, V]
    for (int64_t mem_len : {8, 4}) {
      ForwardContext ctx;
      ctx.lengths = RecurrenceLengths{mem_len, 0, false};
      for (int64_t s = 0; s < 3; ++s) {
        Tensor seg = model.output_logits(p, x.narrow(1, s * T, T), ctx);
        const double diff = (seg - full.narrow(1, s * T, T)).abs().max().item<double>();
        if (s < 2 || mem_len == 8) {
          EXPECT_LT(diff, 1e-10) << "pre_lnorm " << pre << " mem_len " << mem_len << " seg " << s;
        } else {
          EXPECT_GT(diff, 1e-6) << "segment 3 cannot see segment 1 with mem_len = T";
        }
        ASSERT_EQ(ctx.memory.size(), 2u);
        EXPECT_EQ(ctx.memory.at(0).size(1), std::min<int64_t>(mem_len, (s + 1) * T));
      }
    }
  }
}

// Finite differences (h = 1e-6, double) of the second segment's loss with the memory left by
// the first held fixed: autograd must match for every tensor, post- and pre-LayerNorm, with
// clamp_len and same_length. The memory holds no graph; differentiating through it instead (one
// pass over both segments) gives another gradient.
TEST(TransformerXLTest, GradientsMatchFiniteDifferencesWithMemoryFixed) {
  struct Variant {
    int64_t pre_lnorm, clamp_len, same_length;
  };
  for (Variant v : {Variant{0, 0, 0}, Variant{1, 3, 1}}) {
    ModelConfig cfg = tiny_xl(v.pre_lnorm);
    cfg.mem_len = 5;
    cfg.clamp_len = v.clamp_len;
    cfg.same_length = v.same_length;
    TransformerXL model(cfg);
    ParamSet p = double_params(model, 21);
    const Tensor x1 = random_tokens(2, 4, cfg.vocab_size, 1), y1 = random_tokens(2, 4, 11, 2);
    const Tensor x2 = random_tokens(2, 4, cfg.vocab_size, 3), y2 = random_tokens(2, 4, 11, 4);
    ForwardContext first;
    model.loss(p, x1, y1, first);  // fills the memory
    for (const auto& [layer, m] : first.memory) {
      EXPECT_FALSE(m.requires_grad()) << "memory of layer " << layer << " carries a graph";
      EXPECT_EQ(m.size(1), 4);
    }
    auto second_loss = [&] {
      ForwardContext ctx;
      ctx.memory = first.memory;
      return model.loss(p, x2, y2, ctx);
    };
    second_loss().backward();

    const double h = 1e-6;
    std::mt19937_64 rng(9);
    int checked = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      Tensor w = p.tensors()[i];
      ASSERT_TRUE(w.grad().defined()) << p.names()[i];
      Tensor flat = w.detach().view({-1});
      Tensor grad = w.grad().view({-1});
      for (int s = 0; s < 4; ++s) {
        const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(flat.numel()));
        double numeric;
        {
          torch::NoGradGuard no_grad;
          const double orig = flat[j].item<double>();
          flat[j] = orig + h;
          const double up = second_loss().item<double>();
          flat[j] = orig - h;
          const double down = second_loss().item<double>();
          flat[j] = orig;
          numeric = (up - down) / (2 * h);
        }
        const double analytic = grad[j].item<double>();
        EXPECT_LE(std::abs(analytic - numeric), 1e-8 + 1e-6 * std::abs(numeric))
            << p.names()[i] << "[" << j << "]: autograd " << analytic << ", numeric " << numeric;
        ++checked;
      }
    }
    EXPECT_EQ(checked, 4 * (2 + 13 * 2));

    // Through-memory gradient of the same loss (one pass, second-segment positions only) differs.
    Tensor with_mem = p.at("layers.0.attn.qkv_net.weight").grad().clone();
    for (const auto& t : p.tensors()) t.mutable_grad() = Tensor();
    if (v.same_length == 0 && v.clamp_len == 0) {
      ForwardContext whole;
      whole.lengths = RecurrenceLengths{0, 0, false};
      Tensor lg = model.output_logits(p, at::cat({x1, x2}, 1), whole).narrow(1, 4, 4);
      Tensor l = at::cross_entropy_loss(lg.reshape({-1, 11}), y2.reshape({-1}));
      EXPECT_NEAR(l.item<double>(), second_loss().item<double>(), 1e-12);
      l.backward();
      EXPECT_GT((p.at("layers.0.attn.qkv_net.weight").grad() - with_mem).abs().max().item<double>(),
                1e-6);
    }
  }
}

// The whole model equals its modules chained (module 1 embeds, module K has the head), memories
// included, for any cut.
TEST(TransformerXLTest, ModulesChainedEqualTheWholeModel) {
  ModelConfig cfg = tiny_xl();
  cfg.n_layer = 3;
  TransformerXL model(cfg);
  ParamSet p = double_params(model, 4);
  Partition part = make_partition(3, 3, {1, 2});
  ForwardContext whole, mods;
  for (int s = 0; s < 3; ++s) {
    Tensor x = random_tokens(2, 4, 11, 30 + s), y = random_tokens(2, 4, 11, 40 + s);
    const double want = model.loss(p, x, y, whole).item<double>();
    Tensor h = x;
    for (int64_t k = 1; k <= 3; ++k) h = model.forward_module(p, part.module(k), h, y, mods);
    EXPECT_EQ(h.item<double>(), want) << "segment " << s;
  }
  for (int64_t i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(whole.memory.at(i), mods.memory.at(i)));
}

TEST(TransformerXLTest, StreamsContinueRowByRowAcrossSegments) {
  std::vector<int32_t> tokens(103);
  for (int32_t i = 0; i < 103; ++i) tokens[i] = i;
  // B = 4 streams of n = (103 - 1) / 4 = 25 positions; segments of 6: 4 per epoch.
  StreamSampler s(tokens, 6, 4);
  EXPECT_EQ(s.segments_per_epoch(), 4);
  for (int64_t seg = 0; seg < 6; ++seg) {
    auto [x, y] = s.next();
    ASSERT_EQ(x.sizes(), (std::vector<int64_t>{4, 6}));
    for (int64_t b = 0; b < 4; ++b) {
      for (int64_t i = 0; i < 6; ++i) {
        EXPECT_EQ(x[b][i].item<int64_t>(), b * 25 + (seg % 4) * 6 + i);
        EXPECT_EQ(y[b][i].item<int64_t>(), x[b][i].item<int64_t>() + 1);
      }
    }
  }
  EXPECT_EQ(s.state(), 6u);
  EXPECT_THROW(StreamSampler(tokens, 26, 4), DataError);
}

// Evaluation over streams counts every position of every stream once (the last segment shorter)
// and equals the sum of per-segment losses taken with the evaluation memory.
TEST(TransformerXLTest, StreamEvaluationCoversEveryPositionOnce) {
  ModelConfig cfg = tiny_xl();
  TransformerXL model(cfg);
  ParamSet p = model.init_params(1);
  std::vector<int32_t> tokens(2 * 11 + 1);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7) % 11);
  RecurrenceLengths len{6, 0, true};
  auto [total, count] = evaluate_streams(model, p, tokens, 2, 4, len);
  EXPECT_EQ(count, 2 * 11);
  torch::NoGradGuard no_grad;
  ForwardContext ctx;
  ctx.lengths = len;
  double want = 0;
  for (int64_t start : {0, 4, 8}) {
    auto [x, y] = stream_segment(tokens, 2, start, std::min<int64_t>(4, 11 - start));
    Tensor lg = model.output_logits(p, x, ctx);
    want += at::cross_entropy_loss(lg.reshape({-1, 11}), y.reshape({-1}), {}, at::Reduction::Sum)
                .item<double>();
  }
  EXPECT_NEAR(total, want, 1e-9 * want);
}

// Parameter counts of the presets, written out from the architecture:
//   per layer: r_w_bias + r_r_bias 2HD, qkv 3HD C, r_net HD C, o_net C HD, two LayerNorms 4C,
//   feed-forward Di C + Di + C Di + C; plus the tied embedding V C and the softmax bias V.
int64_t xl_param_count(int64_t L, int64_t C, int64_t H, int64_t D, int64_t Di, int64_t V) {
  const int64_t layer = 2 * H * D + 3 * H * D * C + H * D * C + C * H * D + 4 * C +
                        (Di * C + Di + C * Di + C);
  return L * layer + V * C + V;
}

TEST(TransformerXLTest, PresetsBuildThePapersShapes) {
  struct Want {
    std::string name;
    int64_t L, C, H, Di, T, mem, eval_T, eval_mem, clamp;
    int64_t V;
  };
  for (const Want& w : {Want{"enwik8-base", 12, 512, 8, 2048, 512, 512, 80, 2100, 820, 256},
                        Want{"text8-base", 12, 512, 8, 2048, 512, 512, 80, 2100, 820, 28}}) {
    Config c;
    apply_preset(w.name, c);
    c.model.vocab_size = w.V;
    c.validate();
    EXPECT_EQ(c.model.model, "transformer-xl");
    EXPECT_EQ(c.model.block_size, w.T);
    EXPECT_EQ(c.model.mem_len, w.mem);
    EXPECT_EQ(c.model.dropout, 0.1);
    EXPECT_EQ(c.train.lr, 2.5e-4);
    EXPECT_EQ(c.train.grad_clip, 0.25);
    EXPECT_EQ(c.train.optimizer, "adam");
    EXPECT_EQ(c.train.schedule, "cosine");
    auto model = make_model(c.model);
    ASSERT_TRUE(model->recurrent());
    const auto& xl = dynamic_cast<const TransformerXL&>(*model);
    EXPECT_EQ(xl.eval_tgt_len(), w.eval_T);
    EXPECT_EQ(xl.eval_lengths().mem_len, w.eval_mem);
    EXPECT_EQ(xl.eval_lengths().clamp_len, w.clamp);
    EXPECT_TRUE(xl.eval_lengths().same_length);
    EXPECT_FALSE(xl.train_lengths().same_length);
    ParamSet p = model->init_params(1);
    EXPECT_EQ(p.numel(), xl_param_count(w.L, w.C, w.H, w.C / w.H, w.Di, w.V)) << w.name;
    EXPECT_EQ(p.at("layers.0.attn.qkv_net.weight").sizes(),
              (std::vector<int64_t>{3 * w.C, w.C}));
    EXPECT_EQ(p.at("layers.0.r_w_bias").sizes(), (std::vector<int64_t>{w.H, w.C / w.H}));
  }
  {
    // wt103-base: 16 x 410 (10 heads of 41), inner 2100, 267735 words, adaptive softmax with
    // cutoffs 20000/40000/200000 and div_val 1: the tied tables cover V x 410 with no projections,
    // plus 3 cluster rows of 410 and their 3 biases.
    Config c;
    apply_preset("wt103-base", c);
    const int64_t V = 267735;
    c.model.vocab_size = V;
    c.validate();
    EXPECT_EQ(c.model.block_size, 150);
    EXPECT_EQ(c.model.mem_len, 150);
    EXPECT_EQ(c.train.lr, 2.5e-4);
    auto model = make_model(c.model);
    const auto& xl = dynamic_cast<const TransformerXL&>(*model);
    EXPECT_EQ(xl.bounds(), (std::vector<int64_t>{0, 20000, 40000, 200000, V}));
    EXPECT_EQ(xl.eval_tgt_len(), 64);
    EXPECT_EQ(xl.eval_lengths().mem_len, 640);
    EXPECT_EQ(xl.eval_lengths().clamp_len, 400);
    EXPECT_TRUE(xl.eval_lengths().same_length);
    ParamSet p = model->init_params(1);
    EXPECT_EQ(p.numel(), xl_param_count(16, 410, 10, 41, 2100, V) + 3 * 410 + 3);
    EXPECT_EQ(p.at("word_emb.emb_layers.3.weight").sizes(),
              (std::vector<int64_t>{V - 200000, 410}));
  }
  EXPECT_THROW(
      {
        Config c;
        apply_preset("enwik8-large", c);
      },
      ConfigError);
}

ModelConfig tiny_adaptive(int64_t div_val) {
  ModelConfig cfg = tiny_xl();
  cfg.vocab_size = 20;
  cfg.adaptive_cutoffs = "6,12";  // clusters [0, 6), [6, 12), [12, 20)
  cfg.div_val = div_val;
  return cfg;
}

// Adaptive softmax: exp of the log-probabilities sums to 1 over the vocabulary at every position;
// the per-target loss (tails computed only for their rows) equals the full table's entries; the
// head's cluster entry equals the total probability of the cluster's tokens.
TEST(TransformerXLTest, AdaptiveSoftmaxIsADistribution) {
  for (int64_t div_val : {1, 2}) {
    TransformerXL model(tiny_adaptive(div_val));
    ASSERT_TRUE(model.adaptive());
    ParamSet p = double_params(model, 5);
    at::Generator gen = make_generator(8);
    Tensor h = at::normal(0.0, 1.0, {30, 8}, gen, torch::kDouble);
    Tensor lp = model.adaptive_log_probs(p, h);  // [30, 20]
    ASSERT_EQ(lp.sizes(), (std::vector<int64_t>{30, 20}));
    EXPECT_LT((lp.exp().sum(-1) - 1.0).abs().max().item<double>(), 1e-12);
    Tensor y = at::randint(20, {30}, gen, torch::kInt64);
    Tensor nll = model.adaptive_nll(p, h, y);
    EXPECT_LT((nll + lp.gather(1, y.unsqueeze(1)).squeeze(1)).abs().max().item<double>(), 1e-12);
    // Cluster 1's head entry = log of the summed probabilities of tokens 6..11.
    Tensor head_w = at::cat({p.at("word_emb.emb_layers.0.weight"), p.at("crit.cluster_weight")}, 0);
    Tensor head_b = at::cat({p.at("crit.bias").narrow(0, 0, 6), p.at("crit.cluster_bias")}, 0);
    Tensor head = at::log_softmax(at::linear(h, head_w, head_b), -1);
    EXPECT_LT((head.select(1, 6) - lp.narrow(1, 6, 6).logsumexp(1)).abs().max().item<double>(),
              1e-12);
  }
}

// Tying: the input embedding and the output layer are the same tensors (one storage), also when
// a module is cut out of the set (worker 0 holds modules 1 and K); the tied weight's gradient has
// both an input-side and an output-side part; and finite differences match autograd (div_val 2).
TEST(TransformerXLTest, AdaptiveEmbeddingIsTiedAndDifferentiable) {
  TransformerXL model(tiny_adaptive(2));
  ParamSet p = double_params(model, 6);
  for (const char* name : {"word_emb.emb_layers.0.weight", "word_emb.emb_layers.1.weight",
                           "word_emb.emb_layers.2.weight", "word_emb.emb_projs.1",
                           "word_emb.emb_projs.2"}) {
    ASSERT_TRUE(p.contains(name)) << name;
  }
  EXPECT_FALSE(p.contains("word_emb.emb_projs.0"));  // cluster 0 is C wide
  EXPECT_EQ(p.at("word_emb.emb_layers.2.weight").sizes(), (std::vector<int64_t>{8, 2}));
  Partition part = make_partition(2, 3, {1, 2});
  ParamSet first = p.subset(model.module_param_names(part.module(1)));
  ParamSet last = p.subset(model.module_param_names(part.module(3)));
  for (const char* name : {"word_emb.emb_layers.1.weight", "word_emb.emb_projs.2"}) {
    EXPECT_EQ(first.at(name).data_ptr(), last.at(name).data_ptr()) << name;
    EXPECT_TRUE(first.at(name).is_same(last.at(name))) << name;
  }

  const Tensor x = random_tokens(2, 4, 20, 1), y = random_tokens(2, 4, 20, 2);
  auto loss = [&] {
    ForwardContext ctx;
    return model.loss(p, x, y, ctx);
  };
  loss().backward();
  // Input side alone (the head reads a detached copy): a strict part of the tied gradient.
  {
    ParamSet q;
    for (size_t i = 0; i < p.size(); ++i) {
      q.add(p.names()[i], p.tensors()[i].detach().clone().requires_grad_(true));
    }
    ForwardContext ctx;
    Tensor h = model.hidden(q, x, ctx);
    ParamSet out;
    for (size_t i = 0; i < q.size(); ++i) out.add(q.names()[i], q.tensors()[i].detach());
    Tensor l = model.adaptive_nll(out, h.reshape({-1, 8}), y.reshape({-1})).mean();
    l.backward();
    const Tensor& in_side = q.at("word_emb.emb_layers.1.weight").grad();
    const Tensor& tied = p.at("word_emb.emb_layers.1.weight").grad();
    EXPECT_GT(in_side.abs().max().item<double>(), 1e-6);
    EXPECT_GT((tied - in_side).abs().max().item<double>(), 1e-6);
  }
  const double h = 1e-6;
  std::mt19937_64 rng(4);
  for (size_t i = 0; i < p.size(); ++i) {
    Tensor w = p.tensors()[i];
    ASSERT_TRUE(w.grad().defined()) << p.names()[i];
    Tensor flat = w.detach().view({-1});
    for (int s = 0; s < 3; ++s) {
      const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(flat.numel()));
      double numeric;
      {
        torch::NoGradGuard no_grad;
        const double orig = flat[j].item<double>();
        flat[j] = orig + h;
        const double up = loss().item<double>();
        flat[j] = orig - h;
        const double down = loss().item<double>();
        flat[j] = orig;
        numeric = (up - down) / (2 * h);
      }
      const double analytic = w.grad().view({-1})[j].item<double>();
      EXPECT_LE(std::abs(analytic - numeric), 1e-8 + 1e-6 * std::abs(numeric))
          << p.names()[i] << "[" << j << "]";
    }
  }
}

TEST(TransformerXLTest, ConfigErrorsAreOneLine) {
  Config c;
  c.model.model = "xl";
  EXPECT_THROW(c.validate(), ConfigError);
  c.model.model = "transformer-xl";
  c.model.mem_len = -1;
  EXPECT_THROW(c.validate(), ConfigError);
  ModelConfig m = tiny_xl();
  m.n_embd = 9;
  m.n_head = 3;
  EXPECT_THROW(TransformerXL{m}, ConfigError);  // odd width: no sinusoid pairs
  m = tiny_xl();
  m.adaptive_cutoffs = "5,3";
  EXPECT_THROW(TransformerXL{m}, ConfigError);
  m.adaptive_cutoffs = "5,11";  // = vocab_size
  EXPECT_THROW(TransformerXL{m}, ConfigError);
  m.adaptive_cutoffs = "5,x";
  EXPECT_THROW(TransformerXL{m}, ConfigError);
}

}  // namespace
}  // namespace ouroboros
