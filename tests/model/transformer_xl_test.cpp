// label: unit
// Transformer-XL: relative attention with the shift against a loop over the paper's formula,
// segment recurrence against the concatenated text, no gradient through memory, gradients against
// finite differences (double precision), stream batching and evaluation.
#include "ouroboros/model/transformer_xl.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "model_util.h"
#include "ouroboros/core/config.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/data/stream.h"
#include "ouroboros/train/evaluate.h"
#include "test_util.h"

namespace ouroboros {
namespace {

using ouroboros_test::double_params;
using ouroboros_test::random_tokens;
using ouroboros_test::tiny_xl;

// The attention of one layer written as the paper's formula, one score at a time:
//   a[i, j] = (q_i + u) . k_j + (q_i + v) . W_r r(d),  d = min(M + i - j, clamp_len),
// r(d) = [sin(d f_0) .. sin(d f_{C/2-1}), cos(d f_0) ..], f_c = 10000^(-2c/C), softmax over the
// keys j <= M + i (and, with same_length, j > i - shift), summed values, then o_net.
Tensor loop_attention(const ParamSet& p, const ModelConfig& cfg, const Tensor& h, const Tensor& mem,
                      const RecurrenceLengths& len) {
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
          for (int64_t e = 0; e < D; ++e)
            out[b][i][n * D + e] += pr * proj(b, j, 2 * H * D + n * D + e);
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
    ParamSet p = double_params(model, 3 + variant, 0.1);
    const int64_t B = 2, Q = 3, M = variant == 3 ? 0 : 4;
    at::Generator gen = make_generator(50 + variant);
    Tensor h = at::normal(0.0, 1.0, {B, Q, cfg.n_embd}, gen, torch::kDouble);
    Tensor mem = at::normal(0.0, 1.0, {B, M, cfg.n_embd}, gen, torch::kDouble);
    RecurrenceLengths len{M, 0, false};
    if (variant == 1) len.clamp_len = 2;       // distances 3..6 share r(2)
    if (variant == 2) len.same_length = true;  // every query sees M keys
    ForwardContext ctx;
    Tensor pos = TransformerXL::positional_encoding(M + Q, cfg.n_embd, len.clamp_len, h.options());
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
    ParamSet p = double_params(model, 11, 0.1);
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
    ParamSet p = double_params(model, 21, 0.1);
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
  ParamSet p = double_params(model, 4, 0.1);
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
  const LossSumFn loss_sum = [&](const Tensor& x, const Tensor& y, ForwardContext& c) {
    return model.loss_sum(p, x, y, c);
  };
  auto [total, count] = evaluate_streams(loss_sum, tokens, 2, 4, len);
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

}  // namespace
}  // namespace ouroboros
