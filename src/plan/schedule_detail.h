// Symbolic execution of a schedule, shared by Schedule::validate() and simulate() (not part of the
// public API; implemented in schedule_check.cpp).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "ouroboros/plan/schedule.h"

namespace ouroboros::detail {

// What a symbolic run records; the times are all 0 when it ran without op costs.
struct SymbolicRun {
  std::vector<double> update_done;                              // worker 0's U end, per tick
  std::vector<std::vector<std::pair<double, double>>> compute;  // per worker, [start, end)
};

// Runs ticks 0..ticks-1 of s with the executor's semantics and throws PlanError on a missing
// input, an unmatched send or receive, or a deadlock. costs[w][i] is the time of op i of worker
// w; empty costs: validation only, all ops take no time.
SymbolicRun execute_symbolically(const Schedule& s, int64_t ticks,
                                 std::vector<std::vector<double>> costs);

}  // namespace ouroboros::detail
