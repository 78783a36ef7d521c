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
  if (end_block - first_block > 64) {
    // Deep models: prefix sums, so the cut search's many module costs are O(1) each.
    if (prefix_.size() != block_forward.size() + 1) {
      prefix_.assign(1, 0.0);
      for (double b : block_forward) prefix_.push_back(prefix_.back() + b);
    }
    sum = prefix_[static_cast<size_t>(end_block)] - prefix_[static_cast<size_t>(first_block)];
  } else {
    for (int64_t i = first_block; i < end_block; ++i) sum += block_forward[i];
  }
  if (embed) sum += embed_forward;
  if (head) sum += head_forward;
  return sum;
}

LinkTraffic link_traffic(int64_t params, int64_t B, int64_t T, int64_t C, int64_t replicas) {
  if (replicas < 1) throw PlanError("replicas must be >= 1, got " + str(replicas));
  LinkTraffic t;
  t.ouroboros_bytes = 2.0 * static_cast<double>(B * T * C) * 4.0;
  const double R = static_cast<double>(replicas);
  t.allreduce_bytes = 2.0 * (R - 1.0) / R * static_cast<double>(params) * 4.0;
  t.allreduce_rounds = 2 * (replicas - 1);
  return t;
}

}  // namespace ouroboros
