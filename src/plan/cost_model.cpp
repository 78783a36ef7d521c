// The cost of a module: the sum of its pieces' forward costs.
#include "ouroboros/plan/cost_model.h"

#include <string>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {
std::string str(int64_t v) { return std::to_string(v); }
}  // namespace

double CostModel::module_forward(int64_t first_block, int64_t end_block, bool embed,
                                 bool head) const {
  const int64_t n = static_cast<int64_t>(block_forward.size());
  if (first_block < 0 || first_block > end_block || end_block > n)
    throw PlanError("blocks [" + str(first_block) + "," + str(end_block) +
                        ") are outside the cost model's " + str(n) + " blocks",
                    "build the cost model for the partition's n_layer");
  double sum = 0.0;
  for (int64_t i = first_block; i < end_block; ++i) sum += block_forward[i];
  if (embed) sum += embed_forward;
  if (head) sum += head_forward;
  return sum;
}

}  // namespace ouroboros
