// label: unit
// The optimizers against their oracles: libtorch's torch::optim (SGD, Adam, AdamW, bit for bit),
// python3-torch's NAdam, QHAdam's formula by hand; weight prediction, the delay-scaled learning
// rate, per-update statistics and the state dict round trip.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <sstream>

#include "ouroboros/train/optim.h"
#include "test_util.h"

namespace ouroboros {
namespace {

using ouroboros_test::run_command;
using ouroboros_test::TempDir;

// Two parameters: a matrix that decays and a bias that does not.
ParamSet two_params() {
  ParamSet p;
  p.add("h.0.mlp.c_fc.weight", torch::linspace(-1.0, 1.0, 12).reshape({3, 4}).requires_grad_(true));
  p.add("h.0.mlp.c_fc.bias", torch::linspace(0.5, -0.3, 4).requires_grad_(true));
  return p;
}

// The gradient of parameter i at step t: the same numbers in C++ and in the Python oracle.
Tensor grad_at(const Tensor& p, size_t i, int64_t t) {
  Tensor a = torch::arange(p.numel()).to(torch::kFloat32);
  return torch::sin(a * static_cast<double>((t + 1) * (i + 2)) * 0.37).reshape(p.sizes());
}

void set_grads(const ParamSet& p, int64_t t) {
  for (size_t i = 0; i < p.size(); ++i) {
    Tensor w = p.tensors()[i];
    w.mutable_grad() = grad_at(w, i, t);
  }
}

double lr_at(int64_t t) { return 1e-2 * (1.0 + 0.1 * static_cast<double>(t)); }

TrainConfig optim_config(const std::string& type) {
  TrainConfig c;
  c.optimizer = parse_option<OptimizerKind>(type);
  c.beta1 = 0.9;
  c.beta2 = 0.99;
  c.eps = 1e-8;
  c.momentum = 0.9;
  c.weight_decay = 0.05;
  return c;
}

// libtorch's optimizer over the same two groups (decay on the matrix only).
std::unique_ptr<torch::optim::Optimizer> libtorch_optimizer(const TrainConfig& c,
                                                            const ParamSet& p) {
  using torch::optim::OptimizerParamGroup;
  auto group = [&](auto options, size_t i, double wd) {
    options.weight_decay(wd);
    return OptimizerParamGroup({p.tensors()[i]}, std::make_unique<decltype(options)>(options));
  };
  std::vector<OptimizerParamGroup> g;
  if (c.optimizer == OptimizerKind::kSgd) {
    auto o = torch::optim::SGDOptions(1.0).momentum(c.momentum);
    g.push_back(group(o, 0, c.weight_decay));
    g.push_back(group(o, 1, 0.0));
    return std::make_unique<torch::optim::SGD>(std::move(g), o);
  }
  if (c.optimizer == OptimizerKind::kAdam) {
    auto o = torch::optim::AdamOptions(1.0).betas({c.beta1, c.beta2}).eps(c.eps);
    g.push_back(group(o, 0, c.weight_decay));
    g.push_back(group(o, 1, 0.0));
    return std::make_unique<torch::optim::Adam>(std::move(g), o);
  }
  auto o = torch::optim::AdamWOptions(1.0).betas({c.beta1, c.beta2}).eps(c.eps);
  g.push_back(group(o, 0, c.weight_decay));
  g.push_back(group(o, 1, 0.0));
  return std::make_unique<torch::optim::AdamW>(std::move(g), o);
}

class SameAsLibtorch : public ::testing::TestWithParam<std::string> {};

TEST_P(SameAsLibtorch, BitForBitOverSixSteps) {
  const TrainConfig c = optim_config(GetParam());
  ParamSet mine = two_params(), theirs = two_params();
  Optimizer opt(c, mine);
  auto ref = libtorch_optimizer(c, theirs);
  for (int64_t t = 0; t < 6; ++t) {
    set_grads(mine, t);
    set_grads(theirs, t);
    opt.step(lr_at(t));
    for (auto& group : ref->param_groups()) group.options().set_lr(lr_at(t));
    {
      torch::NoGradGuard no_grad;
      ref->step();
    }
    for (size_t i = 0; i < mine.size(); ++i) {
      ASSERT_TRUE(torch::equal(mine.tensors()[i], theirs.tensors()[i]))
          << mine.names()[i] << " after step " << t;
    }
  }
  EXPECT_FALSE(torch::equal(mine.tensors()[0], two_params().tensors()[0]));
}

INSTANTIATE_TEST_SUITE_P(Optim, SameAsLibtorch, ::testing::Values("sgd", "adam", "adamw"));

// QHAdam written out in doubles from Ma and Yarats: w -= lr [nu m_hat + (1-nu) g] / (sqrt(v_hat)
// + eps), moments as Adam's, L2 weight decay added to the gradient.
TEST(Optim, QHAdamFollowsItsFormula) {
  TrainConfig c = optim_config("qhadam");
  c.qh_nu = 0.8;
  ParamSet p = two_params();
  Optimizer opt(c, p);
  const ParamSet start = p.snapshot();
  std::vector<std::vector<double>> w(2), m(2), v(2);
  for (size_t i = 0; i < 2; ++i) {
    Tensor t = start.tensors()[i].detach().to(torch::kFloat64).flatten();
    w[i].assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    m[i].assign(w[i].size(), 0.0);
    v[i].assign(w[i].size(), 0.0);
  }
  for (int64_t t = 0; t < 4; ++t) {
    set_grads(p, t);
    std::vector<Tensor> g;
    for (size_t i = 0; i < 2; ++i) g.push_back(p.tensors()[i].grad().to(torch::kFloat64).flatten());
    opt.step(lr_at(t));
    const double n = static_cast<double>(t + 1);
    for (size_t i = 0; i < 2; ++i) {
      const double wd = i == 0 ? c.weight_decay : 0.0;
      for (size_t j = 0; j < w[i].size(); ++j) {
        const double gj = g[i][static_cast<int64_t>(j)].item<double>() + wd * w[i][j];
        m[i][j] = c.beta1 * m[i][j] + (1 - c.beta1) * gj;
        v[i][j] = c.beta2 * v[i][j] + (1 - c.beta2) * gj * gj;
        const double denom = std::sqrt(v[i][j] / (1 - std::pow(c.beta2, n))) + c.eps;
        const double m_hat = m[i][j] / (1 - std::pow(c.beta1, n));
        w[i][j] -= lr_at(t) * (c.qh_nu * m_hat + (1 - c.qh_nu) * gj) / denom;
      }
    }
  }
  for (size_t i = 0; i < 2; ++i) {
    Tensor got = p.tensors()[i].detach().flatten();
    for (size_t j = 0; j < w[i].size(); ++j) {
      EXPECT_NEAR(got[static_cast<int64_t>(j)].item<double>(), w[i][j], 2e-6) << i << "," << j;
    }
  }
}

TEST(Optim, QHAdamWithNuOneIsAdam) {
  TrainConfig q = optim_config("qhadam");
  q.qh_nu = 1.0;
  ParamSet a = two_params(), b = two_params();
  Optimizer qh(q, a), adam(optim_config("adam"), b);
  for (int64_t t = 0; t < 5; ++t) {
    set_grads(a, t);
    set_grads(b, t);
    qh.step(lr_at(t));
    adam.step(lr_at(t));
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a.tensors()[i], b.tensors()[i]));
}

// torch.optim.NAdam of torch >= 2.0. torch 1.13 (Debian's python3-torch) computes
// mu_product_next as mu_product * mu * mu_next, multiplying mu in twice; the script replaces
// that one line (the upstream fix) and otherwise runs 1.13's own step.
const char* kNadamScript = R"PY(
import sys, torch
import torch.optim.nadam as nadam_module
if int(torch.__version__.split(".")[0]) < 2:
    def fixed(params, grads, exp_avgs, exp_avg_sqs, mu_products, state_steps, *, beta1, beta2,
              lr, weight_decay, momentum_decay, eps):
        for i, param in enumerate(params):
            grad, exp_avg, exp_avg_sq = grads[i], exp_avgs[i], exp_avg_sqs[i]
            mu_product, step_t = mu_products[i], state_steps[i]
            step_t += 1
            step = step_t.item()
            bias_correction2 = 1 - beta2 ** step
            if weight_decay != 0:
                grad = grad.add(param, alpha=weight_decay)
            mu = beta1 * (1. - 0.5 * (0.96 ** (step * momentum_decay)))
            mu_next = beta1 * (1. - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
            mu_product *= mu
            mu_product_next = mu_product.item() * mu_next
            exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = exp_avg_sq.div(bias_correction2).sqrt().add_(eps)
            param.addcdiv_(grad, denom, value=-lr * (1. - mu) / (1. - mu_product.item()))
            param.addcdiv_(exp_avg, denom, value=-lr * mu_next / (1. - mu_product_next))
    nadam_module._single_tensor_nadam = fixed
b1, b2, wd, psi = (float(a) for a in sys.argv[1:5])
w = torch.linspace(-1.0, 1.0, 12).reshape(3, 4).requires_grad_(True)
b = torch.linspace(0.5, -0.3, 4).requires_grad_(True)
opt = torch.optim.NAdam([{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}],
                        lr=1.0, betas=(b1, b2), eps=1e-8, momentum_decay=psi)
for t in range(6):
    for i, p in enumerate((w, b)):
        a = torch.arange(p.numel()).to(torch.float32)
        p.grad = torch.sin(a * float((t + 1) * (i + 2)) * 0.37).reshape(p.shape)
    for g in opt.param_groups:
        g["lr"] = 1e-2 * (1.0 + 0.1 * t)
    opt.step()
print(" ".join(repr(x) for x in torch.cat([w.detach().flatten(), b.detach().flatten()]).tolist()))
)PY";

TEST(Optim, NAdamMatchesPythonTorch) {
  if (run_command("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1").second != 0) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch (install python3-torch)";
  }
  TempDir dir;
  const auto script = dir.write("nadam.py", kNadamScript);
  for (double b1 : {0.9, 0.99}) {
    TrainConfig c = optim_config("nadam");
    c.beta1 = b1;
    ParamSet p = two_params();
    Optimizer opt(c, p);
    for (int64_t t = 0; t < 6; ++t) {
      set_grads(p, t);
      opt.step(lr_at(t));
    }
    std::ostringstream cmd;
    cmd.precision(17);
    cmd << "/usr/bin/python3 " << script.string() << " " << b1 << " " << c.beta2 << " "
        << c.weight_decay << " " << c.momentum_decay << " 2>&1";
    auto [out, rc] = run_command(cmd.str());
    ASSERT_EQ(rc, 0) << out;
    std::istringstream in(out);
    Tensor got = torch::cat({p.tensors()[0].detach().flatten(), p.tensors()[1].detach().flatten()});
    for (int64_t j = 0; j < got.numel(); ++j) {
      double want = 0.0;
      ASSERT_TRUE(in >> want) << out;
      EXPECT_EQ(got[j].item<float>(), static_cast<float>(want)) << "b1 " << b1 << " element " << j;
    }
    EXPECT_FALSE(torch::equal(p.tensors()[0], two_params().tensors()[0]));
  }
}

// Prediction moves a copy `step` along the update direction and leaves the live weights alone.
TEST(Optim, PredictExtrapolatesAlongTheUpdateDirection) {
  for (const std::string type : {"adam", "qhadam", "nadam", "sgd"}) {
    TrainConfig c = optim_config(type);
    ParamSet p = two_params();
    Optimizer opt(c, p);
    ParamSet fresh = opt.predict(p, 0.3);  // no state yet: a plain copy
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_TRUE(torch::equal(fresh.tensors()[i], p.tensors()[i]));
      EXPECT_TRUE(fresh.tensors()[i].requires_grad());
      EXPECT_NE(fresh.tensors()[i].data_ptr(), p.tensors()[i].data_ptr());
    }
    for (int64_t t = 0; t < 3; ++t) {
      set_grads(p, t);
      opt.step(lr_at(t));
    }
    const ParamSet before = p.snapshot();
    const auto sd = opt.state_dict();
    ParamSet hat = opt.predict(p, 0.3);
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_TRUE(torch::equal(p.tensors()[i], before.tensors()[i])) << "live weights moved";
      auto s = sd.at(p.names()[i]).toGenericDict();
      Tensor u;
      if (type == "sgd") {
        u = s.at("momentum_buffer").toTensor();
      } else {
        const double n = static_cast<double>(s.at("step").toInt());
        Tensor m_hat = s.at("exp_avg").toTensor() / (1 - std::pow(c.beta1, n));
        Tensor v_hat = s.at("exp_avg_sq").toTensor() / (1 - std::pow(c.beta2, n));
        u = m_hat / (v_hat.sqrt() + c.eps);
      }
      EXPECT_TRUE(torch::allclose(hat.tensors()[i], p.tensors()[i] - 0.3 * u, 1e-5, 1e-6)) << type;
      EXPECT_FALSE(torch::equal(hat.tensors()[i], p.tensors()[i])) << type;
    }
    // Per-parameter factors scale each parameter's step.
    ParamSet half = opt.predict(p, 0.6, {0.5, 0.0});
    EXPECT_TRUE(torch::equal(half.tensors()[0], hat.tensors()[0]));
    EXPECT_TRUE(torch::equal(half.tensors()[1], p.tensors()[1]));
  }
}

TEST(Optim, StaleLearningRateFollowsPipeMare) {
  EngineConfig e;
  e.stale_lr = StaleLr::kNone;
  EXPECT_EQ(stale_lr_factor(e, 2, 0), 1.0);
  e.stale_lr = StaleLr::kPipeMare;
  e.stale_lr_ticks = 100;
  e.sync_warmup = 20;
  EXPECT_EQ(stale_lr_factor(e, 0, 20), 1.0);          // no delay, no scaling
  EXPECT_DOUBLE_EQ(stale_lr_factor(e, 2, 20), 0.5);   // restarts at the switch: lr / d
  EXPECT_DOUBLE_EQ(stale_lr_factor(e, 4, 5), 0.25);   // before the switch counts as u = 0
  EXPECT_DOUBLE_EQ(stale_lr_factor(e, 4, 70), 0.5);   // halfway: lr / d^(1/2)
  EXPECT_DOUBLE_EQ(stale_lr_factor(e, 3, 120), 1.0);  // after T: unscaled
  EXPECT_DOUBLE_EQ(stale_lr_factor(e, 3, 900), 1.0);
}

TEST(Optim, PerParameterLearningRateScale) {
  ParamSet a = two_params(), b = two_params();
  Optimizer scaled(optim_config("sgd"), a), plain(optim_config("sgd"), b);
  set_grads(a, 0);
  set_grads(b, 0);
  scaled.step(0.1, {0.5, 1.0});
  // The bias (factor 1) moves as unscaled; the matrix (factor 0.5) as lr 0.05.
  Tensor b_bias = b.tensors()[1].detach().clone();
  plain.step(0.1);
  EXPECT_TRUE(torch::equal(a.tensors()[1], b.tensors()[1]));
  EXPECT_FALSE(torch::equal(b.tensors()[1], b_bias));
  ParamSet c = two_params();
  Optimizer half(optim_config("sgd"), c);
  set_grads(c, 0);
  half.step(0.05);
  EXPECT_TRUE(torch::equal(a.tensors()[0], c.tensors()[0]));
}

TEST(Optim, TrackingReportsGradientUpdateAndCosine) {
  TrainConfig c = optim_config("sgd");
  c.momentum = 0.0;
  c.weight_decay = 0.0;
  ParamSet p = two_params();
  Optimizer opt(c, p);
  opt.set_tracking(true);
  Tensor g = grad_at(p.tensors()[0], 0, 0);
  for (int64_t t = 0; t < 2; ++t) {
    for (size_t i = 0; i < p.size(); ++i) {
      Tensor w = p.tensors()[i];
      w.mutable_grad() = (i == 0 ? g : grad_at(w, i, 0)) * (t == 0 ? 1.0 : -1.0);
    }
    ASSERT_TRUE(opt.apply(0.1, 0.0));
  }
  const auto& s = opt.last_stats();
  ModuleStats m0 = summarize(3, s, {0});
  EXPECT_EQ(m0.module, 3);
  EXPECT_NEAR(m0.grad_norm, g.norm().item<double>(), 1e-6);
  EXPECT_NEAR(m0.update_rms, 0.1 * g.norm().item<double>() / std::sqrt(12.0), 1e-6);
  ASSERT_TRUE(m0.has_cos);
  EXPECT_NEAR(m0.update_cos, -1.0, 1e-6);  // the second step undid the first
  ModuleStats both = summarize(1, s, {0, 1});
  EXPECT_GT(both.grad_norm, m0.grad_norm);
  EXPECT_NEAR(both.update_cos, -1.0, 1e-6);
}

// Restoring the state dict into a fresh optimizer continues exactly as the uninterrupted one.
TEST(Optim, StateDictRoundTripContinuesExactly) {
  for (const std::string type : {"sgd", "adam", "adamw", "qhadam", "nadam"}) {
    const TrainConfig c = optim_config(type);
    ParamSet a = two_params();
    Optimizer whole(c, a);
    for (int64_t t = 0; t < 3; ++t) {
      set_grads(a, t);
      whole.step(lr_at(t));
    }
    ParamSet b = a.snapshot();
    Optimizer resumed(c, b);
    resumed.load_state_dict(whole.state_dict());
    for (int64_t t = 3; t < 6; ++t) {
      set_grads(a, t);
      set_grads(b, t);
      whole.step(lr_at(t));
      resumed.step(lr_at(t));
    }
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(torch::equal(a.tensors()[i], b.tensors()[i])) << type << " " << a.names()[i];
    }
  }
}

}  // namespace
}  // namespace ouroboros
