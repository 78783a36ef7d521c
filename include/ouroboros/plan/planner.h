// The planner: chooses the cut ("auto" searches it on the cost model by simulating the schedule)
// and builds the validated schedules of a run.
#pragma once

#include <cstdint>
#include <string>

#include "ouroboros/core/config.h"
#include "ouroboros/plan/cost_model.h"
#include "ouroboros/plan/partition.h"
#include "ouroboros/plan/schedule.h"

namespace ouroboros {

// spec: "even" (blocks spread evenly, remainder to the middle modules first), "auto" (minimise
// the estimated tick time of the Ouroboros schedule under `cost`), or "a1,a2,...".
// "auto" searches every valid cut when there are at most 20000, else runs coordinate descent
// from "even"; ties go to the smaller maximum per-worker forward cost, then the lexicographically
// smallest boundaries. With tolerance > 0, the cut with the fewest delayed block-ticks
// (delayed_block_ticks) among those within that fraction of the fastest tick wins instead. `cost`
// is only read by "auto" and must then have n_layer block entries; the schedule simulated has
// `micro_batches` pieces per batch.
Partition plan_partition(int64_t n_layer, int64_t K, const std::string& spec, const CostModel& cost,
                         int64_t micro_batches = 1, double tolerance = 0.0);

// The partition and schedules a config asks for, validated.
struct Plan {
  CostModel cost;
  Partition partition;
  int64_t micro_batches = 1;  // M, resolved from engine.micro_batches (auto_micro_batches)
  Schedule delayed;
  Schedule synchronous;
  // Partition, schedule row per worker, and the cost model's tick time and speed-up.
  std::string summary() const;
};
// cost: the model's (LanguageModel::cost_model for the run's batch size). Ouroboros' plan takes,
// among the cuts (for partition auto) and micro-batch counts (for micro_batches auto: the
// divisors of the batch up to 2 per worker) whose simulated tick is within 8% of the fastest, the
// one with the fewest delayed block-ticks, then the fastest, with the fewest pieces within 1%.
Plan make_plan(const Config& cfg, const CostModel& cost);

// GPipe's micro-batch count: engine.micro_batches when set, else 4 (or the largest divisor of the
// batch below it). Ouroboros' (auto: chosen with the cut) is make_plan's.
int64_t gpipe_micro_batches(const Config& cfg);

// What Ouroboros and GPipe on the config's K - 1 workers and data parallelism on as many replicas
// send per step, one rank per machine, and the seconds that costs on `link` (link_traffic's
// model).
// params: the model's weight count.
std::string link_summary(const Config& cfg, int64_t params, const Link& link);

}  // namespace ouroboros
