// label: distributed
// Ouroboros across processes on loopback: processes == threads == serial simulator bit for bit,
// R rings == one ring with R times the batch; GPipe and data parallelism on processes == threads;
// mismatched configurations, and the refusals of a single process.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>

#include "dist_util.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/dist/c10d_transport.h"
#include "ouroboros/dist/context.h"
#include "ouroboros/dist/env.h"
#include "ouroboros/engine/ouroboros_simulator.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/checkpoint.h"
#include "test_util.h"

using namespace ouroboros;
using namespace ouroboros_test;

namespace {

// What tolerates the delays: nothing (Adam), NAdam with weight prediction and the PipeMare
// learning rate, or Muon with weight prediction and the delay correction.
enum class Tolerance { kNone, kNAdam, kMuon };

struct Case {
  int64_t K;
  Tolerance tolerance;
  int64_t micro_batches = 1;
  bool recompute = false;  // --recompute delayed
};

std::string name_of(const Case& c) {
  const char* names[] = {"", "_delay_tolerant", "_muon_corrected"};
  return "K" + std::to_string(c.K) + names[static_cast<int>(c.tolerance)] +
         (c.micro_batches > 1 ? "_M" + std::to_string(c.micro_batches) : "") +
         (c.recompute ? "_recompute" : "");
}

void PrintTo(const Case& c, std::ostream* os) { *os << name_of(c); }

class ProcessesThreadsSimulator : public ::testing::TestWithParam<Case> {};

// The same run three ways: K-1 processes over Gloo, K-1 threads, and the serial simulator. The
// checkpoints (weights, Adam moments and steps, dropout generators, sampler) and every tick's
// loss are identical.
TEST_P(ProcessesThreadsSimulator, BitForBit) {
  const int64_t K = GetParam().K;
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  const Tolerance tolerance = GetParam().tolerance;
  const char* optimizer[] = {"adam", "nadam", "muon"};
  Config cfg = tiny_config(data, K, optimizer[static_cast<int>(tolerance)]);
  cfg.model.dropout = 0.1;  // the dropout generators must line up too
  if (tolerance != Tolerance::kNone) cfg.engine.weight_predict = WeightPredict::kOptimizer;
  if (tolerance == Tolerance::kNAdam) {
    cfg.engine.stale_lr = StaleLr::kPipeMare;
    cfg.engine.stale_lr_ticks = 10;
  }
  if (tolerance == Tolerance::kMuon) cfg.engine.delay_correction = DelayCorrection::kExtrapolate;
  cfg.engine.micro_batches = GetParam().micro_batches;
  if (GetParam().recompute) cfg.engine.recompute = Recompute::kDelayed;

  Config threads = cfg;
  threads.train.out_dir = (dir.path() / "threads").string();
  TrainOptions quiet;
  quiet.quiet = true;
  TrainResult t = train(threads, quiet);

  Config simulated = cfg;
  simulated.train.out_dir = (dir.path() / "simulator").string();
  TrainOptions sim = quiet;
  sim.method_factory = [](const Config& c, const LanguageModel& model, ParamSet params) {
    return std::make_unique<OuroborosSimulator>(model, std::move(params), c);
  };
  train(simulated, sim);

  Config procs = cfg;
  procs.train.out_dir = (dir.path() / "processes").string();
  const int world = static_cast<int>(K - 1);
  auto codes = run_processes(dir, write_config(dir, "procs.json", procs), world, "p");
  for (int r = 0; r < world; ++r) ASSERT_EQ(codes[r], 0) << logs(dir, "p", world);

  Checkpoint a = load_checkpoint((dir.path() / "processes" / "ckpt").string());
  Checkpoint b = load_checkpoint((dir.path() / "threads" / "ckpt.pt").string());
  Checkpoint c = load_checkpoint((dir.path() / "simulator" / "ckpt.pt").string());
  EXPECT_EQ(a.step, 24);
  expect_same_checkpoint(a, b);
  expect_same_checkpoint(b, c);
  std::vector<double> losses = metric_losses(dir.path() / "processes" / "metrics.jsonl");
  ASSERT_EQ(losses.size(), t.losses.size());
  for (size_t i = 0; i < losses.size(); ++i) EXPECT_EQ(losses[i], t.losses[i]) << "tick " << i;
  // Evaluations at steps 10, 20 and the end, from the weights rank 0 collected.
  const std::vector<double> evals = metric_evals(dir.path() / "processes" / "metrics.jsonl");
  EXPECT_EQ(evals.size(), 3u);
  EXPECT_EQ(evals, metric_evals(dir.path() / "threads" / "metrics.jsonl"));
  // The weights moved.
  GPT model(b.config.model);
  ParamSet init = model.init_params(cfg.train.seed);
  EXPECT_FALSE(torch::equal(init.tensors().back(), a.model.tensors().back()));
}

INSTANTIATE_TEST_SUITE_P(Distributed, ProcessesThreadsSimulator,
                         ::testing::Values(Case{3, Tolerance::kNone}, Case{4, Tolerance::kNone},
                                           Case{3, Tolerance::kNAdam}, Case{4, Tolerance::kMuon},
                                           Case{4, Tolerance::kMuon, 2},
                                           Case{3, Tolerance::kNAdam, 2, true}),
                         [](const auto& info) { return name_of(info.param); });

TEST(Distributed, TwoRingsEqualOneRingWithTwiceTheBatch) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = tiny_config(data, 3, "sgd");
  cfg.train.steps = 16;
  cfg.train.lr = 0.05;
  cfg.train.min_lr = 0.01;

  const Config one = with_rings(cfg, 4, 1, dir.path() / "one");
  const Config two = with_rings(cfg, 2, 2, dir.path() / "two");
  const TrainResult single = run_threads_and_processes(dir, one, two, 4, "r");
  ASSERT_FALSE(HasFailure());

  Checkpoint a = load_checkpoint((dir.path() / "two" / "ckpt").string());
  EXPECT_LT(max_difference(a.model, single.params), 1e-5);
  // Not trivially equal: the run moved the weights much further than the tolerance.
  GPT model(a.config.model);
  ParamSet init = model.init_params(cfg.train.seed);
  EXPECT_GT((a.model.at("wte.weight") - init.at("wte.weight")).abs().max().item<double>(), 1e-3);
  std::vector<double> losses = metric_losses(dir.path() / "two" / "metrics.jsonl");
  ASSERT_EQ(losses.size(), single.losses.size());
  for (size_t i = 0; i < losses.size(); ++i) EXPECT_NEAR(losses[i], single.losses[i], 1e-5);
}

// Data parallelism with one process per replica (DDP: --modules 1 --replicas 2, batch B each)
// equals the threaded data-parallel mode with 2 workers on batch 2B bit for bit, dropout
// included (replica r draws from generator r + 1 either way): weights, Adam moments, generators,
// losses and evaluations.
TEST(Distributed, DataParallelProcessesEqualThreads) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = tiny_config(data, 1, "adam");
  cfg.model.dropout = 0.1;

  Config threads = with_rings(cfg, 4, 1, dir.path() / "threads");
  threads.engine.mode = Mode::kDataParallel;
  threads.engine.workers = 2;
  Config ddp = with_rings(cfg, 2, 2, dir.path() / "ddp");
  const TrainResult t = run_threads_and_processes(dir, threads, ddp, 2, "d");
  ASSERT_FALSE(HasFailure());

  const Checkpoint a = load_checkpoint((dir.path() / "ddp" / "ckpt").string());
  const Checkpoint b = load_checkpoint((dir.path() / "threads" / "ckpt.pt").string());
  EXPECT_EQ(a.generator_states.size(), 2u);
  expect_same_checkpoint(a, b);
  EXPECT_EQ(metric_losses(dir.path() / "ddp" / "metrics.jsonl"), t.losses);
  const std::vector<double> evals = metric_evals(dir.path() / "ddp" / "metrics.jsonl");
  EXPECT_EQ(evals.size(), 3u);
  EXPECT_EQ(evals, metric_evals(dir.path() / "threads" / "metrics.jsonl"));

  // Killed after a checkpoint at step 12 and resumed: each replica's generator comes back from
  // its own shard, so the run is the uninterrupted one.
  expect_resume_after_kill(dir, ddp, 2, 12, a, t.losses);
}

class GPipeProcesses : public ::testing::TestWithParam<int64_t> {};

// GPipe with one process per worker runs the threaded GPipe's stages over Gloo: weights, Adam
// moments, dropout generators, every step's loss and the evaluations equal the threaded run bit
// for bit (K = 3 and 4, 2 micro-batches, dropout). Killed right after the checkpoint at step 12
// and resumed from its shards, the run is the uninterrupted one.
TEST_P(GPipeProcesses, EqualThreadsAlsoAcrossAKill) {
  const int64_t K = GetParam();
  const int world = static_cast<int>(K - 1);
  TempDir dir;
  Config cfg = tiny_config(dir.write("corpus.txt", corpus()), K, "adam");
  cfg.engine.mode = Mode::kGPipe;
  cfg.engine.micro_batches = 2;
  cfg.model.dropout = 0.1;
  Config threads = with_rings(cfg, cfg.train.batch_size, 1, dir.path() / "threads");
  Config procs = with_rings(cfg, cfg.train.batch_size, 1, dir.path() / "procs");
  const TrainResult t = run_threads_and_processes(dir, threads, procs, world, "g");
  ASSERT_FALSE(HasFailure());
  const Checkpoint a = load_checkpoint((dir.path() / "procs" / "ckpt").string());
  expect_same_checkpoint(a, load_checkpoint((dir.path() / "threads" / "ckpt.pt").string()));
  EXPECT_EQ(a.generator_states.size(), static_cast<size_t>(K));
  EXPECT_EQ(metric_losses(dir.path() / "procs" / "metrics.jsonl"), t.losses);
  const std::vector<double> evals = metric_evals(dir.path() / "procs" / "metrics.jsonl");
  EXPECT_EQ(evals.size(), 3u);
  EXPECT_EQ(evals, metric_evals(dir.path() / "threads" / "metrics.jsonl"));
  expect_resume_after_kill(dir, procs, world, 12, a, t.losses);
}

INSTANTIATE_TEST_SUITE_P(Distributed, GPipeProcesses, ::testing::Values<int64_t>(3, 4),
                         [](const auto& info) { return "K" + std::to_string(info.param); });

// Evaluations run through the ring: each batch of a periodic evaluation is one more message from
// every worker (its module's activation, the evaluation's own tag), and the results equal the
// threaded run's whole-model evaluation (K = 3, two periodic evaluations of 2 batches each).
TEST(Distributed, EvaluationRunsThroughTheRing) {
  TempDir dir;
  Config cfg = tiny_config(dir.write("corpus.txt", corpus()), 3, "adam");
  cfg.train.steps = 12;
  cfg.train.eval_interval = 5;
  cfg.train.eval_batches = 2;
  const auto messages_of_rank1 = [&](const Config& c, const std::string& tag) {
    auto codes = run_processes(dir, write_config(dir, tag + ".json", c), 2, tag);
    for (int r = 0; r < 2; ++r) EXPECT_EQ(codes[r], 0) << logs(dir, tag, 2);
    const std::string log = read_bytes(dir.path() / (tag + "_rank0.log"));
    const size_t at = log.find("transport rank 1: ");
    EXPECT_NE(at, std::string::npos) << log;
    return at == std::string::npos ? -1 : std::stoll(log.substr(at + 18));
  };
  const int64_t B = cfg.train.batch_size;
  TrainOptions quiet;
  quiet.quiet = true;
  train(with_rings(cfg, B, 1, dir.path() / "threads"), quiet);
  const int64_t with_evals = messages_of_rank1(with_rings(cfg, B, 1, dir.path() / "e"), "e");
  Config none = cfg;
  none.train.eval_interval = 0;
  const int64_t without = messages_of_rank1(with_rings(none, B, 1, dir.path() / "n"), "n");
  EXPECT_EQ(with_evals - without, 2 * 2);
  EXPECT_EQ(metric_evals(dir.path() / "e" / "metrics.jsonl").size(), 3u);  // steps 5, 10, final
  EXPECT_EQ(metric_evals(dir.path() / "e" / "metrics.jsonl"),
            metric_evals(dir.path() / "threads" / "metrics.jsonl"));
}

// Every rank refuses a configuration that differs from the others', naming the field.
TEST(Distributed, MismatchedConfigurationIsRefused) {
  TempDir dir;
  const fs::path data = dir.write("corpus.txt", corpus());
  Config cfg = tiny_config(data, 3, "adam");
  cfg.train.out_dir = (dir.path() / "out").string();
  const fs::path file = write_config(dir, "cfg.json", cfg);
  const int port = free_port();
  pid_t p0 =
      spawn({"train", "--config", file.string()}, rank_env(0, 2, port), dir.path() / "m0.log");
  pid_t p1 = spawn({"train", "--config", file.string(), "--seed", "7"}, rank_env(1, 2, port),
                   dir.path() / "m1.log");
  EXPECT_EQ(wait_exit(p0, 60), 1);
  EXPECT_EQ(wait_exit(p1, 60), 1);
  for (const char* log : {"m0.log", "m1.log"}) {
    const std::string text = read_bytes(dir.path() / log);
    EXPECT_NE(text.find("configuration mismatch"), std::string::npos) << text;
    EXPECT_NE(text.find("train.seed"), std::string::npos) << text;
  }
  EXPECT_FALSE(fs::exists(dir.path() / "out" / "ckpt"));
}

// Replicas need processes: a single process refuses rather than silently training on R*B rows.
TEST(Distributed, ReplicasWithoutProcessesAreRefused) {
  TempDir dir;
  Config cfg = tiny_config(dir.write("corpus.txt", corpus()), 3, "adam");
  cfg.dist.replicas = 2;
  cfg.train.out_dir = (dir.path() / "out").string();
  TrainOptions quiet;
  quiet.quiet = true;
  EXPECT_THROW(train(cfg, quiet), ConfigError);
  EXPECT_FALSE(fs::exists(dir.path() / "out"));
}

TEST(C10dTransport, TagsStayWithinGlooRange) {
  MessageKey k{true, 3, (int64_t{1} << 40) + 5};
  EXPECT_GE(C10dTransport::gloo_tag(k), 0);
  EXPECT_EQ(C10dTransport::gloo_tag(k) & 0xff, (3 << 1) | 1);
  EXPECT_EQ(C10dTransport::gloo_tag(MessageKey{false, 2, 7}), (7 << 20) | (2 << 1));
  // A micro-batch's messages have tags of their own.
  EXPECT_EQ(C10dTransport::gloo_tag(MessageKey{false, 2, 7, 3}), (7 << 20) | (3 << 8) | (2 << 1));
}

// A transport released right after its last send still delivers it: Gloo cancels a send whose
// work is dropped, so the destructor waits for the sends in flight. The receiver here posts its
// receive 300 ms late, long after the sender released its transport (without that wait).
TEST(C10dTransport, SendsInFlightArriveAfterTheTransportIsReleased) {
  Config cfg = tiny_config(3);
  cfg.dist.timeout = 5;
  const int port = free_port();
  auto env = [&](int64_t rank) {
    DistEnv e;
    e.rank = rank;
    e.world_size = 2;
    e.master_port = port;
    return e;
  };
  const MessageKey key{false, 1, 0};
  const at::Tensor sent = at::arange(6, at::kFloat).reshape({2, 3});
  at::Tensor got;
  std::string error;
  std::thread receiver([&] {
    try {
      DistContext ctx(env(1), cfg);
      C10dTransport transport(ctx);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // after the sender's release
      got = transport.recv(0, key, {2, 3});
      ctx.finish();
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  {
    DistContext ctx(env(0), cfg);
    {
      C10dTransport transport(ctx);
      transport.send(1, key, sent);
    }
    ctx.finish();
  }
  receiver.join();
  EXPECT_EQ(error, "");
  ASSERT_TRUE(got.defined());
  EXPECT_TRUE(at::equal(got, sent));
}

}  // namespace
