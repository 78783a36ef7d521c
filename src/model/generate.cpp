// Autoregressive sampling with temperature and top-k.
#include "ouroboros/model/generate.h"

#include <limits>
#include <sstream>

#include "ouroboros/core/errors.h"

namespace ouroboros {

void validate(const SampleOptions& opts) {
  if (!(opts.temperature > 0.0 && opts.temperature <= 1e6)) {  // refuses nan and inf too
    std::ostringstream got;
    got << opts.temperature;
    throw ConfigError("temperature must be > 0 and at most 1e6, got " + got.str(),
                      "use e.g. --temperature 0.8 (lower is more conservative)");
  }
  if (opts.tokens < 0) throw ConfigError("tokens must be >= 0, got " + std::to_string(opts.tokens));
  if (opts.top_k < 0) {
    throw ConfigError("top_k must be >= 0, got " + std::to_string(opts.top_k),
                      "use --top-k 0 to sample among all tokens");
  }
}

std::string generate(const LanguageModel& model, const ParamSet& params, const Tokenizer& tok,
                     const SampleOptions& opts) {
  validate(opts);
  torch::NoGradGuard no_grad;
  std::vector<int32_t> ids = tok.encode(opts.prompt);
  if (opts.prompt.empty()) ids.push_back(0);  // an empty prompt starts from token 0
  at::Generator gen = make_generator(opts.seed);
  const int64_t T = model.max_context();
  for (int64_t i = 0; i < opts.tokens; ++i) {
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(ids.size()), T);
    std::vector<int64_t> window(ids.end() - n, ids.end());
    Tensor idx = torch::tensor(window, torch::kInt64).view({1, n});
    ForwardContext ctx;  // the whole window each time: no memory carried between tokens
    // Sampled on the CPU in float32, so a GPU run draws as the CPU would from the same scores.
    Tensor logits =
        model.output_logits(params, idx, ctx).select(1, n - 1)[0].to(at::kCPU, at::kFloat);
    logits = logits / opts.temperature;  // [V]
    // <unk> stands for text the vocabulary lacks: never sampled.
    if (tok.unk_id() >= 0) logits[tok.unk_id()] = -std::numeric_limits<float>::infinity();
    if (opts.top_k > 0 && opts.top_k < logits.size(0)) {
      Tensor kth = std::get<0>(logits.topk(opts.top_k)).select(0, opts.top_k - 1);
      logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
    }
    Tensor probs = at::softmax(logits, 0);
    ids.push_back(static_cast<int32_t>(at::multinomial(probs, 1, false, gen).item<int64_t>()));
  }
  std::vector<int32_t> out(opts.prompt.empty() ? ids.begin() + 1 : ids.begin(), ids.end());
  return tok.decode(out);
}

}  // namespace ouroboros
