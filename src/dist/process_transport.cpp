// What the transports between processes share: the sends in flight, waited for a tick late, and
// the abort.
#include "ouroboros/dist/process_transport.h"

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <chrono>
#include <exception>
#include <limits>

#include "dist_detail.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/dist/context.h"

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

ProcessTransport::ProcessTransport(DistContext& ctx, std::function<void()> on_lost)
    : ctx_(ctx), sends_(std::make_unique<SendsInFlight>(ctx, on_lost)), on_lost_(on_lost) {}

ProcessTransport::~ProcessTransport() = default;

int64_t ProcessTransport::rank() const { return ctx_.worker(); }

int64_t ProcessTransport::global_rank(int64_t w) const {
  return ctx_.ring() * ctx_.workers_per_ring() + w;
}

void ProcessTransport::check_not_aborted() const {
  if (!aborted_.empty()) throw TransportError(aborted_);
}

void ProcessTransport::abort(const std::string& why) {
  if (aborted_.empty()) aborted_ = why;
  sends_->abandon();
  if (on_lost_) on_lost_();
}

void ProcessTransport::wait_sends(int64_t before_tick) {
  stats_.wait_ns += sends_->wait(before_tick);
}

void ProcessTransport::begin_tick(int64_t tick) {
  tick_ = tick;
  wait_sends(tick - 1);
}

void ProcessTransport::release_sends() { sends_->abandon(); }

void ProcessTransport::flush() { wait_sends(std::numeric_limits<int64_t>::max()); }

}  // namespace ouroboros
