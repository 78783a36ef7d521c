// The process group of a run across processes and machines: the TCPStore rendezvous, the Gloo
// groups, heartbeats, and failure handling that never hangs (docs/DISTRIBUTED.md).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/core/config.h"
#include "ouroboros/core/torch_compat.h"
#include "ouroboros/dist/env.h"
#include "ouroboros/dist/pair_transport.h"

namespace c10d {
class Store;
struct TCPStoreOptions;
}  // namespace c10d

namespace ouroboros {

// The process group of a run: store, the world's Gloo group, the group of the same worker in
// every ring (data parallelism), and with --backend nccl the NCCL groups.
class DistContext {
 public:
  // Connects to (rank 0: hosts) the TCPStore, refuses a configuration that differs from
  // rank 0's, and builds the process groups. Throws ConfigError / TransportError.
  DistContext(const DistEnv& env, const Config& cfg);
  ~DistContext();

  const DistEnv& env() const { return env_; }
  int64_t rank() const { return env_.rank; }
  int64_t world_size() const { return env_.world_size; }
  int64_t workers_per_ring() const { return workers_; }
  int64_t ring() const { return env_.rank / workers_; }
  int64_t worker() const { return env_.rank % workers_; }
  int64_t replicas() const { return replicas_; }
  // Rank 0 (worker 0 of ring 0) reads the corpus, logs, evaluates and writes checkpoints.
  bool is_lead() const { return env_.rank == 0; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  // How long a transport operation waits on a peer before the loss is checked and reported, so
  // that the whole detection takes about --timeout.
  std::chrono::milliseconds wait_limit() const;
  // The hint of a lost-peer line: resume from the checkpoint if one was written, else restart.
  std::string resume_hint() const;

  c10d::Store& store() { return *store_; }
  CommGroup& world() { return *world_; }
  CommGroup* replica_group() { return replica_group_.get(); }
  // Where this process trains (train.device, processes on cuda:LOCAL_RANK).
  const c10::Device& device() const { return device_; }
  // "gloo" or "nccl": dist.backend resolved for this process's device. Every rank checks that the
  // others resolved it alike.
  Backend backend() const { return backend_; }
  // The NCCL groups (null with Gloo): the pipeline's messages and the gradient all-reduce go
  // through them.
  PairGroups* nccl() { return nccl_.get(); }
  // A new Gloo group of `size` ranks in which this process is `rank`, named apart in the store.
  c10::intrusive_ptr<CommGroup> gloo_group(const std::string& name, int64_t rank, int64_t size);

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
  // The same for text values.
  void set_text(const std::string& key, const std::string& value);
  std::string get_text(const std::string& key, std::chrono::milliseconds timeout,
                       int64_t writer = -1);
  // How long ranks other than 0 wait for rank 0 between jobs (it may be evaluating or writing a
  // checkpoint).
  static std::chrono::milliseconds between_jobs();
  // Job n (the n-th run or drain of a method, counted alike on every rank): rank 0 opens it, the
  // others wait for that as long as rank 0 lives.
  void open_job(int64_t n);
  // Every rank calls it once at the end; rank 0 returns when all others have.
  void finish();

 private:
  c10d::TCPStoreOptions store_options(bool server) const;
  void open_store();
  void check_fingerprints(const Config& cfg);
  void start_heartbeat();

  DistEnv env_;
  int64_t workers_ = 1, replicas_ = 1;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<CommGroup> world_;
  c10::intrusive_ptr<CommGroup> replica_group_;
  // Every rank bumps its heartbeat counter in the store twice a second (own store client), so a
  // timeout can tell the frozen rank from the ranks merely waiting on it.
  c10::intrusive_ptr<c10d::Store> heartbeat_store_;
  std::thread heartbeat_;
  std::shared_ptr<std::atomic<bool>> stop_heartbeat_ = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<std::atomic<bool>> heartbeat_done_ = std::make_shared<std::atomic<bool>>(false);
  std::string checkpoint_;  // <out_dir>/ckpt.pt, for the hint of a lost-peer line
  c10::Device device_ = c10::Device(c10::kCPU);
  Backend backend_ = Backend::kGloo;
  // Store operations that give up after `limit` (a frozen rank 0 never answers).
  bool store_check(const std::string& key, std::chrono::milliseconds limit);
  std::vector<uint8_t> store_get(const std::string& key, std::chrono::milliseconds limit);
  int64_t store_add(const std::string& key, int64_t n, std::chrono::milliseconds limit);
  void store_set(const std::string& key, const std::vector<uint8_t>& value,
                 std::chrono::milliseconds limit);
  template <typename F>
  auto on_store(F op, std::chrono::milliseconds limit) -> decltype(op());
  std::atomic<bool> store_lost_{false};
  // For the reports of a failure, which must not wait a whole timeout on a lost store.
  std::chrono::milliseconds short_limit() const {
    return std::min(timeout_, std::chrono::milliseconds(2000));
  }
  // Ranks whose heartbeat did not move over ~1.5 s (empty if the store is unreachable).
  std::vector<int64_t> silent_ranks();
  // Last, so its groups close before the store they were made over goes.
  std::unique_ptr<PairGroups> nccl_;
};

// dist.backend for a process on `device`: auto = nccl on a GPU where the build has it, else
// gloo. Throws ConfigError for nccl without NCCL or on the CPU.
Backend resolve_backend(Backend backend, const c10::Device& device);

}  // namespace ouroboros
