// What the transports between processes share (C10dTransport, PairTransport): sends complete
// asynchronously and are waited for a tick late or all at once, and an abort ends every call.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "ouroboros/engine/transport.h"

namespace ouroboros {

class DistContext;  // context.h includes the transports
namespace dist_detail {
class SendsInFlight;
}  // namespace dist_detail

// A message sent in tick s is received in the peer's tick s or s+1, so begin_tick(t) may wait
// for the sends of ticks before t-1 without deadlock, and flush() (after a drain, when nothing is
// in flight) for all. After abort() every send and receive throws the abort's reason, and the
// sends in flight are abandoned rather than waited for.
class ProcessTransport : public Transport {
 public:
  ~ProcessTransport() override;  // waits for the sends in flight (SendsInFlight)
  int64_t rank() const override;
  void abort(const std::string& why) override;
  void begin_tick(int64_t tick) override;
  void flush() override;
  // The sends still on their way are dropped rather than waited for when the transport goes:
  // their receivers stopped, and a checkpoint holds the messages to send again.
  void release_sends();

 protected:
  // `on_lost` runs when a send fails and on abort() (PairTransport aborts its groups there).
  explicit ProcessTransport(DistContext& ctx, std::function<void()> on_lost = {});
  // Throws TransportError with the abort's reason once aborted.
  void check_not_aborted() const;
  // The global rank of worker `w` of this process's ring.
  int64_t global_rank(int64_t w) const;

  DistContext& ctx_;
  int64_t tick_ = 0;  // the tick of the sends made now
  std::unique_ptr<dist_detail::SendsInFlight> sends_;

 private:
  void wait_sends(int64_t before_tick);
  std::function<void()> on_lost_;
  std::string aborted_;
};

}  // namespace ouroboros
