// One Ouroboros worker: the modules it holds, their weights and in-flight batches, its optimizer,
// and the executor that walks its row of the schedule one tick at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <tuple>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/core/config.h"
#include "ouroboros/engine/clock.h"
#include "ouroboros/engine/transport.h"
#include "ouroboros/model/language_model.h"
#include "ouroboros/plan/partition.h"
#include "ouroboros/plan/planner.h"
#include "ouroboros/plan/schedule.h"
#include "ouroboros/train/method.h"
#include "ouroboros/train/optim.h"

namespace ouroboros {

// The parameter names a worker holds, in the model's order (V once on worker 0).
std::vector<std::string> worker_param_names(const LanguageModel& model, const Partition& partition,
                                            const ParamSet& all, int64_t worker);

class Worker {
 public:
  // all: every parameter of the model; the worker keeps (and updates in place) its own subset.
  // plan: the cut and the micro-batch count (its schedules are passed to run_tick).
  Worker(const LanguageModel& model, const Plan& plan, int64_t rank, const ParamSet& all,
         const Config& cfg, Transport& transport);

  // Walks this worker's ops of one tick. batch/on_loss are used by worker 0 only.
  void run_tick(const Schedule& schedule, const TickWindow& w, const BatchFn* batch,
                const LossFn* on_loss);

  int64_t rank() const { return rank_; }
  const ParamSet& params() const { return params_; }
  Optimizer& optimizer() { return optimizer_; }
  // Batches of module k held at once, at most, since construction.
  int64_t peak_in_flight(int64_t k) const { return peak_in_flight_.at(k); }
  // Batches still waiting for their backward (0 after a drain).
  int64_t in_flight() const;
  std::vector<int64_t> modules() const;
  at::Generator& generator(int64_t k) { return contexts_.at(k).generator.value(); }
  // Called with this worker's parameters before each update (data parallelism averages the
  // gradients across replicas here).
  void set_before_update(std::function<void(const ParamSet&)> hook) {
    before_update_ = std::move(hook);
  }
  // Module k's forward context: its dropout generator and, for a recurrent model, its layers'
  // segment memories.
  ForwardContext& context(int64_t k) { return contexts_.at(k); }
  // This worker's share of a method's state: its optimizer entries, its modules' generators (at
  // index k - 1 of s.generators, which must have K entries) and their memories.
  void collect_state(MethodState& s) const;
  void restore_state(const MethodState& s);
  // Per-module update statistics recorded since the last call (train.diagnostics_interval).
  std::vector<ModuleStats> take_diagnostics();

  // The pipeline between two ticks as a value (checkpoints without a drain): per module the
  // weights and input of every forward still waiting for its backward, with its dropout
  // generator and memories as they were before it; the targets waiting for module K; messages
  // received and not yet used; messages sent that their receiver takes at next_tick or later.
  WorkerInFlight save_pipeline(int64_t next_tick) const;
  // After restore_state: runs each saved forward again from its weights and input (the same
  // numbers bit for bit with one intra-op thread), so its backward finds its graph, and sends the
  // pending messages again.
  void restore_pipeline(const WorkerInFlight& saved);

 private:
  // One micro-batch's forward (the whole batch's when M = 1).
  struct Piece {
    Tensor input;      // leaf for the module's input (undefined for module 1)
    Tensor output;     // hidden state, or the loss for module K; undefined while recomputed
    Tensor generator;  // recomputed pieces: the dropout generator's state before the forward
  };
  struct InFlight {
    ParamSet version;  // the weights the forward used
    // version is a copy (delay > 0) or, with micro-batches, a second leaf on the live weights:
    // its gradients, summed over the pieces, move to the live weights after the last backward.
    bool separate = false;
    bool snapshot = false;                    // version is a copy of the weights (delay > 0)
    Tensor tokens;                            // module 1: the batch's token ids
    std::map<int64_t, Piece> pieces;          // micro-batch (0: the whole batch) -> forward
    int64_t backwards = 0;                    // pieces back-propagated so far
    double loss_sum = 0.0;                    // module K: the pieces' losses so far
    Tensor generator_before;                  // dropout generator state before the first piece
    std::map<int64_t, Tensor> memory_before;  // recurrent models: memories before the first piece
    std::vector<std::map<int64_t, Tensor>> memory_after;  // each piece's rows of the new memories
  };
  struct Sent {
    int64_t peer;
    MessageKey key;
    Tensor tensor;
    int64_t recv_tick;  // the tick whose ops receive it
  };
  using LocalKey = std::tuple<bool, int64_t, int64_t, int64_t>;  // error?, boundary, batch, micro

  void forward(int64_t k, int64_t batch, int64_t micro, const TickWindow& w,
               const BatchFn* batch_fn, const LossFn* on_loss);
  void backward(int64_t k, int64_t batch, int64_t micro);
  // The weights a forward of module k uses: the live ones, a second leaf on them (micro-batches),
  // or `copy` (a snapshot or prediction, delay > 0).
  void set_version(InFlight& rec, int64_t k, std::optional<ParamSet> copy) const;
  // Runs piece `micro` of rec's batch through module k from its input (rows of the batch when
  // micro > 0); a recurrent model reads and writes those rows of the memories.
  Tensor forward_piece(InFlight& rec, int64_t k, int64_t micro, const Tensor& input,
                       const Tensor& targets);
  // Whether a forward of this module keeps its graph: not when its backward comes in a later
  // tick (delay > 0 outside the synchronous warm-up) and engine.recompute recomputes it there.
  bool keeps_graph(const ModulePlan& plan, bool synchronous) const {
    return !(recompute_ && plan.delay() > 0 && !synchronous);
  }
  // Piece `micro` of rec's batch through module k again, from its input, weights, dropout
  // generator and memories as the forward had them (engine.recompute): the forward's graph.
  Tensor recompute(const InFlight& rec, int64_t k, int64_t micro, const Piece& piece) const;
  void replay_forwards(int64_t k, const std::vector<BatchInFlight>& saved);
  void update(const TickWindow& w);
  // Learning-rate factor per optimizer parameter at a tick (engine.stale_lr); empty = all 1.
  std::vector<double> lr_scale(const TickWindow& w) const;
  Tensor take_local(const LocalKey& key);
  // Rows of micro-batch `micro` (all rows for 0) of a batch-first tensor.
  Tensor rows(const Tensor& t, int64_t micro) const;
  int64_t pieces() const { return micro_batches_; }
  std::vector<int64_t> message_shape(int64_t micro) const;

  const LanguageModel& model_;
  const Partition& partition_;
  int64_t rank_;
  TrainConfig train_cfg_;
  EngineConfig engine_cfg_;
  Transport& transport_;
  ParamSet params_;  // live weights of every module here
  Optimizer optimizer_;
  std::map<int64_t, ParamSet> module_params_;                 // k -> live weights of module k
  std::map<int64_t, std::map<int64_t, InFlight>> in_flight_;  // k -> batch -> record
  std::map<int64_t, ForwardContext> contexts_;                // k -> dropout generator
  std::map<int64_t, int64_t> peak_in_flight_;
  std::map<int64_t, Tensor> targets_;  // batch -> y, for module K
  std::map<LocalKey, Tensor> mailbox_;
  std::vector<int64_t> message_shape_;  // [B, T, C]
  int64_t micro_batches_ = 1;           // M
  bool recompute_ = false;              // delayed modules keep inputs, not activations
  std::function<void(const ParamSet&)> before_update_;
  std::vector<int64_t> param_delay_;  // per optimizer parameter: the smallest delay using it
  std::map<int64_t, std::vector<size_t>> module_index_;  // k -> optimizer indices, for stats
  std::vector<ModuleStats> diagnostics_;
  std::vector<Sent> sent_;  // messages whose receiver takes them in a later tick
};

}  // namespace ouroboros
