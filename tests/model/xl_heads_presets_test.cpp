// label: unit
// Transformer-XL: the presets' shapes, the adaptive softmax and adaptive input (a distribution,
// tied, differentiable), and one-line config errors.
#include "ouroboros/model/transformer_xl.h"

#include <gtest/gtest.h>

#include <cmath>

#include "model_util.h"
#include "ouroboros/core/config.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/core/presets.h"
#include "ouroboros/model/gpt.h"
#include "test_util.h"

namespace ouroboros {
namespace {

using ouroboros_test::double_params;
using ouroboros_test::random_tokens;
using ouroboros_test::tiny_xl;

// Parameter counts of the presets, written out from the architecture:
//   per layer: r_w_bias + r_r_bias 2HD, qkv 3HD C, r_net HD C, o_net C HD, two LayerNorms 4C,
//   feed-forward Di C + Di + C Di + C; plus the tied embedding V C and the softmax bias V.
int64_t xl_param_count(int64_t L, int64_t C, int64_t H, int64_t D, int64_t Di, int64_t V) {
  const int64_t layer =
      2 * H * D + 3 * H * D * C + H * D * C + C * H * D + 4 * C + (Di * C + Di + C * Di + C);
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
    EXPECT_EQ(c.model.model, ModelKind::kTransformerXl);
    EXPECT_EQ(c.model.block_size, w.T);
    EXPECT_EQ(c.model.mem_len, w.mem);
    EXPECT_EQ(c.model.dropout, 0.1);
    EXPECT_EQ(c.train.lr, 2.5e-4);
    EXPECT_EQ(c.train.grad_clip, 0.25);
    EXPECT_EQ(c.train.optimizer, OptimizerKind::kAdam);
    EXPECT_EQ(c.train.schedule, LrSchedule::kCosine);
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
    EXPECT_EQ(p.at("layers.0.attn.qkv_net.weight").sizes(), (std::vector<int64_t>{3 * w.C, w.C}));
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
    ParamSet p = double_params(model, 5, 0.1);
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
  ParamSet p = double_params(model, 6, 0.1);
  for (const char* name :
       {"word_emb.emb_layers.0.weight", "word_emb.emb_layers.1.weight",
        "word_emb.emb_layers.2.weight", "word_emb.emb_projs.1", "word_emb.emb_projs.2"}) {
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
    ParamSet q = p.snapshot();
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

// The planner balances a Transformer-XL on its own costs: every layer attends over memory and
// segment, so a longer memory costs more per block; the backward is 1.5x the forward (measured).
TEST(TransformerXLTest, CostModelCountsTheMemory) {
  ModelConfig m = tiny_xl();
  m.mem_len = 0;
  const CostModel none = TransformerXL(m).cost_model(4);
  m.mem_len = 64;
  const CostModel long_memory = TransformerXL(m).cost_model(4);
  ASSERT_EQ(long_memory.block_forward.size(), 2u);
  EXPECT_DOUBLE_EQ(long_memory.block_forward[0], long_memory.block_forward[1]);
  EXPECT_GT(long_memory.block_forward[0], 2.0 * none.block_forward[0]);
  EXPECT_DOUBLE_EQ(long_memory.head_forward, none.head_forward);  // the head sees the segment only
  EXPECT_DOUBLE_EQ(long_memory.backward_ratio, 1.5);
  EXPECT_GT(TransformerXL(m).cost_model(8).head_forward, long_memory.head_forward);
}

// The count the memory estimate uses equals the weights init_params makes, for both models,
// the full and the adaptive softmax.
TEST(TransformerXLTest, ParamCountEqualsTheWeightsMade) {
  std::vector<ModelConfig> configs = {tiny_xl(), tiny_xl(1)};
  for (int64_t div_val : {1, 2}) {
    ModelConfig m = tiny_xl();
    m.vocab_size = 20;
    m.adaptive_cutoffs = "6,12";
    m.div_val = div_val;
    configs.push_back(m);
  }
  for (const ModelConfig& m : configs) {
    TransformerXL model(m);
    EXPECT_EQ(model.param_count(), model.init_params(1).numel()) << m.div_val;
  }
  ModelConfig g = ouroboros_test::tiny_config().model;
  GPT gpt(g);
  EXPECT_EQ(gpt.param_count(), gpt.init_params(1).numel());
}

TEST(TransformerXLTest, ConfigErrorsAreOneLine) {
  Config c;
  EXPECT_THROW(c.set_from_string("model.model", "xl"), ConfigError);
  c.model.model = ModelKind::kTransformerXl;
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
