// The c10d transport: asynchronous tagged sends and timed receives over the world's Gloo group.
#include "ouroboros/dist/c10d_transport.h"

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <chrono>
#include <exception>
#include <limits>

#include "dist_detail.h"
#include "ouroboros/core/errors.h"

namespace ouroboros {

using namespace dist_detail;

void dist_detail::SendsInFlight::add(int64_t tick, int64_t peer,
                                     c10::intrusive_ptr<c10d::Work> work,
                                     std::vector<at::Tensor> keep) {
  pending_.push_back(Pending{tick, peer, std::move(work), std::move(keep)});
}

int64_t dist_detail::SendsInFlight::wait(int64_t before_tick) {
  const auto start = std::chrono::steady_clock::now();
  while (!pending_.empty() && pending_.front().tick < before_tick) {
    try {
      pending_.front().work->wait(ctx_.wait_limit());
    } catch (const std::exception& e) {
      if (on_lost_) on_lost_();
      throw TransportError(ctx_.lost_peer(pending_.front().peer, e.what()), ctx_.resume_hint());
    }
    pending_.pop_front();
  }
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                              start)
      .count();
}

dist_detail::SendsInFlight::~SendsInFlight() {
  if (pending_.empty() || abandoned_ || std::uncaught_exceptions() > 0) return;
  try {
    wait(std::numeric_limits<int64_t>::max());
  } catch (const std::exception&) {
    // the peer was lost meanwhile; its own process reports that
  }
}

C10dTransport::C10dTransport(DistContext& ctx)
    : ctx_(ctx), sends_(std::make_unique<SendsInFlight>(ctx)) {}
C10dTransport::~C10dTransport() = default;

int C10dTransport::gloo_tag(const MessageKey& key) {
  return static_cast<int>(key.tag() & 0x7fffffff);
}

void C10dTransport::send(int64_t dst, const MessageKey& key, const torch::Tensor& t) {
  if (!aborted_.empty()) throw TransportError(aborted_);
  const int64_t peer = ctx_.ring() * ctx_.workers_per_ring() + dst;
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
  if (!aborted_.empty()) throw TransportError(aborted_);
  const int64_t peer = ctx_.ring() * ctx_.workers_per_ring() + src;
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

void C10dTransport::abort(const std::string& why) {
  if (aborted_.empty()) aborted_ = why;
  sends_->abandon();
}

void C10dTransport::wait_sends(int64_t before_tick) { stats_.wait_ns += sends_->wait(before_tick); }

void C10dTransport::begin_tick(int64_t tick) {
  tick_ = tick;
  wait_sends(tick - 1);
}

void C10dTransport::flush() { wait_sends(std::numeric_limits<int64_t>::max()); }

}  // namespace ouroboros
