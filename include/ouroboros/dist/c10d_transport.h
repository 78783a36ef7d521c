// The Transport between processes: tagged tensor messages over a c10d process group.
#pragma once

#include <cstdint>

#include <torch/torch.h>

#include "ouroboros/dist/context.h"
#include "ouroboros/dist/process_transport.h"

namespace ouroboros {

// The Transport over a c10d process group: tagged send/recv of one tensor per message. Worker w
// of ring r is global rank r * (K-1) + w. Sends are asynchronous (ProcessTransport); receives and
// send completions wait at most the context's timeout.
class C10dTransport : public ProcessTransport {
 public:
  explicit C10dTransport(DistContext& ctx);
  ~C10dTransport() override;
  void send(int64_t dst, const MessageKey& key, const torch::Tensor& t) override;
  torch::Tensor recv(int64_t src, const MessageKey& key, at::IntArrayRef shape) override;
  // Gloo tags are 32-bit; batches wrap, which is safe because at most K batches are in flight.
  static int gloo_tag(const MessageKey& key);
};

}  // namespace ouroboros
