// The baselines Ouroboros is measured against, in the same runtime (the Method interface of
// trainer.h): GPipe, the synchronous micro-batched pipeline on the Ouroboros ring placement, and
// data parallelism with one full replica per worker thread. docs/BENCHMARKS.md describes both.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ouroboros/config.h"
#include "ouroboros/engine.h"
#include "ouroboros/model.h"
#include "ouroboros/optim.h"
#include "ouroboros/trainer.h"
#include "ouroboros/transport.h"

namespace ouroboros {

// W workers: worker 0 runs on the caller's thread, workers 1..W-1 on threads of their own (each
// with `intra_op_threads` libtorch threads). run(fn) calls fn(w) on every worker and returns when
// all are done; the first failure is rethrown (a TransportError caused by another worker's failure
// is not the one reported). on_failure (e.g. a hub abort) wakes workers blocked on a failed peer.
class ThreadTeam {
 public:
  ThreadTeam(int64_t workers, int64_t intra_op_threads, std::function<void()> on_failure = {});
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;
  void run(const std::function<void(int64_t)>& fn);
  int64_t size() const { return workers_; }

 private:
  void loop(int64_t w);
  int64_t workers_;
  int64_t intra_op_threads_;
  std::function<void()> on_failure_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t job_id_ = 0, done_ = 0;
  bool stopping_ = false;
  std::vector<std::exception_ptr> failures_;  // of workers 1..W-1 in the current run
};

// GPipe (Huang et al. 2019) on the Ouroboros placement: K modules on K-1 workers, worker 0 holding
// modules 1 and K (so the tied wte never crosses), middle module k on worker k-1. Each step splits
// the batch into M micro-batches; worker 0 forwards all M through module 1 back to back while the
// others work, every module back-propagates micro-batches as their errors arrive, and the pipeline
// flushes: one update per step on the mean gradient at the step's weights, exactly as sequential
// backprop on the whole batch (up to the order of floating-point sums). Clipping is per worker, as
// in the Ouroboros engine (docs/DESIGN.md), so it equals global clipping for K = 2 only.
class GPipeTrainer : public Method {
 public:
  GPipeTrainer(const LanguageModel& model, ParamSet params, const Config& cfg);
  ~GPipeTrainer() override;

  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override {}  // every step flushes
  const ParamSet& params() const override { return params_; }
  c10::impl::GenericDict optimizer_state() const override;
  void load_optimizer_state(const c10::impl::GenericDict& d) override;
  std::vector<Tensor> generator_states() const override;
  void set_generator_states(const std::vector<Tensor>& s) override;

  const Plan& plan() const { return plan_; }
  const Transport& transport(int64_t w) const { return *transports_.at(w); }
  size_t undelivered_messages() const { return hub_.pending(); }

 private:
  struct Stage;  // one worker's modules, optimizer and generators
  void run_worker(int64_t w, int64_t first, int64_t count, const BatchFn* batch,
                  const LossFn* on_loss);

  const LanguageModel& model_;
  Config cfg_;
  ParamSet params_;
  Plan plan_;
  InProcessHub hub_;
  std::vector<std::unique_ptr<Transport>> transports_;
  std::vector<std::unique_ptr<Stage>> stages_;
  std::unique_ptr<ThreadTeam> team_;
};

// Data parallelism: W replicas on W threads share the weights; replica r computes the gradient of
// its B/W rows of the batch (its own dropout generator), the gradients are averaged in a fixed
// order (deterministic), and one optimizer applies the update with global clipping, exactly as
// sequential backprop on the whole batch up to the order of floating-point sums (bit for bit for
// W = 1). The average is split across the workers; the optimizer step runs once, on the caller's
// thread, which costs what each replica's own update costs in an all-reduce data-parallel run.
class DataParallelTrainer : public Method {
 public:
  DataParallelTrainer(const LanguageModel& model, ParamSet params, const Config& cfg);
  ~DataParallelTrainer() override;

  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override {}
  const ParamSet& params() const override { return params_; }
  c10::impl::GenericDict optimizer_state() const override { return optimizer_.state_dict(); }
  void load_optimizer_state(const c10::impl::GenericDict& d) override {
    optimizer_.load_state_dict(d);
  }
  std::vector<Tensor> generator_states() const override;
  void set_generator_states(const std::vector<Tensor>& s) override;

 private:
  const LanguageModel& model_;
  Config cfg_;
  ParamSet params_;
  Optimizer optimizer_;
  std::vector<ParamSet> replicas_;  // per replica: aliases of params_ (same storage, own .grad)
  std::vector<ForwardContext> contexts_;
  std::unique_ptr<ThreadTeam> team_;
};

// FLOPs of one training step of the GPT model on B sequences, counting matmuls only (2 per
// multiply-add): forward 2*B*T*(12*L*C*C + C*V) + 4*L*B*T*T*C (the weights' matmuls, the tied head,
// q.k^T and att.v); backward twice the forward.
double train_step_flops(const ModelConfig& m, int64_t batch_size);

}  // namespace ouroboros
