// label: unit
// Muon and the delay correction against their oracles: Muon's update written out in float64
// here, torch.optim.Muon itself where a torch >= 2.9 is at hand (the torch 2.x build's
// .venv-torch2), which parameters take Muon, prediction along its last applied update, and the
// extrapolation of delayed updates.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "ouroboros/train/optim.h"
#include "test_util.h"

namespace ouroboros {
namespace {

using ouroboros_test::read_bytes;
using ouroboros_test::run_command;
using ouroboros_test::TempDir;

// A fused query-key-value matrix (three 4 x 4 slices), a tall and a wide block matrix, and what
// Muon leaves to AdamW: an embedding, a LayerNorm gain and a bias.
ParamSet muon_params() {
  ParamSet p;
  auto make = [&](const std::string& name, std::vector<int64_t> shape, double from) {
    const int64_t n = c10::multiply_integers(shape);
    p.add(name, torch::linspace(from, -from * 0.7, n).reshape(shape).requires_grad_(true));
  };
  make("h.0.attn.c_attn.weight", {12, 4}, 0.9);
  make("h.0.mlp.c_fc.weight", {8, 4}, 0.6);
  make("h.0.mlp.c_proj.weight", {4, 8}, -0.5);
  make("wte.weight", {6, 4}, 0.3);
  make("h.0.ln_1.weight", {4}, 1.1);
  make("h.0.mlp.c_fc.bias", {8}, 0.2);
  return p;
}

Tensor grad_at(const Tensor& p, size_t i, int64_t t) {
  Tensor a = torch::arange(p.numel()).to(torch::kFloat32);
  return torch::sin(a * static_cast<double>((t + 1) * (i + 2)) * 0.37 + 0.1 * i).reshape(p.sizes());
}

void set_grads(const ParamSet& p, int64_t t) {
  for (size_t i = 0; i < p.size(); ++i)
    p.tensors()[i].mutable_grad() = grad_at(p.tensors()[i], i, t);
}

double lr_at(int64_t t) { return 2e-2 * (1.0 + 0.1 * static_cast<double>(t)); }

TrainConfig muon_config() {
  TrainConfig c;
  c.optimizer = OptimizerKind::kMuon;
  c.lr = 1e-2;
  c.muon_lr = 0.0;  // the same learning rate as AdamW's
  c.weight_decay = 0.1;
  return c;
}

// Muon's step on one matrix in float64, from torch.optim.Muon's definition.
Tensor orthogonalize64(Tensor u, int64_t steps) {
  const bool tall = u.size(0) > u.size(1);
  Tensor x = tall ? u.t() : u;
  x = x / std::max(x.norm().item<double>(), 1e-7);
  for (int64_t i = 0; i < steps; ++i) {
    Tensor A = x.mm(x.t());
    x = 3.4445 * x + (-4.775 * A + 2.0315 * A.mm(A)).mm(x);
  }
  return tall ? x.t() : x;
}

TEST(Muon, TakesTheBlockMatricesOnly) {
  const ParamSet p = muon_params();
  Optimizer opt(muon_config(), p);
  const std::vector<bool> want = {true, true, true, false, false, false};
  for (size_t i = 0; i < p.size(); ++i) EXPECT_EQ(opt.uses_muon(i), want[i]) << p.names()[i];
  EXPECT_TRUE(muon_matrix("layers.3.attn.qkv_net.weight", torch::zeros({6, 2})));
  EXPECT_TRUE(muon_matrix("layers.3.ff.layer_2.weight", torch::zeros({2, 6})));
  EXPECT_FALSE(muon_matrix("layers.3.r_w_bias", torch::zeros({2, 3})));
  EXPECT_FALSE(muon_matrix("layers.3.attn.layer_norm.weight", torch::zeros({4})));
  EXPECT_FALSE(muon_matrix("word_emb.weight", torch::zeros({6, 2})));
  EXPECT_FALSE(muon_matrix("lm_head.weight", torch::zeros({6, 2})));
  EXPECT_EQ(muon_slices("h.1.attn.c_attn.weight"), 3);
  EXPECT_EQ(muon_slices("layers.0.attn.qkv_net.weight"), 3);
  EXPECT_EQ(muon_slices("h.1.attn.c_proj.weight"), 1);
  // Another optimizer gives Muon nothing.
  TrainConfig adam = muon_config();
  adam.optimizer = OptimizerKind::kAdam;
  Optimizer plain(adam, p);
  for (size_t i = 0; i < p.size(); ++i) EXPECT_FALSE(plain.uses_muon(i));
}

TEST(Muon, NewtonSchulzOrthogonalizes) {
  // Its quintic leaves singular values in about [0.7, 1.2] (not exactly 1) after 5 steps.
  Tensor g = torch::randn({16, 40}, torch::Generator(at::detail::createCPUGenerator(3)));
  Tensor x = newton_schulz(g, 5);
  Tensor s = std::get<1>(torch::linalg_svd(x, false));
  EXPECT_GT(s.min().item<double>(), 0.6);
  EXPECT_LT(s.max().item<double>(), 1.25);
  Tensor tall = newton_schulz(g.t(), 5);  // a tall matrix is done as its transpose
  EXPECT_TRUE(torch::allclose(tall, x.t(), 1e-5, 1e-6));
  EXPECT_DOUBLE_EQ(muon_lr_factor(MuonLrAdjust::kOriginal, 8, 2), 2.0);
  EXPECT_DOUBLE_EQ(muon_lr_factor(MuonLrAdjust::kOriginal, 2, 8), 1.0);
  EXPECT_DOUBLE_EQ(muon_lr_factor(MuonLrAdjust::kMatchRmsAdamW, 2, 16), 0.8);
}

// Four steps against the float64 formula (matrices, slice by slice for c_attn), and the
// AdamW side bit for bit against --optimizer adamw.
TEST(Muon, FollowsItsFormulaInFloat64) {
  for (MuonLrAdjust adjust : {MuonLrAdjust::kMatchRmsAdamW, MuonLrAdjust::kOriginal}) {
    for (int64_t nesterov : {1, 0}) {
      TrainConfig c = muon_config();
      c.muon_adjust_lr = adjust;
      c.muon_nesterov = nesterov;
      c.muon_lr = 3e-2;
      ParamSet p = muon_params();
      std::vector<Tensor> w64, buf;
      for (const Tensor& t : p.tensors()) {
        w64.push_back(t.detach().to(torch::kFloat64));
        buf.push_back(torch::zeros_like(w64.back()));
      }
      ParamSet q = p.snapshot();
      TrainConfig adamw = c;
      adamw.optimizer = OptimizerKind::kAdamW;
      adamw.muon_lr = TrainConfig{}.muon_lr;
      adamw.muon_adjust_lr = TrainConfig{}.muon_adjust_lr;
      adamw.muon_nesterov = 1;
      Optimizer opt(c, p), reference(adamw, q);
      for (int64_t t = 0; t < 4; ++t) {
        set_grads(p, t);
        set_grads(q, t);
        opt.step(lr_at(t));
        reference.step(lr_at(t));
        const double lr = lr_at(t) * c.muon_lr / c.lr;
        for (size_t i = 0; i < 3; ++i) {
          Tensor g = grad_at(p.tensors()[i], i, t).to(torch::kFloat64);
          buf[i] = buf[i] * c.muon_momentum + g * (1 - c.muon_momentum);
          Tensor u = nesterov ? g * (1 - c.muon_momentum) + buf[i] * c.muon_momentum : buf[i];
          std::vector<Tensor> parts;
          for (const Tensor& s : u.chunk(muon_slices(p.names()[i]), 0)) {
            parts.push_back(orthogonalize64(s, 5) * muon_lr_factor(adjust, s.size(0), s.size(1)));
          }
          w64[i] = w64[i] * (1 - lr * c.weight_decay) - lr * torch::cat(parts, 0);
        }
      }
      for (size_t i = 0; i < 3; ++i) {
        const Tensor got = p.tensors()[i].detach().to(torch::kFloat64);
        EXPECT_LT((got - w64[i]).abs().max().item<double>(), 2e-6) << p.names()[i];
        EXPECT_GT((got - muon_params().tensors()[i]).abs().max().item<double>(), 1e-3);
      }
      for (size_t i = 3; i < p.size(); ++i) {
        EXPECT_TRUE(torch::equal(p.tensors()[i], q.tensors()[i])) << p.names()[i];
      }
    }
  }
}

// torch.optim.Muon (adjust_lr_fn "match_rms_adamw") on the unfused matrices. It runs
// Newton-Schulz in bfloat16 where this one runs float32 (bfloat16's error in a small singular
// direction grows about 3.4x per iteration: 20% of a 4 x 8 matrix's change after 5), so the
// script has torch's own step cast to float32 instead; then the two agree to float32 rounding.
const char* kMuonScript = R"PY(
import sys, torch
torch.Tensor.bfloat16 = lambda self, *args, **kwargs: self.clone()
shapes = [(8, 4), (4, 8)]
froms = [0.6, -0.5]
ws = []
for (r, c), f in zip(shapes, froms):
    ws.append(torch.linspace(f, -f * 0.7, r * c).reshape(r, c).requires_grad_(True))
opt = torch.optim.Muon(ws, lr=1.0, weight_decay=0.1, momentum=0.95, nesterov=True,
                       adjust_lr_fn="match_rms_adamw")
for t in range(4):
    for i, w in enumerate(ws):
        a = torch.arange(w.numel()).to(torch.float32)
        w.grad = torch.sin(a * float((t + 1) * (i + 3)) * 0.37 + 0.1 * (i + 1)).reshape(w.shape)
    for g in opt.param_groups:
        g["lr"] = 2e-2 * (1.0 + 0.1 * t)
    opt.step()
print(" ".join(repr(x) for x in torch.cat([w.detach().flatten() for w in ws]).tolist()))
)PY";

std::string torch_with_muon() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("OUROBOROS_TORCH2_PYTHON")) candidates.push_back(env);
  candidates.push_back(std::string(OUROBOROS_SOURCE_DIR) + "/.venv-torch2/bin/python");
  for (const auto& python : candidates) {
    const std::string probe = python + " -c 'import torch; torch.optim.Muon' >/dev/null 2>&1";
    if (std::filesystem::exists(python) && run_command(probe).second == 0) return python;
  }
  return "";
}

TEST(Muon, MatchesTorchOptimMuon) {
  const std::string python = torch_with_muon();
  if (python.empty()) {
    GTEST_SKIP() << "no Python with torch.optim.Muon (torch >= 2.9): scripts/build-torch2.sh "
                    "makes .venv-torch2, or set OUROBOROS_TORCH2_PYTHON";
  }
  TempDir dir;
  const auto script = dir.write("muon.py", kMuonScript);
  ParamSet all = muon_params();
  ParamSet p = all.subset({"h.0.mlp.c_fc.weight", "h.0.mlp.c_proj.weight"});
  const std::vector<Tensor> start = {p.tensors()[0].detach().clone(),
                                     p.tensors()[1].detach().clone()};
  Optimizer opt(muon_config(), p);
  for (int64_t t = 0; t < 4; ++t) {
    // The script's gradients are this file's for indices 1 and 2 (c_fc, c_proj).
    for (size_t i = 0; i < p.size(); ++i) {
      p.tensors()[i].mutable_grad() = grad_at(p.tensors()[i], i + 1, t);
    }
    opt.step(lr_at(t));
  }
  // Warnings go to stderr (a torch wheel without numpy prints one); only stdout is parsed.
  const auto err = dir.path() / "stderr.txt";
  auto [out, rc] = run_command(python + " " + script.string() + " 2>" + err.string());
  ASSERT_EQ(rc, 0) << out << read_bytes(err);
  std::istringstream in(out);
  for (size_t i = 0; i < p.size(); ++i) {
    Tensor got = p.tensors()[i].detach().flatten();
    std::vector<double> want(static_cast<size_t>(got.numel()));
    for (double& v : want) ASSERT_TRUE(in >> v) << out;
    Tensor torch_w = torch::tensor(want, torch::kFloat64).to(torch::kFloat32);
    const double change = (got - start[i].flatten()).abs().max().item<double>();
    const double diff = (got - torch_w).abs().max().item<double>();
    EXPECT_GT(change, 1e-3);
    EXPECT_LT(diff, 1e-4 * change) << p.names()[i] << ": change " << change << ", diff " << diff;
  }
}

// Prediction for Muon's matrices moves along the last applied update: with no weight decay, the
// predicted copy at step s is w + (s / lr) (w_t - w_(t-1)).
TEST(Muon, PredictsAlongTheLastAppliedUpdate) {
  TrainConfig c = muon_config();
  c.weight_decay = 0.0;
  ParamSet p = muon_params();
  Optimizer opt(c, p);
  ParamSet fresh = opt.predict(p, 0.5);
  for (size_t i = 0; i < p.size(); ++i)
    EXPECT_TRUE(torch::equal(fresh.tensors()[i], p.tensors()[i]));
  set_grads(p, 0);
  opt.step(0.01);
  ParamSet before = p.snapshot();
  set_grads(p, 1);
  opt.step(0.01);
  ParamSet hat = opt.predict(p, 0.03);
  for (size_t i = 0; i < 3; ++i) {
    Tensor change = p.tensors()[i].detach() - before.tensors()[i].detach();
    Tensor want = p.tensors()[i].detach() + 3.0 * change;
    EXPECT_TRUE(torch::allclose(hat.tensors()[i], want, 1e-5, 1e-6)) << p.names()[i];
  }
}

// The correction: a parameter with delay d moves by u_t + scale d (u_t - u_(t-1)); the first
// update (no previous one) and a parameter without delay move by u_t alone.
TEST(DelayCorrection, ExtrapolatesTheUpdateSequence) {
  TrainConfig c;
  c.optimizer = OptimizerKind::kSgd;
  c.momentum = 0.0;
  ParamSet p = muon_params().subset({"h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias"});
  Optimizer opt(c, p, 0.5);
  const std::vector<int64_t> delays = {2, 0};
  std::vector<Tensor> w = {p.tensors()[0].detach().clone(), p.tensors()[1].detach().clone()};
  std::vector<Tensor> last(2);
  for (int64_t t = 0; t < 3; ++t) {
    set_grads(p, t);
    opt.step(0.1, {}, delays);
    for (size_t i = 0; i < 2; ++i) {
      Tensor u = -0.1 * grad_at(p.tensors()[i], i, t);
      w[i] = w[i] + u;
      if (last[i].defined() && delays[i] > 0) w[i] = w[i] + 0.5 * 2.0 * (u - last[i]);
      last[i] = u;
      EXPECT_TRUE(torch::allclose(p.tensors()[i], w[i], 1e-6, 1e-7)) << "t " << t << " i " << i;
    }
  }
  // Without delays (a synchronous tick) nothing is extrapolated.
  ParamSet q = p.snapshot(), r = p.snapshot();
  Optimizer with(c, q, 0.5), without(c, r);
  set_grads(q, 0);
  set_grads(r, 0);
  with.step(0.1);
  without.step(0.1);
  EXPECT_TRUE(torch::equal(q.tensors()[0], r.tensors()[0]));
}

// Muon's state and the correction's last change survive the state dict: a resumed optimizer
// continues exactly.
TEST(Muon, StateDictRoundTripContinuesExactly) {
  for (double scale : {0.0, 1.0}) {
    const TrainConfig c = muon_config();
    const std::vector<int64_t> delays = {1, 2, 1, 0, 1, 2};
    ParamSet a = muon_params();
    Optimizer whole(c, a, scale);
    for (int64_t t = 0; t < 3; ++t) {
      set_grads(a, t);
      whole.step(lr_at(t), {}, delays);
    }
    ParamSet b = a.snapshot();
    Optimizer resumed(c, b, scale);
    resumed.load_state_dict(whole.state_dict());
    ParamSet ha = whole.predict(a, 0.05), hb = resumed.predict(b, 0.05);
    for (int64_t t = 3; t < 6; ++t) {
      set_grads(a, t);
      set_grads(b, t);
      whole.step(lr_at(t), {}, delays);
      resumed.step(lr_at(t), {}, delays);
    }
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(torch::equal(ha.tensors()[i], hb.tensors()[i])) << a.names()[i];
      EXPECT_TRUE(torch::equal(a.tensors()[i], b.tensors()[i])) << scale << " " << a.names()[i];
    }
  }
}

}  // namespace
}  // namespace ouroboros
