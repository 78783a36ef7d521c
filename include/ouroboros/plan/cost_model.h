// The cost model a cut is balanced on and a schedule simulated with: forward cost of every piece
// of the model in estimated seconds on one core. Each model builds its own
// (LanguageModel::cost_model) from these rates.
#pragma once

#include <cstdint>
#include <vector>

namespace ouroboros {

// Rates the analytic cost models assume for one core.
constexpr double kMatmulFlopsPerSecond = 60e9;   // a well-blocked float GEMM
constexpr double kElementwisePerSecond = 1.5e9;  // element passes, memory bound

// Forward cost of each piece of the model in arbitrary units (e.g. FLOPs); backward is
// backward_ratio times its forward. Built from the model shape (LanguageModel::cost_model).
struct CostModel {
  std::vector<double> block_forward;  // one entry per block, size L
  double embed_forward = 0.0;         // token + position embedding (module 1)
  double head_forward = 0.0;          // ln_f, logits = h . wte^T, softmax, loss (module K)
  double backward_ratio = 2.0;        // backward / forward compute
  double update_per_block = 0.0;      // optimizer update of one block's weights
  double update_embed_head = 0.0;     // optimizer update of wte, wpe, ln_f
  // One Newton-Schulz iteration over one block's matrices (Muon), added to update_per_block
  // once per iteration when the run's optimizer is Muon (make_plan).
  double newton_schulz_per_block = 0.0;
  // engine.recompute delayed: a backward that waits for a later tick runs its forward again
  // first (make_plan sets it).
  bool recompute_delayed = false;

  double module_forward(int64_t first_block, int64_t end_block, bool embed, bool head) const;

 private:
  // Prefix sums of block_forward for long ranges, built on first use; block_forward is set once
  // when the model is built and not changed after.
  mutable std::vector<double> prefix_;
};

// Matmul FLOPs of one Newton-Schulz iteration on a rows x cols matrix: X X^T, its square and
// the product with X on the small side m <= n, 4 m^2 n + 2 m^3.
inline double newton_schulz_flops(double rows, double cols) {
  const double m = rows < cols ? rows : cols, n = rows < cols ? cols : rows;
  return 4 * m * m * n + 2 * m * m * m;
}

// A network link between machines. A message of n bytes costs latency + n / bandwidth on it.
struct Link {
  double gbit_per_s = 1.0;  // bandwidth of each direction
  double latency_s = 0.0;   // one way
  double seconds(double bytes, int64_t messages) const {
    return static_cast<double>(messages) * latency_s + bytes * 8.0 / (gbit_per_s * 1e9);
  }
};

// What one training step sends per rank and direction (float32 tensors) when every rank sits on
// its own machine. Ouroboros: each worker sends one activation [B, T, C] forward and one error
// signal [B, T, C] back per tick (the tied embedding never travels). Data parallelism on R
// replicas: a ring all-reduce of every gradient, 2 (R - 1) / R of the P weights, in 2 (R - 1)
// rounds. The link seconds of each assume no overlap with compute, which holds for Ouroboros,
// whose activations are on the critical path of a tick (its forward is a serial chain), and for
// data parallelism's all-reduce, which waits for the whole backward; GPipe's micro-batches hide
// part of theirs, so for it this is an upper bound.
struct LinkTraffic {
  double ouroboros_bytes = 0.0;
  int64_t ouroboros_messages = 2;
  double allreduce_bytes = 0.0;
  int64_t allreduce_rounds = 0;
};
LinkTraffic link_traffic(int64_t params, int64_t B, int64_t T, int64_t C, int64_t replicas);

}  // namespace ouroboros
