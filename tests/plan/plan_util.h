// Helpers of the plan tests: the GPT model's analytic costs for a shape, as the planner gets them.
#pragma once

#include <cstdint>

#include "ouroboros/model/gpt.h"
#include "ouroboros/plan/cost_model.h"

namespace ouroboros_test {

// GPT's cost model (one head per 64 channels assumed) for L blocks, width C, T tokens, V symbols
// and batches of B.
inline ouroboros::CostModel gpt_cost_model(int64_t L, int64_t C, int64_t T, int64_t V, int64_t B) {
  ouroboros::ModelConfig m;
  m.n_layer = L;
  m.n_embd = C;
  m.n_head = 1;
  m.block_size = T;
  m.vocab_size = V;
  return ouroboros::GPT(m).cost_model(B);
}

}  // namespace ouroboros_test
