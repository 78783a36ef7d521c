// The Transport over one process group per directed pair of ranks, for backends without tags:
// NCCL between processes on GPUs (--backend nccl). Every message is a header (tag, dtype, shape)
// then its payload, received in the order the peer sent them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/core/torch_compat.h"
#include "ouroboros/dist/process_transport.h"
#include "ouroboros/engine/transport.h"

namespace c10d {
class Store;
}  // namespace c10d

namespace ouroboros {

class DistContext;

// Whether this build has NCCL (a CUDA libtorch 2.x with c10d's ProcessGroupNCCL).
bool nccl_built();

// How a run's groups are made and closed: NCCL's (nccl_groups) or, for tests on the CPU, Gloo's.
struct GroupMaker {
  // A group of `size` ranks in which this process is `rank`; `name` keeps groups apart in the
  // store.
  std::function<c10::intrusive_ptr<CommGroup>(const std::string& name, int64_t rank, int64_t size)>
      make;
  // Called for every group at the end: shut it down, or abort it when a peer was lost.
  std::function<void(CommGroup& group, bool aborted)> close;
  c10::Device device = c10::Device(c10::kCPU);  // where the groups' tensors live
  std::chrono::milliseconds timeout{60000};     // for connecting
};

// NCCL groups over the run's store for tensors on `device`, with the run's timeout for NCCL's
// watchdog. Throws ConfigError where !nccl_built().
GroupMaker nccl_groups(c10::intrusive_ptr<c10d::Store> store, const c10::Device& device,
                       std::chrono::milliseconds timeout);

// The groups a rank takes part in: the directed pairs between neighbours of its ring, and the
// group of its worker in every ring when there are several.
struct GroupLayout {
  std::vector<std::pair<int64_t, int64_t>> pairs;  // (src, dst) global ranks, sorted
  int64_t worker = 0, ring = 0, rings = 1;
};
// Ring r's workers are ranks r*workers .. r*workers + workers - 1; messages go between
// neighbours, both ways (Ouroboros, GPipe and evaluation all stay on them).
GroupLayout ring_layout(int64_t rank, int64_t workers, int64_t rings);

// The groups of one process. A directed pair's group has two ranks, the sender as 0, so each
// direction has its own communicator: NCCL runs a communicator's operations in order and a send
// waits for its receive, so messages one way never queue behind the other's. Connecting is a
// blocking rendezvous of a group's members (NCCL's at its first operation, Gloo's when made), so
// every group is connected up front, with one message, in the layout's order on every rank:
// that order is global, so the first unconnected pair always has both ranks waiting on it.
class PairGroups {
 public:
  PairGroups(GroupMaker maker, int64_t rank, const GroupLayout& layout);
  ~PairGroups();  // closes every group
  // The group of messages from global rank src to dst (this process is one of them).
  CommGroup& pair(int64_t src, int64_t dst);
  // The group of this worker in every ring (data parallelism's all-reduce).
  CommGroup& rings();
  // A peer was lost: the groups are aborted rather than shut down (their operations would never
  // complete).
  void mark_aborted() { aborted_ = true; }

 private:
  GroupMaker maker_;
  int64_t rank_;
  std::map<std::pair<int64_t, int64_t>, c10::intrusive_ptr<CommGroup>> pairs_;
  c10::intrusive_ptr<CommGroup> rings_;
  std::atomic<bool> aborted_{false};
};

// The Transport over PairGroups. The groups have no tags (NCCL ignores them): a receive takes the
// peer's next message on the pair's group. So each message goes as a fixed-size header (tag,
// dtype, shape) and its payload, and a receive reads the peer's messages in the order they were
// sent, keeping those asked for later. Both sides agree on the order by construction, whatever
// order the schedule asks in, and the tensors stay on their device. Send completion, timeouts
// and the lost-peer line are C10dTransport's.
class PairTransport : public ProcessTransport {
 public:
  PairTransport(DistContext& ctx, PairGroups& groups);
  ~PairTransport() override;  // waits for the sends in flight (SendsInFlight)
  void send(int64_t dst, const MessageKey& key, const torch::Tensor& t) override;
  torch::Tensor recv(int64_t src, const MessageKey& key, at::IntArrayRef shape) override;

  // A message's header: tag, dtype, number of dimensions, then up to kMaxDims sizes (int64).
  static constexpr int64_t kMaxDims = 8;
  static constexpr int64_t kHeaderLength = 3 + kMaxDims;
  static torch::Tensor header(int64_t tag, const torch::Tensor& t);
  struct Described {
    int64_t tag;
    at::ScalarType dtype;
    std::vector<int64_t> sizes;
  };
  // What a header (anywhere) describes; throws TransportError for one that is not a header.
  static Described describe(const torch::Tensor& header);

 private:
  // The peer's next message: its tag and payload.
  std::pair<int64_t, torch::Tensor> receive_next(int64_t peer, const MessageKey& wanted);
  [[noreturn]] void lost(int64_t peer, const std::string& what);
  PairGroups& groups_;
  std::map<int64_t, std::map<int64_t, torch::Tensor>> early_;  // peer -> tag -> payload
};

}  // namespace ouroboros
