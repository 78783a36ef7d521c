// Batching for segment recurrence (Transformer-XL): a token sequence cut into B parallel streams,
// read segment after segment, so that row b of every batch continues row b of the batch before
// and a model's memory of the previous segment is the true preceding text.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace ouroboros {

// Stream b is tokens[b n, b n + n] with n = (N - 1) / B (inputs and their next tokens); the
// trailing N - 1 - B n tokens are not used.
int64_t stream_length(int64_t num_tokens, int64_t batch_size);
// Positions [start, start + len) of every stream: x, y [B, len] int64.
std::pair<torch::Tensor, torch::Tensor> stream_segment(const std::vector<int32_t>& tokens,
                                                       int64_t batch_size, int64_t start,
                                                       int64_t len);

// Training segments s = 0, 1, ... cover positions [s T, s T + T) of each stream (full segments
// only); after the last one the streams start over (a new epoch; memories carry on across the
// seam as across a document boundary). The state is the number of segments drawn.
class StreamSampler {
 public:
  // Throws DataError when a stream is shorter than one segment.
  StreamSampler(const std::vector<int32_t>& tokens, int64_t tgt_len, int64_t batch_size);
  std::pair<torch::Tensor, torch::Tensor> next();
  int64_t segments_per_epoch() const { return segments_; }
  uint64_t state() const { return drawn_; }
  void set_state(uint64_t s) { drawn_ = s; }

 private:
  const std::vector<int32_t>& tokens_;
  int64_t tgt_len_, batch_size_, segments_;
  uint64_t drawn_ = 0;
};

}  // namespace ouroboros
