// Evaluation: mean cross-entropy of a model over a token split, as windows (GPT) or as parallel
// streams walked segment after segment with memories (recurrent models).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ouroboros/data/tokenizer.h"
#include "ouroboros/model/language_model.h"

namespace ouroboros {

struct EvalResult {
  double loss = 0.0;   // mean cross-entropy in nats over all targets
  int64_t tokens = 0;  // number of targets
  // UTF-8 bytes of text per token of the evaluated split (bytes_per_token below); 0 = not known.
  double bytes_per_token = 0.0;
  double bpc() const;  // bits per character (byte/char data)
  double perplexity() const;
  // Bits per byte of text: comparable across tokenizers. NaN when bytes_per_token is unknown.
  double bpb() const;
  // "loss 1.2345 | bpc 1.7810 | bpb 1.7302" for character-level vocabularies, "loss ... | ppl
  // 12.34 | bpb ..." otherwise (bpb only when known); the JSON holds the same figures.
  std::string summary(bool chars) const;
  nlohmann::json to_json(bool chars) const;
};

// The length in bytes of a split's decoded text over its number of tokens. Word vocabularies
// decode with single spaces and <unk> as its five letters, so this is close to, not exactly,
// the source text's size.
double bytes_per_token(const Tokenizer& tok, const std::vector<int32_t>& tokens);

// Mean cross-entropy over the evaluation windows of tokens (data/dataset.h); max_windows = 0 for
// all. A recurrent model is evaluated on batch_size streams instead (data/stream.h), in segments
// of its evaluation lengths; max_windows then limits the targets to about that many segments'
// worth.
EvalResult evaluate(const LanguageModel& model, const ParamSet& params,
                    const std::vector<int32_t>& tokens, int64_t batch_size,
                    int64_t max_windows = 0);

// The summed cross-entropy of one evaluation batch (x, y: [n, T]) under ctx (its memories, for a
// recurrent model). evaluate() uses the model's loss_sum on the given weights; processes pass
// their ring's (train/method.h: Method::ring_loss_sum), so the same loop serves both.
using LossSumFn = std::function<Tensor(const Tensor& x, const Tensor& y, ForwardContext& ctx)>;
EvalResult evaluate(const LanguageModel& model, const LossSumFn& loss_sum,
                    const std::vector<int32_t>& tokens, int64_t batch_size,
                    int64_t max_windows = 0);

// Evaluation of a recurrent model: B streams walked in segments of tgt_len (the last one
// shorter) with a fresh memory at the start and the given lengths. Returns the summed
// cross-entropy in nats and the number of targets (B n, or fewer with max_segments > 0).
std::pair<double, int64_t> evaluate_streams(const LossSumFn& loss_sum,
                                            const std::vector<int32_t>& tokens, int64_t batch_size,
                                            int64_t tgt_len, const RecurrenceLengths& lengths,
                                            int64_t max_segments = 0);

}  // namespace ouroboros
