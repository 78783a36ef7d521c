// Small helpers shared by the dist/ sources (not part of the public API).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace ouroboros::dist_detail {

using Millis = std::chrono::milliseconds;

// Ranks other than 0 wait this long for rank 0 between jobs (it may be evaluating or writing a
// checkpoint); a dead rank 0 is still noticed at once, as it hosts the store.
inline const Millis kBetweenJobs = std::chrono::hours(24);

inline std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

inline std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
inline std::string string_of(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

}  // namespace ouroboros::dist_detail

namespace ouroboros {
class DistContext;
namespace dist_detail {

// The sends a transport has in flight, by tick. A message sent in tick s is received in the
// peer's tick s or s+1, so a transport may wait at the start of tick t for the sends of ticks
// before t-1 without deadlock, and for all of them after a drain.
class SendsInFlight {
 public:
  // `on_lost` runs when a send fails (before wait throws, and in the destructor).
  explicit SendsInFlight(DistContext& ctx, std::function<void()> on_lost = {})
      : ctx_(ctx), on_lost_(std::move(on_lost)) {}
  // `keep` holds tensors the send reads until it completes.
  void add(int64_t tick, int64_t peer, c10::intrusive_ptr<c10d::Work> work,
           std::vector<at::Tensor> keep = {});
  // Waits for every send of a tick before `before_tick`, each at most the context's wait limit;
  // returns the nanoseconds waited. Throws TransportError naming the lost peer.
  int64_t wait(int64_t before_tick);
  // The run was aborted: the peers are gone or going, so the destructor does not wait for them.
  void abandon() { abandoned_ = true; }
  // Sends still in flight complete first: Gloo cancels a send whose work is released, and the
  // peer would wait for it in vain (a method destroyed right after run(), while its last
  // messages are on the way). Not while unwinding or once abandoned.
  ~SendsInFlight();

 private:
  struct Pending {
    int64_t tick;
    int64_t peer;
    c10::intrusive_ptr<c10d::Work> work;
    std::vector<at::Tensor> keep;
  };
  DistContext& ctx_;
  std::function<void()> on_lost_;
  std::deque<Pending> pending_;
  bool abandoned_ = false;
};

}  // namespace dist_detail
}  // namespace ouroboros
