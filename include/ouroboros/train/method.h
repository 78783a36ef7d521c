// The Method interface every training method implements (reference trainer, Ouroboros engine on
// threads or processes, GPipe, data parallelism, serial simulator), the state a checkpoint keeps
// of a method, and the per-module training context every method sets up the same way.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/model/language_model.h"
#include "ouroboros/train/checkpoint.h"
#include "ouroboros/train/evaluate.h"
#include "ouroboros/train/optim.h"
#include "ouroboros/train/pipeline_state.h"

namespace ouroboros {

using Batch = std::pair<Tensor, Tensor>;             // x, y: [B, T] int64
using BatchFn = std::function<Batch(int64_t tick)>;  // called once per tick, in order
using LossFn = std::function<void(int64_t tick, double loss)>;

// What a checkpoint holds of a method besides the weights; a value, so every method writes and
// reads it in one place.
struct MethodState {
  // {param name: {"step": int, "exp_avg": T, ...}} over every worker's optimizer.
  c10::impl::GenericDict optimizer{c10::StringType::get(), c10::AnyType::get()};
  std::vector<Tensor> generators;    // dropout generator states: one per module (per replica)
  std::map<int64_t, Tensor> memory;  // recurrent models: layer -> segment memory [B, M, C]
  // Pipelined methods: the batches in flight between two ticks and where the pipeline started;
  // none saved = drained, the pipeline refills.
  PipelineState pipeline;
};

// Advances the weights one tick at a time. Between run() calls every worker is idle, so params()
// and state() see a consistent picture.
class Method {
 public:
  virtual ~Method() = default;
  // Runs ticks [first, first + count).
  virtual void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) = 0;
  // Applies the gradients of batches still in flight, so the weights are final (end of training).
  // A no-op for methods that flush every step.
  virtual void drain() = 0;
  // True when state() holds the batches in flight, so a checkpoint needs no drain first.
  virtual bool saves_in_flight() const { return false; }
  virtual const ParamSet& params() const = 0;
  // Every process of a run calls this at the end, where the lead is about to read the whole model
  // from params(). Methods with one process per worker send their weights to the lead here (their
  // evaluations run through the ring instead: ring_loss_sum); in one process a no-op.
  virtual void collect_params() {}
  // Methods with one process per worker: the summed loss of an evaluation batch run through the
  // ring, each worker its own modules with fresh evaluation memories (every rank of ring 0 takes
  // one and calls it for the same batches; only the lead's tokens matter, the others' give the
  // shapes, and only the lead's result). Otherwise nothing: the lead evaluates params().
  virtual std::optional<LossSumFn> ring_loss_sum() { return std::nullopt; }
  virtual MethodState state() const = 0;
  // Methods with one process per worker: this rank's part of the state, which it writes as its
  // own shard (nothing of the model passes through rank 0). One process: nullopt.
  virtual std::optional<CheckpointShard> shard() const { return std::nullopt; }
  // Continues a run from a checkpoint written after `tick` ticks: with the saved pipeline where
  // there is one, else refilling it from empty. Throws CheckpointError when the state does not
  // fit this method.
  virtual void restore(const MethodState& s, int64_t tick) = 0;
  // What the method is, for the log: its plan, micro-batches or replicas (ends with a newline).
  virtual std::string describe() const = 0;
  // Per-module update statistics recorded since the last call (train.diagnostics_interval),
  // in step order; methods that record none return nothing.
  virtual std::vector<ModuleStats> take_diagnostics() { return {}; }
};

// Seed of module k's dropout generator.
uint64_t dropout_seed(uint64_t seed, int64_t module);
// The forward context a module trains with: dropout on, its own generator seeded from the run
// seed and the module index (1-based; data-parallel replica r uses r + 1).
ForwardContext training_context(int64_t seed, int64_t module);

// The one check of a checkpoint's generator count: throws CheckpointError naming both counts
// and what the run has `expected` of ("modules", "replicas").
void check_generator_count(const MethodState& s, size_t expected, const std::string& of_what);

// A module's share of a recurrent model's memories (the layers of its blocks), and the reverse.
void collect_memory(const ForwardContext& ctx, std::map<int64_t, Tensor>& into);
void restore_memory(ForwardContext& ctx, const ModulePlan& m, const std::map<int64_t, Tensor>& all);

// Merges optimizer state dicts of several workers (disjoint parameter names) into one.
void merge_optimizer_state(c10::impl::GenericDict& into, const c10::impl::GenericDict& from);

}  // namespace ouroboros
