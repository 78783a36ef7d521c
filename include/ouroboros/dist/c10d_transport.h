// The Transport between processes: tagged tensor messages over a c10d process group.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/dist/context.h"
#include "ouroboros/engine/transport.h"

namespace ouroboros {
namespace dist_detail {
class SendsInFlight;
}  // namespace dist_detail

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
  void wait_sends(int64_t before_tick);
  DistContext& ctx_;
  int64_t tick_ = 0;
  std::unique_ptr<dist_detail::SendsInFlight> sends_;
  std::string aborted_;
};

}  // namespace ouroboros
