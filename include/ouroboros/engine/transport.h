// Moving activations and error signals between workers. One interface: in-process channels for
// worker threads now, c10d process groups for worker processes. Messages are tagged by kind,
// boundary and batch, so a receive names exactly the message it wants.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include <torch/torch.h>

namespace ouroboros {

// A message: activation A_b or error E_b of one batch, or of one of its micro-batches.
struct MessageKey {
  bool error = false;
  int64_t boundary = 0;  // 1 <= b <= K-1
  int64_t batch = 0;
  int64_t micro = 0;  // 0: the whole batch; 1..M: a micro-batch (M <= kMaxTaggedMicroBatches)
  int64_t tag() const { return (((batch << 12) | micro) << 8) | (boundary << 1) | (error ? 1 : 0); }
  std::string to_string() const;  // "A1(3)", "E2(4)[2]"
};
// The most micro-batches a message tag tells apart.
constexpr int64_t kMaxTaggedMicroBatches = (1 << 12) - 1;

struct TransportStats {
  std::atomic<int64_t> messages{0};
  std::atomic<int64_t> bytes{0};
  std::atomic<int64_t> wait_ns{0};  // time spent blocked in recv
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int64_t rank() const = 0;
  virtual void send(int64_t dst, const MessageKey& key, const torch::Tensor& t) = 0;
  // Blocks until the message arrives; shape and dtype let a process-group transport allocate.
  virtual torch::Tensor recv(int64_t src, const MessageKey& key, at::IntArrayRef shape) = 0;
  // Wakes every blocked receive with a TransportError carrying why (a peer failed).
  virtual void abort(const std::string& why) = 0;
  // Tick boundaries, for transports whose sends complete asynchronously: begin_tick may wait for
  // sends of earlier ticks, flush waits for every send. No-ops in process.
  virtual void begin_tick(int64_t tick) { (void)tick; }
  virtual void flush() {}
  const TransportStats& stats() const { return stats_; }

 protected:
  TransportStats stats_;
};

// Channels between threads of one process: a shared table of undelivered messages.
class InProcessHub {
 public:
  explicit InProcessHub(double timeout_s = 600.0) : timeout_s_(timeout_s) {}
  std::unique_ptr<Transport> endpoint(int64_t rank);
  void put(int64_t src, int64_t dst, int64_t tag, torch::Tensor t);
  torch::Tensor take(int64_t src, int64_t dst, const MessageKey& key);
  void abort(const std::string& why);
  // Messages sent but never received (0 after a clean run).
  size_t pending() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, torch::Tensor> box_;
  std::string aborted_;
  double timeout_s_;
};

}  // namespace ouroboros
