// Training: the Method interface that advances weights tick by tick (the reference trainer and the
// Ouroboros engine implement it), evaluation, and the loop around them that logs, evaluates and
// checkpoints.
#pragma once

#include <functional>
#include <map>
#include <iosfwd>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "ouroboros/config.h"
#include "ouroboros/data.h"
#include "ouroboros/model.h"
#include "ouroboros/optim.h"

namespace ouroboros {

using Batch = std::pair<Tensor, Tensor>;                      // x, y: [B, T] int64
using BatchFn = std::function<Batch(int64_t tick)>;           // called once per tick, in order
using LossFn = std::function<void(int64_t tick, double loss)>;

// Advances the weights one tick at a time. Between run() calls every worker is idle, so params()
// and the state accessors see a consistent picture.
class Method {
 public:
  virtual ~Method() = default;
  // Runs ticks [first, first + count).
  virtual void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) = 0;
  // Applies the gradients of batches still in flight, so the weights are final (end of training,
  // checkpoints). A no-op for plain backprop.
  virtual void drain() = 0;
  // Continues a run from a checkpoint written after `tick` ticks (the pipeline was drained).
  virtual void resume_at(int64_t tick) { (void)tick; }
  virtual const ParamSet& params() const = 0;
  virtual c10::impl::GenericDict optimizer_state() const = 0;
  virtual void load_optimizer_state(const c10::impl::GenericDict& d) = 0;
  // Dropout generator states, one per module, for checkpoints.
  virtual std::vector<Tensor> generator_states() const = 0;
  virtual void set_generator_states(const std::vector<Tensor>& s) = 0;
  // Segment memories of a recurrent model, layer -> [B, M, C] (empty for other models), so a
  // checkpoint resumes exactly.
  virtual std::map<int64_t, Tensor> memory() const { return {}; }
  virtual void set_memory(const std::map<int64_t, Tensor>& m) { (void)m; }
};

// Seed of module k's dropout generator.
uint64_t dropout_seed(uint64_t seed, int64_t module);

// The reference trainer: the whole model on one worker with plain backprop (ALGORITHM.md sec. 6).
class ReferenceTrainer : public Method {
 public:
  ReferenceTrainer(const LanguageModel& model, ParamSet params, const TrainConfig& cfg);
  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override {}
  const ParamSet& params() const override { return params_; }
  c10::impl::GenericDict optimizer_state() const override { return optimizer_.state_dict(); }
  void load_optimizer_state(const c10::impl::GenericDict& d) override {
    optimizer_.load_state_dict(d);
  }
  std::vector<Tensor> generator_states() const override;
  void set_generator_states(const std::vector<Tensor>& s) override;
  std::map<int64_t, Tensor> memory() const override { return ctx_.memory; }
  void set_memory(const std::map<int64_t, Tensor>& m) override { ctx_.memory = m; }

 private:
  const LanguageModel& model_;
  ParamSet params_;
  TrainConfig cfg_;
  Optimizer optimizer_;
  ForwardContext ctx_;
};

// Builds the method the config's mode asks for (resolved_mode): the reference trainer, the
// Ouroboros engine, GPipe or data parallelism (baselines.h).
std::unique_ptr<Method> make_method(const Config& cfg, const LanguageModel& model, ParamSet params);

struct EvalResult {
  double loss = 0.0;    // mean cross-entropy in nats over all targets
  int64_t tokens = 0;   // number of targets
  double bpc() const;   // bits per character (byte/char data)
  double perplexity() const;
};
// Mean cross-entropy over the evaluation windows of tokens (data.h); max_windows = 0 for all.
// A recurrent model is evaluated on batch_size streams instead (stream.h), in segments of its
// evaluation lengths; max_windows then limits the targets to about that many segments' worth.
EvalResult evaluate(const LanguageModel& model, const ParamSet& params, const std::vector<int32_t>& tokens,
                    int64_t batch_size, int64_t max_windows = 0);

struct TrainOptions {
  std::string resume;         // checkpoint to continue from; "" = fresh start
  int64_t stop_after = -1;    // stop (with a checkpoint) after this tick count; -1 = cfg.steps
  std::ostream* log = nullptr;  // progress lines; nullptr = std::cout
  bool quiet = false;         // no progress lines (tests)
  // Builds the method instead of make_method (worker processes, the serial simulator).
  std::function<std::unique_ptr<Method>(const Config&, const LanguageModel&, ParamSet)> method_factory;
};

struct TrainResult {
  int64_t steps = 0;
  double final_train_loss = 0.0;  // mean of the last log interval
  EvalResult valid;
  std::string checkpoint;
  ParamSet params;                // final weights (detached)
  std::vector<double> losses;     // loss of every tick run
};

// The whole job: data, model, method, progress, evaluation, metrics, checkpoints, resume.
TrainResult train(Config cfg, const TrainOptions& opts);

}  // namespace ouroboros
