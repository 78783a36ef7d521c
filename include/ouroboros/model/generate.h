// Sampling text from a trained model.
#pragma once

#include <cstdint>
#include <string>

#include "ouroboros/data/tokenizer.h"
#include "ouroboros/model/language_model.h"

namespace ouroboros {

struct SampleOptions {
  std::string prompt;
  int64_t tokens = 200;      // new tokens to generate
  double temperature = 0.8;  // > 0; logits are divided by it
  int64_t top_k = 0;         // keep the k most likely tokens; 0 = all
  uint64_t seed = 1;
};

// Returns the prompt followed by the generated text. The context is cropped to the model's
// max_context() (block_size for GPT).
// Throws ConfigError naming the first option out of range (temperature, tokens, top_k).
void validate(const SampleOptions& opts);
std::string generate(const LanguageModel& model, const ParamSet& params, const Tokenizer& tok,
                     const SampleOptions& opts);

}  // namespace ouroboros
