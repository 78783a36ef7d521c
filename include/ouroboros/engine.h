// The Ouroboros engine: K modules on K-1 worker threads exchanging activations and errors through
// a transport, each module back-propagating a one-tick-old error (ALGORITHM.md sections 2-5).
#pragma once

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ouroboros/config.h"
#include "ouroboros/model.h"
#include "ouroboros/partition.h"
#include "ouroboros/schedule.h"
#include "ouroboros/trainer.h"
#include "ouroboros/transport.h"
#include "ouroboros/worker.h"

namespace ouroboros {

// The partition and schedules a config asks for, validated.
struct Plan {
  CostModel cost;
  Partition partition;
  Schedule delayed;
  Schedule synchronous;
  // Partition, schedule row per worker, and the cost model's tick time and speed-up.
  std::string summary() const;
};
Plan make_plan(const Config& cfg);

// In-flight batches at the end of training or at a checkpoint are drained: K-1 extra ticks run
// every pending backward and update (at the last tick's learning rate) without new forwards,
// and the pipeline refills afterwards. A run resumed from a checkpoint therefore continues exactly
// as the same run without interruption.
class OuroborosEngine : public Method {
 public:
  OuroborosEngine(const LanguageModel& model, ParamSet params, const Config& cfg);
  ~OuroborosEngine() override;

  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override;
  void resume_at(int64_t tick) override;
  const ParamSet& params() const override { return params_; }
  c10::impl::GenericDict optimizer_state() const override;
  void load_optimizer_state(const c10::impl::GenericDict& d) override;
  std::vector<Tensor> generator_states() const override;
  void set_generator_states(const std::vector<Tensor>& s) override;
  std::map<int64_t, Tensor> memory() const override;
  void set_memory(const std::map<int64_t, Tensor>& m) override;

  const Plan& plan() const { return plan_; }
  std::string plan_summary() const { return plan_.summary(); }
  const Worker& worker(int64_t w) const { return *workers_.at(w); }
  const Transport& transport(int64_t w) const { return *transports_.at(w); }
  size_t undelivered_messages() const { return hub_.pending(); }

 private:
  struct Job {
    int64_t first = 0, count = 0;
    TickWindow window;  // start/horizon; tick and lr are set per tick
    bool drain = false;
  };
  void run_job(const Job& job, const BatchFn* batch, const LossFn* on_loss);
  void run_ticks(int64_t w, const Job& job, const BatchFn* batch, const LossFn* on_loss);
  void worker_loop(int64_t w);

  const LanguageModel& model_;
  Config cfg_;
  ParamSet params_;
  Plan plan_;
  InProcessHub hub_;
  std::vector<std::unique_ptr<Transport>> transports_;
  std::vector<std::unique_ptr<Worker>> workers_;
  int64_t next_tick_ = 0;       // first tick not yet run
  int64_t pipeline_start_ = 0;  // first batch of the current delayed pipeline

  // Worker threads 1..W-1 take jobs; worker 0 runs on the caller's thread.
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t job_id_ = 0, done_count_ = 0;
  Job job_;
  bool stopping_ = false;
  std::exception_ptr failure_;
};

}  // namespace ouroboros
