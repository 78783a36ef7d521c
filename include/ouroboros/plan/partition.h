// Cutting L Transformer blocks into K modules on K-1 workers (docs/ALGORITHM.md section 2): the
// partition as a value, built from explicit or even boundaries and checked.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ouroboros/plan/cost_model.h"

namespace ouroboros {

struct ModulePlan {
  int64_t index;        // 1-based module number k
  int64_t first_block;  // blocks [first_block, end_block)
  int64_t end_block;
  int64_t worker;         // 0 for modules 1 and K, k-1 for middle modules
  bool embed;             // holds wte lookup and wpe (module 1)
  bool head;              // holds ln_f, tied output projection and loss (module K)
  int64_t delay() const;  // K - k
  int64_t K = 0;
};

struct Partition {
  int64_t n_layer = 0;              // L
  int64_t K = 1;                    // modules
  std::vector<int64_t> boundaries;  // a1 .. a(K-1), non-decreasing, in [0, L]
  std::vector<ModulePlan> modules;  // size K, in order 1..K

  int64_t num_workers() const { return K == 1 ? 1 : K - 1; }
  const ModulePlan& module(int64_t k) const { return modules.at(k - 1); }
  // Modules a worker holds, in index order (worker 0: {1, K}).
  std::vector<int64_t> modules_of_worker(int64_t w) const;
  // One line per module: module, blocks, worker, estimated share of the work.
  std::string describe(const CostModel& cost) const;
};

// Blocks times their delay, summed over the modules (module k's blocks wait K - k ticks for their
// gradient): the share of the model that learns from stale errors, which the delays' accuracy
// cost grows with (docs/DELAY.md). L = 6, K = 3: cut {2, 4} has 2*2 + 2*1 = 6, cut {0, 3} has 3.
int64_t delayed_block_ticks(const Partition& partition);

// The worker that holds module k (1 <= k <= K): 0 for modules 1 and K, k-1 for the middle ones.
int64_t module_worker(int64_t K, int64_t k);

// Builds a partition from explicit boundaries a1..a(K-1). Module 1 = [0, a1), module k =
// [a(k-1), ak), module K = [a(K-1), L). Middle modules need at least one block; modules 1 and K
// may be empty. Throws PlanError with the offending values otherwise.
Partition make_partition(int64_t n_layer, int64_t K, const std::vector<int64_t>& boundaries);
// Throws PlanError unless L blocks can be cut into K modules at all (K >= 1, K <= L + 2).
void check_partition_shape(int64_t n_layer, int64_t K);
// Every module gets floor(L/K) blocks; the remainder goes one block each to the middle modules
// 2..K-1 in order, then to module 1. L=6,K=3 -> {2,4}; L=4,K=3 -> {1,3}; L=2,K=4 -> {0,1,2}.
std::vector<int64_t> even_boundaries(int64_t n_layer, int64_t K);
// "a1,a2,..." -> boundaries; "" -> {} (K = 1). Throws PlanError for anything but block numbers.
std::vector<int64_t> parse_boundaries(const std::string& spec);

}  // namespace ouroboros
