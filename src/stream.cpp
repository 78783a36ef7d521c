// Parallel streams for recurrent models: training segments and the evaluation walk.
#include "ouroboros/stream.h"

#include <string>

#include "ouroboros/errors.h"

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

std::pair<double, int64_t> evaluate_streams(const LanguageModel& model, const ParamSet& params,
                                            const std::vector<int32_t>& tokens, int64_t batch_size,
                                            int64_t tgt_len, const RecurrenceLengths& lengths,
                                            int64_t max_segments) {
  torch::NoGradGuard no_grad;
  const int64_t n = stream_length(static_cast<int64_t>(tokens.size()), batch_size);
  if (n == 0) {
    throw DataError("evaluation split has " + std::to_string(tokens.size()) +
                        " tokens, too few for " + std::to_string(batch_size) + " streams",
                    "use more text or a smaller evaluation batch");
  }
  ForwardContext ctx;  // no dropout, empty memory
  ctx.lengths = lengths;
  double total = 0.0;
  int64_t count = 0, segments = 0;
  for (int64_t start = 0; start < n; start += tgt_len) {
    if (max_segments > 0 && segments == max_segments) break;
    const int64_t len = std::min(tgt_len, n - start);
    auto [x, y] = stream_segment(tokens, batch_size, start, len);
    total += model.loss_sum(params, x, y, ctx).item<double>();
    count += batch_size * len;
    ++segments;
  }
  return {total, count};
}

}  // namespace ouroboros
