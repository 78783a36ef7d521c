// The serial simulator: the Ouroboros update rule (docs/ALGORITHM.md section 3) executed on one
// thread, one module after the other, with an explicit weight version per module and batch.
// Short, slow and obviously right: the oracle the parallel runtime must match bit for bit.
#pragma once

#include <map>
#include <tuple>
#include <vector>

#include "ouroboros/core/config.h"
#include "ouroboros/plan/partition.h"
#include "ouroboros/train/method.h"
#include "ouroboros/train/optim.h"

namespace ouroboros {

class OuroborosSimulator : public Method {
 public:
  // Builds its own partition from cfg.engine.partition, which must be "even" or explicit
  // boundaries (the "auto" search is the planner's, which this oracle does not use).
  OuroborosSimulator(const LanguageModel& model, ParamSet params, const Config& cfg);

  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override;
  const ParamSet& params() const override { return params_; }
  MethodState state() const override;
  void restore(const MethodState& s, int64_t tick) override;
  std::string describe() const override { return "serial simulator\n"; }

 private:
  struct Piece {
    Tensor input;   // module input leaf (undefined for module 1)
    Tensor output;  // hidden state or loss
  };
  struct Stored {
    ParamSet weights;                 // w_k^s: the version batch s was forwarded with
    std::map<int64_t, Piece> pieces;  // micro-batch 1..M (0: the whole batch) -> its forward
  };
  // The micro-batches of a batch: {0} (the whole batch) for M = 1, else 1..M.
  std::vector<int64_t> micros() const;
  Tensor rows(const Tensor& t, int64_t micro) const;  // the rows of micro-batch `micro`
  // One tick: forward batch t through all modules (unless t >= horizon), then every module k
  // back-propagates batch t - delay (0 in synchronous ticks), then all modules update.
  void tick(int64_t t, bool synchronous, int64_t horizon, double lr, const BatchFn* batch,
            const LossFn* on_loss);

  // Learning-rate factors of worker w's parameters at tick t (engine.stale_lr); empty = all 1.
  std::vector<double> lr_scale(size_t w, int64_t t, bool synchronous) const;

  const LanguageModel& model_;
  Config cfg_;
  ParamSet params_;
  Partition partition_;
  std::vector<ParamSet> module_params_;            // index k-1: live weights of module k
  std::vector<std::map<int64_t, Stored>> stored_;  // index k-1: batch -> stored forward
  int64_t micro_batches_ = 1;                      // M: each batch runs as M pieces of B / M rows
  // (k, batch, micro) -> dl/d(output of module k)
  std::map<std::tuple<int64_t, int64_t, int64_t>, Tensor> errors_;
  std::vector<std::unique_ptr<Optimizer>> optimizers_;  // one per worker (clipping scope)
  std::vector<ForwardContext> contexts_;                // one per module
  std::vector<int64_t> worker_of_;                      // index k-1: module k's worker
  std::vector<std::vector<int64_t>> param_delay_;       // per worker, per optimizer parameter
  int64_t next_tick_ = 0;
  int64_t pipeline_start_ = 0;
};

}  // namespace ouroboros
