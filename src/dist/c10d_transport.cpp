// The c10d transport: asynchronous tagged sends and timed receives over the world's Gloo group.
#include "ouroboros/dist/c10d_transport.h"

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <chrono>

#include "dist_detail.h"
#include "ouroboros/core/errors.h"

namespace ouroboros {

using namespace dist_detail;

C10dTransport::C10dTransport(DistContext& ctx) : ProcessTransport(ctx) {}
C10dTransport::~C10dTransport() = default;

int C10dTransport::gloo_tag(const MessageKey& key) {
  return static_cast<int>(key.tag() & 0x7fffffff);
}

void C10dTransport::send(int64_t dst, const MessageKey& key, const torch::Tensor& t) {
  check_not_aborted();
  const int64_t peer = global_rank(dst);
  // Gloo sends host memory: a GPU tensor goes through a CPU copy (the receiver's model moves
  // it back to its device).
  std::vector<at::Tensor> v{t.cpu().contiguous()};
  stats_.messages += 1;
  stats_.bytes += static_cast<int64_t>(t.numel() * t.element_size());
  try {
    auto work = ctx_.world().send(v, static_cast<int>(peer), gloo_tag(key));
    sends_->add(tick_, peer, work);
  } catch (const std::exception& e) {
    throw TransportError(ctx_.lost_peer(peer, e.what()), ctx_.resume_hint());
  }
}

torch::Tensor C10dTransport::recv(int64_t src, const MessageKey& key, at::IntArrayRef shape) {
  check_not_aborted();
  const int64_t peer = global_rank(src);
  const auto start = std::chrono::steady_clock::now();
  torch::Tensor t = torch::empty(shape);
  std::vector<at::Tensor> v{t};
  try {
    ctx_.world().recv(v, static_cast<int>(peer), gloo_tag(key))->wait(ctx_.wait_limit());
  } catch (const std::exception& e) {
    throw TransportError(ctx_.lost_peer(peer, "waiting for " + key.to_string() + ": " + e.what()),
                         ctx_.resume_hint());
  }
  stats_.wait_ns +=
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count();
  return t;
}

}  // namespace ouroboros
