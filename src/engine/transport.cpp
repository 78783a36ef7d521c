// In-process transport: worker threads hand tensors over through one locked table.
#include "ouroboros/engine/transport.h"

#include <chrono>

#include "ouroboros/core/errors.h"

namespace ouroboros {

std::string MessageKey::to_string() const {
  return std::string(error ? "E" : "A") + std::to_string(boundary) + "(" + std::to_string(batch) +
         ")" + (micro > 0 ? "[" + std::to_string(micro) + "]" : "");
}

namespace {

class InProcessTransport : public Transport {
 public:
  InProcessTransport(InProcessHub& hub, int64_t rank) : hub_(hub), rank_(rank) {}
  int64_t rank() const override { return rank_; }
  void send(int64_t dst, const MessageKey& key, const torch::Tensor& t) override {
    stats_.messages += 1;
    stats_.bytes += static_cast<int64_t>(t.numel() * t.element_size());
    hub_.put(rank_, dst, key.tag(), t);
  }
  torch::Tensor recv(int64_t src, const MessageKey& key, at::IntArrayRef) override {
    auto start = std::chrono::steady_clock::now();
    torch::Tensor t = hub_.take(src, rank_, key);
    stats_.wait_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now() - start)
                          .count();
    return t;
  }
  void abort(const std::string& why) override { hub_.abort(why); }

 private:
  InProcessHub& hub_;
  int64_t rank_;
};

}  // namespace

std::unique_ptr<Transport> InProcessHub::endpoint(int64_t rank) {
  return std::make_unique<InProcessTransport>(*this, rank);
}

void InProcessHub::put(int64_t src, int64_t dst, int64_t tag, torch::Tensor t) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    box_[{src, dst, tag}] = std::move(t);
  }
  cv_.notify_all();
}

torch::Tensor InProcessHub::take(int64_t src, int64_t dst, const MessageKey& key) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto id = std::make_tuple(src, dst, key.tag());
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  while (true) {
    if (!aborted_.empty()) throw TransportError(aborted_);
    auto it = box_.find(id);
    if (it != box_.end()) {
      torch::Tensor t = std::move(it->second);
      box_.erase(it);
      return t;
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      throw TransportError("worker " + std::to_string(dst) + " waited " +
                               std::to_string(static_cast<int>(timeout_s_)) + " s for " +
                               key.to_string() + " from worker " + std::to_string(src),
                           "a peer is stuck or dead");
    }
  }
}

void InProcessHub::abort(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_.empty()) aborted_ = why;
  }
  cv_.notify_all();
}

size_t InProcessHub::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return box_.size();
}

}  // namespace ouroboros
