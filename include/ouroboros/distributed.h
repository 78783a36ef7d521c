// Ouroboros across processes and machines (docs/DISTRIBUTED.md): rank discovery from torchrun or
// mpirun variables, a c10d transport (Gloo process group, TCPStore rendezvous), the engine run as
// one worker per process, data parallelism across R rings, and failure handling that never hangs.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/config.h"
#include "ouroboros/engine.h"
#include "ouroboros/model.h"
#include "ouroboros/trainer.h"
#include "ouroboros/transport.h"
#include "ouroboros/worker.h"

namespace c10d {
class Store;
class ProcessGroup;
}  // namespace c10d

namespace ouroboros {

// Where this process sits in the group. Ranks are laid out ring after ring:
// rank = ring * (K-1) + worker.
struct DistEnv {
  int64_t rank = -1;
  int64_t world_size = 0;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  // Several processes take part (a world of one is an ordinary run).
  bool active() const { return world_size > 1; }
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (torchrun), else the
// OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK variables (mpirun); fields of `flags` that are set
// (rank >= 0, world_size > 0, non-empty address, port > 0) override them.
DistEnv discover_env(const DistEnv& flags);
// Overrides that override nothing.
DistEnv no_env_overrides();

// The configuration fields every rank must agree on, flattened to "section.name" -> value
// (paths, logging and threads may differ between ranks).
nlohmann::json config_fingerprint(const Config& cfg);
// "" when equal, else the first differing key with both values.
std::string fingerprint_difference(const nlohmann::json& mine, const nlohmann::json& theirs,
                                   int64_t my_rank, int64_t their_rank);

// The process group of a run: store, the world's Gloo group, and the group of the same worker
// in every ring (data parallelism).
class DistContext {
 public:
  // Connects to (rank 0: hosts) the TCPStore, refuses a configuration that differs from
  // rank 0's, and builds the process groups. Throws ConfigError / TransportError.
  DistContext(const DistEnv& env, const Config& cfg);
  ~DistContext();

  int64_t rank() const { return env_.rank; }
  int64_t world_size() const { return env_.world_size; }
  int64_t workers_per_ring() const { return workers_; }
  int64_t ring() const { return env_.rank / workers_; }
  int64_t worker() const { return env_.rank % workers_; }
  int64_t replicas() const { return replicas_; }
  // Rank 0 (worker 0 of ring 0) reads the corpus, logs, evaluates and writes checkpoints.
  bool is_lead() const { return env_.rank == 0; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  c10d::Store& store() { return *store_; }
  c10d::ProcessGroup& world() { return *world_; }
  c10d::ProcessGroup* replica_group() { return replica_group_.get(); }

  // The one line every process reports when a peer is lost. The first process to notice records
  // the lost rank in the store, so the others name the same rank rather than a neighbour that
  // merely exited because of it.
  std::string lost_peer(int64_t peer, const std::string& what);
  // Records that this rank itself failed (so its peers name it).
  void report_failure(const std::string& what);
  // Waits for the store key that `writer` sets, up to timeout. Ends early when another rank
  // recorded a loss, or when the writer's heartbeat stops (writer < 0: any rank may write it).
  std::vector<uint8_t> get(const std::string& key, std::chrono::milliseconds timeout,
                           int64_t writer = -1);
  // After a failure: rank 0 (the store's host) waits up to 3 s for the others to read the lost
  // rank before exiting; the others tell it they have.
  void linger_after_failure();
  void set(const std::string& key, const std::vector<uint8_t>& value);
  // Every rank calls it once at the end; rank 0 returns when all others have.
  void finish();

 private:
  DistEnv env_;
  int64_t workers_ = 1, replicas_ = 1;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> world_;
  c10::intrusive_ptr<c10d::ProcessGroup> replica_group_;
  // Every rank bumps its heartbeat counter in the store twice a second (own store client), so a
  // timeout can tell the frozen rank from the ranks merely waiting on it.
  c10::intrusive_ptr<c10d::Store> heartbeat_store_;
  std::thread heartbeat_;
  std::atomic<bool> stop_heartbeat_{false};
  // Ranks whose heartbeat did not move over ~1.5 s (empty if the store is unreachable).
  std::vector<int64_t> silent_ranks();
};

// The Transport over a c10d process group: tagged send/recv of one tensor per message. Worker w
// of ring r is global rank r * (K-1) + w. Sends are asynchronous; a message sent in tick s is
// received in the peer's tick s or s+1, so begin_tick(t) may wait for the sends of ticks before
// t-1 without deadlock, and flush() (after a drain, when nothing is in flight) for all. Receives
// and send completions wait at most the context's timeout.
class C10dTransport : public Transport {
 public:
  C10dTransport(DistContext& ctx);
  ~C10dTransport() override;
  int64_t rank() const override { return ctx_.worker(); }
  void send(int64_t dst, const MessageKey& key, const torch::Tensor& t) override;
  torch::Tensor recv(int64_t src, const MessageKey& key, at::IntArrayRef shape) override;
  void abort(const std::string& why) override;
  void begin_tick(int64_t tick) override;
  void flush() override;
  // Gloo tags are 32-bit; batches wrap, which is safe because at most K batches are in flight.
  static int gloo_tag(const MessageKey& key);

 private:
  struct Pending;
  void wait_sends(int64_t before_tick);
  DistContext& ctx_;
  int64_t tick_ = 0;
  std::vector<std::unique_ptr<Pending>> pending_;
  std::string aborted_;
};

// What one process's transport did, reported by rank 0 at the end of a run.
struct RankStats {
  int64_t messages = 0, bytes = 0, ticks = 0;
  double wait_s = 0.0, allreduce_s = 0.0;
};

// The engine as one worker process: this rank's Worker, the c10d transport, and (R > 1) the
// gradient average across rings before each update. Rank 0's params() / optimizer_state() /
// generator_states() gather the other workers' parts of ring 0 (published through the store at
// the end of every run() and drain()).
class DistributedEngine : public Method {
 public:
  DistributedEngine(const LanguageModel& model, ParamSet params, const Config& cfg, DistContext& ctx);
  ~DistributedEngine() override;

  void run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) override;
  void drain() override;
  void resume_at(int64_t tick) override;
  const ParamSet& params() const override;
  c10::impl::GenericDict optimizer_state() const override;
  void load_optimizer_state(const c10::impl::GenericDict& d) override;
  std::vector<Tensor> generator_states() const override;
  void set_generator_states(const std::vector<Tensor>& s) override;

  const Plan& plan() const { return plan_; }
  const Transport& transport() const { return *transport_; }
  // Seconds spent in the gradient all-reduce (R > 1).
  double allreduce_seconds() const { return allreduce_ns_ * 1e-9; }
  // Filled in when the engine is destroyed.
  void set_stats_sink(RankStats* sink) { sink_ = sink; }

 private:
  void run_ticks(int64_t first, int64_t count, bool drain, int64_t horizon, const BatchFn* batch,
                 const LossFn* on_loss);
  void average_gradients(const ParamSet& params);
  void end_job();
  void gather() const;

  const LanguageModel& model_;
  Config cfg_;
  DistContext& ctx_;
  ParamSet params_;
  Plan plan_;
  std::unique_ptr<C10dTransport> transport_;
  std::unique_ptr<Worker> worker_;
  int64_t next_tick_ = 0;
  int64_t pipeline_start_ = 0;
  int64_t jobs_ = 0;  // run() and drain() calls so far: the sequence number of published states
  int64_t allreduce_ns_ = 0;
  int64_t ticks_run_ = 0;
  RankStats* sink_ = nullptr;
  // Rank 0: the other workers' state as of gathered_ (mutable: gathered lazily by the getters).
  mutable int64_t gathered_ = 0;
  mutable c10::impl::GenericDict peer_optimizer_{c10::StringType::get(), c10::AnyType::get()};
  mutable std::vector<Tensor> peer_generators_;
};

// One rank of `ouroboros train` in a process group: rank 0 runs the whole training loop (train())
// with a DistributedEngine; the others run the same ticks without reading the corpus (except
// other rings' worker 0, which reads its shard). Returns rank 0's result (empty elsewhere).
TrainResult train_distributed(const Config& cfg, const TrainOptions& opts, const DistEnv& env);

// `ouroboros launch`: starts nproc local copies of this program with the rank variables set,
// forwards SIGINT/SIGTERM to them, and stops the others when one fails. Returns the exit code.
struct LaunchOptions {
  int64_t nproc = 1;
  int64_t nnodes = 1;
  int64_t node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  std::string program;             // the executable to start ("" = this one)
  std::vector<std::string> args;   // its arguments (e.g. train --modules 3 ...)
};
int launch(const LaunchOptions& opts);

}  // namespace ouroboros
