// Cutting L Transformer blocks into K modules on K-1 workers (ALGORITHM.md section 2), and the
// cost model that balances the cut and estimates a tick.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ouroboros {

// Forward cost of each piece of the model in arbitrary units (e.g. FLOPs); backward is
// backward_ratio times its forward. Built from the model shape (cost_model_for) or a profile.
struct CostModel {
  std::vector<double> block_forward;  // one entry per block, size L
  double embed_forward = 0.0;         // token + position embedding (module 1)
  double head_forward = 0.0;          // ln_f, logits = h . wte^T, softmax, loss (module K)
  double backward_ratio = 2.0;        // backward / forward compute
  double update_per_block = 0.0;      // optimizer update of one block's weights
  double update_embed_head = 0.0;     // optimizer update of wte, wpe, ln_f

  double module_forward(int64_t first_block, int64_t end_block, bool embed, bool head) const;
};

// Analytic cost of the GPT model for one batch of B sequences of T tokens, in estimated seconds on
// one core: matmul FLOPs at 60 GFLOP/s plus elementwise passes at 1.5 G elements/s. n_head is not
// passed, so attention's per-head softmax assumes head dim 64 (at least one head).
CostModel cost_model_for(int64_t n_layer, int64_t n_embd, int64_t block_size, int64_t vocab_size,
                         int64_t batch_size);

struct ModulePlan {
  int64_t index;        // 1-based module number k
  int64_t first_block;  // blocks [first_block, end_block)
  int64_t end_block;
  int64_t worker;       // 0 for modules 1 and K, k-1 for middle modules
  bool embed;           // holds wte lookup and wpe (module 1)
  bool head;            // holds ln_f, tied output projection and loss (module K)
  int64_t delay() const;  // K - k
  int64_t K = 0;
};

struct Partition {
  int64_t n_layer = 0;                // L
  int64_t K = 1;                      // modules
  std::vector<int64_t> boundaries;    // a1 .. a(K-1), non-decreasing, in [0, L]
  std::vector<ModulePlan> modules;    // size K, in order 1..K

  int64_t num_workers() const { return K == 1 ? 1 : K - 1; }
  const ModulePlan& module(int64_t k) const { return modules.at(k - 1); }
  // Modules a worker holds, in index order (worker 0: {1, K}).
  std::vector<int64_t> modules_of_worker(int64_t w) const;
  // One line per module: module, blocks, worker, estimated share of the work.
  std::string describe(const CostModel& cost) const;
};

// The worker that holds module k (1 <= k <= K): 0 for modules 1 and K, k-1 for the middle ones.
int64_t module_worker(int64_t K, int64_t k);

// Builds a partition from explicit boundaries a1..a(K-1). Module 1 = [0, a1), module k =
// [a(k-1), ak), module K = [a(K-1), L). Middle modules need at least one block; modules 1 and K
// may be empty. Throws PlanError with the offending values otherwise.
Partition make_partition(int64_t n_layer, int64_t K, const std::vector<int64_t>& boundaries);
// spec: "even" (blocks spread evenly, remainder to the middle modules first), "auto" (minimise
// the estimated tick time of the Ouroboros schedule under `cost`), or "a1,a2,...".
// "auto" searches every valid cut when there are at most 20000, else runs coordinate descent
// from "even"; ties go to the smaller maximum per-worker forward cost, then the lexicographically
// smallest boundaries. `cost` is only read by "auto" and must then have n_layer block entries.
Partition plan_partition(int64_t n_layer, int64_t K, const std::string& spec, const CostModel& cost);

}  // namespace ouroboros
