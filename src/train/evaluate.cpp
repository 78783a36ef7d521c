// Evaluation over windows (GPT) or parallel streams with memories (recurrent models).
#include "ouroboros/train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>

#include "ouroboros/core/errors.h"
#include "ouroboros/data/dataset.h"
#include "ouroboros/data/stream.h"

namespace ouroboros {

std::pair<double, int64_t> evaluate_streams(const LossSumFn& loss_sum,
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
    total += loss_sum(x, y, ctx).item<double>();
    count += batch_size * len;
    ++segments;
  }
  return {total, count};
}

namespace {

EvalResult evaluate_recurrent(const LanguageModel& model, const LossSumFn& loss_sum,
                              const std::vector<int32_t>& tokens, int64_t batch_size,
                              int64_t max_windows) {
  const int64_t segments = max_windows > 0 ? std::max<int64_t>(1, max_windows / batch_size) : 0;
  auto [total, count] = evaluate_streams(loss_sum, tokens, batch_size, model.eval_segment_length(),
                                         model.eval_lengths(), segments);
  EvalResult r;
  r.tokens = count;
  r.loss = total / static_cast<double>(count);
  return r;
}

}  // namespace

double EvalResult::bpc() const { return loss / std::log(2.0); }
double EvalResult::perplexity() const { return std::exp(loss); }
double EvalResult::bpb() const {
  return bytes_per_token > 0 ? bpc() / bytes_per_token : std::numeric_limits<double>::quiet_NaN();
}

std::string EvalResult::summary(bool chars) const {
  std::ostringstream s;
  s << std::fixed << std::setprecision(4) << "loss " << loss;
  if (chars) {
    s << " | bpc " << bpc();
  } else {
    s << " | ppl " << std::setprecision(2) << perplexity();
  }
  if (bytes_per_token > 0) s << " | bpb " << std::setprecision(4) << bpb();
  return s.str();
}

nlohmann::json EvalResult::to_json(bool chars) const {
  nlohmann::json j = {{"loss", loss}, {"tokens", tokens}};
  if (chars) {
    j["bpc"] = bpc();
  } else {
    j["perplexity"] = perplexity();
  }
  if (bytes_per_token > 0) j["bpb"] = bpb();
  return j;
}

double bytes_per_token(const Tokenizer& tok, const std::vector<int32_t>& tokens) {
  if (tokens.empty()) return 0.0;
  return static_cast<double>(tok.decode(tokens).size()) / static_cast<double>(tokens.size());
}

EvalResult evaluate(const LanguageModel& model, const ParamSet& params,
                    const std::vector<int32_t>& tokens, int64_t batch_size, int64_t max_windows) {
  const LossSumFn loss_sum = [&](const Tensor& x, const Tensor& y, ForwardContext& ctx) {
    return model.loss_sum(params, x, y, ctx);
  };
  return evaluate(model, loss_sum, tokens, batch_size, max_windows);
}

EvalResult evaluate(const LanguageModel& model, const LossSumFn& loss_sum,
                    const std::vector<int32_t>& tokens, int64_t batch_size, int64_t max_windows) {
  torch::NoGradGuard no_grad;
  if (model.recurrent())
    return evaluate_recurrent(model, loss_sum, tokens, batch_size, max_windows);
  const int64_t T = model.config().block_size;
  int64_t windows = num_eval_windows(static_cast<int64_t>(tokens.size()), T);
  if (windows == 0) {
    throw DataError("evaluation split has " + std::to_string(tokens.size()) +
                        " tokens, fewer than one window of block_size+1 = " + std::to_string(T + 1),
                    "use more text or a smaller --block-size");
  }
  if (max_windows > 0) windows = std::min(windows, max_windows);
  ForwardContext ctx;  // evaluation: no dropout
  double total = 0.0;
  for (int64_t first = 0; first < windows; first += batch_size) {
    const int64_t n = std::min(batch_size, windows - first);
    auto [x, y] = eval_windows(tokens, T, first, n);
    total += loss_sum(x, y, ctx).item<double>();
  }
  EvalResult r;
  r.tokens = windows * T;
  r.loss = total / static_cast<double>(r.tokens);
  return r;
}

}  // namespace ouroboros
