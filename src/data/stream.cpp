// Parallel streams for recurrent models: training segments and evaluation segments.
#include "ouroboros/data/stream.h"

#include <string>

#include "ouroboros/core/errors.h"

namespace ouroboros {

int64_t stream_length(int64_t num_tokens, int64_t batch_size) {
  return num_tokens > 1 ? (num_tokens - 1) / batch_size : 0;
}

std::pair<torch::Tensor, torch::Tensor> stream_segment(const std::vector<int32_t>& tokens,
                                                       int64_t batch_size, int64_t start,
                                                       int64_t len) {
  const int64_t n = stream_length(static_cast<int64_t>(tokens.size()), batch_size);
  if (start < 0 || start + len > n) throw Error("stream segment out of range");
  torch::Tensor x = torch::empty({batch_size, len}, torch::kInt64);
  torch::Tensor y = torch::empty({batch_size, len}, torch::kInt64);
  auto xa = x.accessor<int64_t, 2>();
  auto ya = y.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch_size; ++b) {
    const int32_t* s = tokens.data() + b * n + start;
    for (int64_t i = 0; i < len; ++i) {
      xa[b][i] = s[i];
      ya[b][i] = s[i + 1];
    }
  }
  return {x, y};
}

StreamSampler::StreamSampler(const std::vector<int32_t>& tokens, int64_t tgt_len,
                             int64_t batch_size)
    : tokens_(tokens), tgt_len_(tgt_len), batch_size_(batch_size) {
  const int64_t n = stream_length(static_cast<int64_t>(tokens.size()), batch_size);
  segments_ = n / tgt_len;
  if (segments_ == 0) {
    throw DataError("training split of " + std::to_string(tokens.size()) + " tokens cut into " +
                        std::to_string(batch_size) + " streams is shorter than one segment of " +
                        std::to_string(tgt_len) + " tokens",
                    "use more text, a smaller --batch-size or a smaller --block-size");
  }
}

std::pair<torch::Tensor, torch::Tensor> StreamSampler::next() {
  const int64_t s = static_cast<int64_t>(drawn_ % static_cast<uint64_t>(segments_));
  ++drawn_;
  return stream_segment(tokens_, batch_size_, s * tgt_len_, tgt_len_);
}

}  // namespace ouroboros
