// label: equivalence
// The Ouroboros runtime against its oracles (docs/ALGORITHM.md section 6): the serial simulator
// bit for bit, the reference trainer for K = 1 and synchronous mode, and the transport's exact
// traffic.
#include <gtest/gtest.h>

#include "engine_util.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/engine/ouroboros_simulator.h"
#include "ouroboros/engine/ouroboros_threads.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/sequential_backprop.h"
#include "test_util.h"

using namespace ouroboros;

namespace {

using ouroboros_test::expect_identical;
using ouroboros_test::Recording;
using ouroboros_test::tiny_config;

// Batch t is a pure function of t, so every method sees the same data.
Batch batch_for(const Config& c, int64_t t) {
  return ouroboros_test::random_batch(c, 1000 + static_cast<uint64_t>(t));
}

// Batches of this file's tests, recorded tick by tick.
Recording record(Method& m, const Config& c, int64_t ticks) {
  return ouroboros_test::record(
      m, [&](int64_t t) { return batch_for(c, t); }, ticks);
}

// Plain SGD (no momentum, decay or clipping): an update is exactly -lr * gradient.
Config plain_sgd_config(int64_t K) {
  Config cfg = tiny_config(K, "sgd");
  cfg.train.momentum = 0.0;
  cfg.train.weight_decay = 0.0;
  cfg.train.grad_clip = 0.0;
  return cfg;
}

// w^tick, the weights at the start of a tick, as fresh leaves that require grad.
ParamSet weights_before(const Recording& r, const ParamSet& init, int64_t tick) {
  ParamSet p;
  for (size_t i = 0; i < init.size(); ++i) {
    Tensor w = tick == 0 ? init.tensors()[i] : r.params_after_tick[tick - 1][i];
    p.add(init.names()[i], w.detach().clone().requires_grad_(true));
  }
  return p;
}

struct Case {
  int64_t K;
  std::string optimizer;
};

class RuntimeVsSimulator : public ::testing::TestWithParam<Case> {};

TEST_P(RuntimeVsSimulator, BitForBitEveryTick) {
  const Case c = GetParam();
  at::set_num_threads(1);
  Config cfg = tiny_config(c.K, c.optimizer);
  GPT model(cfg.model);
  const int64_t ticks = 3 * c.K + 3;  // module 1 updates 2K+4 times
  OuroborosThreads engine(model, model.init_params(7), cfg);
  OuroborosSimulator sim(model, model.init_params(7), cfg);
  Recording a = record(engine, cfg, ticks);
  Recording b = record(sim, cfg, ticks);
  expect_identical(a, b, engine.params().names());
  // The weights really moved, every module included.
  const auto& first = a.params_after_tick.front();
  const auto& last = a.params_after_tick.back();
  ParamSet init = model.init_params(7);
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_FALSE(torch::equal(init.tensors()[i], last[i])) << init.names()[i] << " never updated";
  }
}

INSTANTIATE_TEST_SUITE_P(Engine, RuntimeVsSimulator,
                         ::testing::Values(Case{2, "sgd"}, Case{2, "adam"}, Case{3, "sgd"},
                                           Case{3, "adam"}, Case{4, "sgd"}, Case{4, "adamw"},
                                           Case{4, "adam"}),
                         [](const auto& info) {
                           return "K" + std::to_string(info.param.K) + "_" + info.param.optimizer;
                         });

TEST(Engine, DropoutAndSyncWarmupMatchSimulator) {
  at::set_num_threads(1);
  Config cfg = tiny_config(3, "adam");
  cfg.model.dropout = 0.1;
  cfg.engine.sync_warmup = 4;
  GPT model(cfg.model);
  OuroborosThreads engine(model, model.init_params(3), cfg);
  OuroborosSimulator sim(model, model.init_params(3), cfg);
  expect_identical(record(engine, cfg, 10), record(sim, cfg, 10), engine.params().names());
}

// K = 1, and any K in synchronous mode, is plain backprop: the reference trainer's result.
TEST(Engine, SingleModuleEqualsReferenceTrainer) {
  at::set_num_threads(1);
  Config cfg = tiny_config(1, "adam");
  GPT model(cfg.model);
  OuroborosThreads engine(model, model.init_params(5), cfg);
  SequentialBackprop ref(model, model.init_params(5), cfg.train);
  expect_identical(record(engine, cfg, 8), record(ref, cfg, 8), ref.params().names());
}

TEST(Engine, SynchronousModeEqualsReferenceTrainer) {
  at::set_num_threads(1);
  for (int64_t K : {2, 3, 4}) {
    Config cfg = tiny_config(K, "adam");
    // Clipping is per worker (documented); with one norm over the whole model it matches only
    // when clipping is off or one worker holds everything.
    if (K > 2) cfg.train.grad_clip = 0.0;
    cfg.engine.sync_warmup = 1000;
    GPT model(cfg.model);
    OuroborosThreads engine(model, model.init_params(9), cfg);
    SequentialBackprop ref(model, model.init_params(9), cfg.train);
    SCOPED_TRACE("K = " + std::to_string(K));
    expect_identical(record(engine, cfg, 6), record(ref, cfg, 6), ref.params().names());
  }
}

// docs/ALGORITHM.md section 3, step 4, by hand: with plain SGD, wte at tick t moves by
// -lr_t * (output-side gradient of batch t at w^t + input-side gradient of batch t-K+1 at
// w^(t-K+1)).
TEST(Engine, TiedEmbeddingGetsFreshOutputAndStaleInputGradient) {
  at::set_num_threads(1);
  const int64_t K = 3, t = 5;
  Config cfg = plain_sgd_config(K);
  GPT model(cfg.model);
  OuroborosThreads engine(model, model.init_params(4), cfg);
  Recording r = record(engine, cfg, t + 1);
  const ParamSet names = model.init_params(4);
  // Gradient of loss(w; x(s)) w.r.t. the input-side (embed = true) or output-side use of wte.
  auto side_gradient = [&](int64_t s, bool input_side) {
    ParamSet p = weights_before(r, names, s);
    Tensor wte = p.at("wte.weight").detach().clone().requires_grad_(true);
    Tensor frozen = p.at("wte.weight").detach();
    ParamSet in = p.subset(p.names());
    in.at("wte.weight") = input_side ? wte : frozen;
    ForwardContext ctx;
    auto [x, y] = batch_for(cfg, s);
    Tensor h = model.hidden(in, x, ctx);
    Tensor n = at::layer_norm(h, {cfg.model.n_embd}, p.at("ln_f.weight"), p.at("ln_f.bias"), 1e-5);
    Tensor logits = at::linear(n, input_side ? frozen : wte);
    at::cross_entropy_loss(logits.view({-1, cfg.model.vocab_size}), y.reshape({-1})).backward();
    return wte.grad();
  };
  Tensor g_out = side_gradient(t, false);
  Tensor g_in = side_gradient(t - (K - 1), true);
  EXPECT_GT(g_out.abs().sum().item<double>(), 0.0);
  EXPECT_GT(g_in.abs().sum().item<double>(), 0.0);
  const Tensor wte_t = weights_before(r, names, t).at("wte.weight").detach();
  Tensor expected = wte_t - learning_rate(cfg.train, t) * (g_out + g_in);
  Tensor actual = r.params_after_tick[t][0];
  ASSERT_EQ(names.names()[0], "wte.weight");
  EXPECT_TRUE(torch::allclose(actual, expected, 0.0, 1e-7))
      << (actual - expected).abs().max().item<double>();
  // Either side alone is not what happened.
  Tensor out_only = wte_t - learning_rate(cfg.train, t) * g_out;
  EXPECT_FALSE(torch::allclose(actual, out_only, 0.0, 1e-7));
}

// docs/ALGORITHM.md section 3, step 2, by hand for a block of every module: with plain SGD,
// module k's weights at tick t move by -lr_t * (gradient of the whole model's loss on batch
// s = t - (K - k), evaluated at the weights w^s that batch was forwarded with).
TEST(Engine, EveryModuleGetsTheExactDelayedGradient) {
  at::set_num_threads(1);
  const int64_t K = 3, t = 6;
  Config cfg = plain_sgd_config(K);  // even: module 1 = block 0, 2 = blocks 1-2, 3 = block 3
  GPT model(cfg.model);
  OuroborosThreads engine(model, model.init_params(4), cfg);
  Recording r = record(engine, cfg, t + 1);
  const ParamSet init = model.init_params(4);
  for (auto [name, k] : std::vector<std::pair<std::string, int64_t>>{
           {"h.0.mlp.c_fc.weight", 1}, {"h.2.attn.c_attn.weight", 2}, {"h.3.ln_2.weight", 3}}) {
    const int64_t s = t - (K - k);
    ParamSet at_s = weights_before(r, init, s);
    ForwardContext ctx;
    auto [x, y] = batch_for(cfg, s);
    model.loss(at_s, x, y, ctx).backward();
    Tensor expected = weights_before(r, init, t).at(name).detach() -
                      learning_rate(cfg.train, t) * at_s.at(name).grad();
    size_t i = 0;
    while (init.names()[i] != name) ++i;
    EXPECT_TRUE(torch::allclose(r.params_after_tick[t][i], expected, 0.0, 1e-7))
        << name << " (module " << k << "): off by "
        << (r.params_after_tick[t][i] - expected).abs().max().item<double>();
  }
}

TEST(Engine, FirstTicksUpdateOnlyFilledModules) {
  // At tick t < K - k module k has no gradient yet and must keep its initial weights.
  at::set_num_threads(1);
  Config cfg = tiny_config(4, "sgd");
  GPT model(cfg.model);
  OuroborosThreads engine(model, model.init_params(1), cfg);
  ParamSet init = model.init_params(1);
  Recording r = record(engine, cfg, 4);
  const Partition& p = engine.plan().partition;
  for (int64_t k = 1; k <= 4; ++k) {
    const ModulePlan& m = p.module(k);
    for (int64_t tick = 0; tick < 4; ++tick) {
      const std::string probe = m.first_block < m.end_block
                                    ? "h." + std::to_string(m.first_block) + ".mlp.c_fc.weight"
                                    : (m.embed ? "wpe.weight" : "ln_f.weight");
      size_t idx = 0;
      while (init.names()[idx] != probe) ++idx;
      const bool changed = !torch::equal(init.tensors()[idx], r.params_after_tick[tick][idx]);
      EXPECT_EQ(changed, tick >= 4 - k) << "module " << k << " (" << probe << ") at tick " << tick;
    }
  }
}

// The tied embedding stays on worker 0: only activations and errors of the B x T x C boundary
// cross the transport, exactly one of each per boundary and batch.
TEST(Engine, TransportCarriesExactlyTheBoundaryTensors) {
  at::set_num_threads(1);
  for (int64_t K : {2, 3, 4}) {
    Config cfg = tiny_config(K, "sgd");
    GPT model(cfg.model);
    OuroborosThreads engine(model, model.init_params(2), cfg);
    const int64_t N = 9;
    BatchFn batch = [&](int64_t t) { return batch_for(cfg, t); };
    LossFn loss = [](int64_t, double) {};
    engine.run(0, N, batch, loss);
    int64_t messages = 0, bytes = 0;
    for (int64_t w = 0; w < engine.plan().partition.num_workers(); ++w) {
      messages += engine.transport(w).stats().messages;
      bytes += engine.transport(w).stats().bytes;
    }
    const int64_t boundary_bytes =
        cfg.train.batch_size * cfg.model.block_size * cfg.model.n_embd * 4;
    SCOPED_TRACE("K = " + std::to_string(K));
    if (K == 2) {
      EXPECT_EQ(messages, 0);  // both modules on worker 0: nothing crosses
      continue;
    }
    // Activations: K-1 per tick. Errors of boundary b: sent at tick s + K-b-1 for batch s.
    int64_t expected = N * (K - 1);
    for (int64_t b = 1; b <= K - 1; ++b) expected += N - (K - b - 1);
    EXPECT_EQ(messages, expected);
    EXPECT_EQ(bytes, expected * boundary_bytes);
    // Steady state: 2(K-1) messages of B*T*C floats per tick, never a V x C matrix.
    EXPECT_NE(boundary_bytes, cfg.model.vocab_size * cfg.model.n_embd * 4);
    engine.drain();
    int64_t after = 0;
    for (int64_t w = 0; w < K - 1; ++w) after += engine.transport(w).stats().messages;
    EXPECT_EQ(after, 2 * N * (K - 1));
    EXPECT_EQ(engine.undelivered_messages(), 0u);
  }
}

// Module k holds the batches between its forward and its delayed backward: every worker forwards
// before it back-propagates within a tick, so module k holds K - k + 1 batches at once.
TEST(Engine, BatchesInFlightPerModule) {
  at::set_num_threads(1);
  const int64_t K = 4;
  Config cfg = tiny_config(K, "sgd");
  GPT model(cfg.model);
  OuroborosThreads engine(model, model.init_params(2), cfg);
  BatchFn batch = [&](int64_t t) { return batch_for(cfg, t); };
  engine.run(0, 10, batch, [](int64_t, double) {});
  EXPECT_EQ(engine.worker(0).peak_in_flight(1), K);
  EXPECT_EQ(engine.worker(0).peak_in_flight(K), 1);
  EXPECT_EQ(engine.worker(1).peak_in_flight(2), K - 2 + 1);
  EXPECT_EQ(engine.worker(2).peak_in_flight(3), K - 3 + 1);
  EXPECT_EQ(engine.worker(0).in_flight(), K - 1);  // batches 7, 8, 9 await module 1's backward
  engine.drain();
  for (int64_t w = 0; w < K - 1; ++w) EXPECT_EQ(engine.worker(w).in_flight(), 0);
}

TEST(Engine, BadPlansAreOneLineErrors) {
  Config cfg = tiny_config(3, "sgd");
  cfg.engine.partition = "3,1";
  try {
    make_plan(cfg, GPT(cfg.model).cost_model(cfg.train.batch_size));
    FAIL() << "decreasing boundaries accepted";
  } catch (const PlanError& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("3"), std::string::npos);
  }
  cfg.engine.partition = "even";
  cfg.engine.modules = 7;  // 5 middle modules for 4 blocks
  EXPECT_THROW(make_plan(cfg, GPT(cfg.model).cost_model(cfg.train.batch_size)), PlanError);
  cfg.engine.modules = 3;
  cfg.engine.partition = "1,x";
  EXPECT_THROW(make_plan(cfg, GPT(cfg.model).cost_model(cfg.train.batch_size)), PlanError);
}

TEST(Engine, WorkerFailureStopsEveryWorkerWithTheCause) {
  at::set_num_threads(1);
  Config cfg = tiny_config(3, "sgd");
  GPT model(cfg.model);
  OuroborosThreads engine(model, model.init_params(2), cfg);
  BatchFn bad = [&](int64_t t) -> Batch {
    if (t == 3) throw DataError("batch 3 is unreadable");
    return batch_for(cfg, t);
  };
  try {
    engine.run(0, 6, bad, [](int64_t, double) {});
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("batch 3"), std::string::npos);
  }
}

}  // namespace
