// The planner: the "auto" cut search (exhaustive when small, coordinate descent otherwise) on the
// schedule simulator, and the plan of a run.
#include "ouroboros/plan/planner.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// One candidate cut of the "auto" search, with the keys it is ranked by.
struct Candidate {
  std::vector<int64_t> boundaries;
  double tick_time = 0.0;
  double max_worker_forward = 0.0;
};

bool nearly_equal(double a, double b) {
  return std::fabs(a - b) <= 1e-9 * std::max(std::fabs(a), std::fabs(b));
}

// Strict order: tick time, then max per-worker forward cost, then lexicographic boundaries.
bool better(const Candidate& a, const Candidate& b) {
  if (!nearly_equal(a.tick_time, b.tick_time)) return a.tick_time < b.tick_time;
  if (!nearly_equal(a.max_worker_forward, b.max_worker_forward))
    return a.max_worker_forward < b.max_worker_forward;
  return a.boundaries < b.boundaries;
}

Candidate evaluate(int64_t L, int64_t K, const std::vector<int64_t>& boundaries,
                   const CostModel& cost) {
  const Partition p = make_partition(L, K, boundaries);
  Candidate c;
  c.boundaries = boundaries;
  // Enough ticks that the measured last half lies past the K-1 tick pipeline fill.
  c.tick_time = simulate(build_schedule(p), p, cost, std::max<int64_t>(32, 4 * K)).tick_time;
  for (int64_t w = 0; w < p.num_workers(); ++w) {
    double f = 0.0;
    for (int64_t k : p.modules_of_worker(w)) {
      const ModulePlan& m = p.module(k);
      f += cost.module_forward(m.first_block, m.end_block, m.embed, m.head);
    }
    c.max_worker_forward = std::max(c.max_worker_forward, f);
  }
  return c;
}

// Number of valid cuts: K-1 strictly increasing boundaries in [0, L] (K=2: any one in [0, L]),
// i.e. C(L+1, K-1), capped at cap+1 to avoid overflow.
int64_t count_cuts(int64_t L, int64_t K, int64_t cap) {
  const int64_t n = L + 1, r = K - 1;
  double c = 1.0;
  for (int64_t i = 1; i <= r; ++i) {
    c = c * static_cast<double>(n - r + i) / static_cast<double>(i);
    if (c > static_cast<double>(cap)) return cap + 1;
  }
  return static_cast<int64_t>(std::llround(c));
}

Candidate search_exhaustive(int64_t L, int64_t K, const CostModel& cost) {
  const int64_t r = K - 1;
  std::vector<int64_t> b(r);
  for (int64_t i = 0; i < r; ++i) b[i] = i;  // smallest strictly increasing cut
  Candidate best = evaluate(L, K, b, cost);
  while (true) {
    int64_t i = r - 1;  // advance to the next combination in lexicographic order
    while (i >= 0 && b[i] == L - (r - 1 - i)) --i;
    if (i < 0) break;
    ++b[i];
    for (int64_t j = i + 1; j < r; ++j) b[j] = b[j - 1] + 1;
    Candidate c = evaluate(L, K, b, cost);
    if (better(c, best)) best = std::move(c);
  }
  return best;
}

bool valid_cut(int64_t L, int64_t K, const std::vector<int64_t>& b) {
  for (int64_t i = 0; i < K - 1; ++i) {
    if (b[i] < 0 || b[i] > L) return false;
    if (i > 0 && b[i - 1] >= b[i]) return false;  // middle modules hold at least one block
  }
  return true;
}

// Where the descent tries a boundary now at `at`: every position up to L = 1024; beyond, a grid
// of 512 positions plus every position within two grid steps of `at`, so that a deep model
// (L = 100000) is planned in well under a second rather than minutes.
std::vector<int64_t> boundary_positions(int64_t L, int64_t at) {
  std::vector<int64_t> out;
  if (L <= 1024) {
    for (int64_t v = 0; v <= L; ++v) out.push_back(v);
    return out;
  }
  const int64_t step = (L + 511) / 512;
  for (int64_t v = 0; v <= L; v += step) out.push_back(v);
  for (int64_t v = std::max<int64_t>(0, at - 2 * step); v <= std::min(L, at + 2 * step); ++v) {
    if (v % step != 0) out.push_back(v);
  }
  return out;
}

// Coordinate descent from "even": moves one boundary at a time to its best position between its
// neighbours. One-boundary moves stall where a block must travel across several modules at
// once, so each round also tries moving one block from any module i to any module j (shifting
// every boundary in between by one). Only strictly better cuts are accepted, so it terminates;
// it may still stop in a local optimum, which is why small searches are exhaustive.
Candidate search_descent(int64_t L, int64_t K, const CostModel& cost) {
  Candidate best = evaluate(L, K, even_boundaries(L, K), cost);
  auto consider = [&](const std::vector<int64_t>& b) {
    if (b == best.boundaries || !valid_cut(L, K, b)) return false;
    Candidate c = evaluate(L, K, b, cost);
    if (!better(c, best)) return false;
    best = std::move(c);
    return true;
  };
  for (bool improved = true; improved;) {
    improved = false;
    for (int64_t i = 0; i < K - 1; ++i)
      for (int64_t v : boundary_positions(L, best.boundaries[i])) {
        std::vector<int64_t> b = best.boundaries;
        b[i] = v;
        improved = consider(b) || improved;
      }
    for (int64_t from = 1; from <= K; ++from)
      for (int64_t to = 1; to <= K; ++to) {
        if (from == to) continue;
        std::vector<int64_t> b = best.boundaries;  // module k is [b[k-2], b[k-1])
        if (from < to)
          for (int64_t k = from; k < to; ++k) --b[k - 1];
        else
          for (int64_t k = to; k < from; ++k) ++b[k - 1];
        improved = consider(b) || improved;
      }
  }
  return best;
}

}  // namespace

Partition plan_partition(int64_t n_layer, int64_t K, const std::string& spec,
                         const CostModel& cost) {
  check_partition_shape(n_layer, K);
  const std::string s = trim(spec);
  if (s == "even") return make_partition(n_layer, K, even_boundaries(n_layer, K));
  if (s != "auto") return make_partition(n_layer, K, parse_boundaries(spec));
  if (static_cast<int64_t>(cost.block_forward.size()) != n_layer)
    throw PlanError("the cost model has " + str(cost.block_forward.size()) +
                        " block costs but n_layer=" + str(n_layer),
                    "build it with the model's cost_model for the same n_layer");
  if (K == 1) return make_partition(n_layer, K, {});
  const bool small = count_cuts(n_layer, K, 20000) <= 20000;
  const Candidate best =
      small ? search_exhaustive(n_layer, K, cost) : search_descent(n_layer, K, cost);
  return make_partition(n_layer, K, best.boundaries);
}

Plan make_plan(const Config& cfg, const CostModel& cost) {
  Plan p;
  p.cost = cost;
  if (cfg.train.optimizer == OptimizerKind::kMuon) {
    p.cost.update_per_block +=
        static_cast<double>(cfg.train.muon_ns_steps) * cost.newton_schulz_per_block;
  }
  p.partition = plan_partition(cfg.model.n_layer, cfg.engine.modules, cfg.engine.partition, p.cost);
  p.delayed = build_schedule(p.partition, false);
  p.synchronous = build_schedule(p.partition, true);
  p.delayed.validate();
  p.synchronous.validate();
  return p;
}

std::string Plan::summary() const {
  std::ostringstream s;
  SimResult sim = simulate(delayed, partition, cost);
  s << "plan: K = " << partition.K << " modules on " << partition.num_workers() << " workers\n"
    << partition.describe(cost) << "schedule (one tick t):\n"
    << delayed.to_string();
  s.precision(2);
  s << std::fixed << "cost model: speed-up " << sim.speedup() << "x over sequential backprop\n";
  return s.str();
}

std::string link_summary(const Config& cfg, int64_t params, const Link& link) {
  const int64_t W = cfg.engine.modules == 1 ? 1 : cfg.engine.modules - 1;
  const LinkTraffic t =
      link_traffic(params, cfg.train.batch_size, cfg.model.block_size, cfg.model.n_embd, W);
  const double mib = 1024.0 * 1024.0;
  const double ouro = link.seconds(t.ouroboros_bytes, t.ouroboros_messages);
  const double dp = link.seconds(t.allreduce_bytes, t.allreduce_rounds);
  std::ostringstream s;
  s.precision(3);
  s << std::fixed << "link: " << link.gbit_per_s << " Gbit/s, " << link.latency_s * 1e3
    << " ms one way; one rank per machine, float32, no overlap with compute\n";
  if (W > 1) {
    s << "  ouroboros K = " << cfg.engine.modules << ": " << t.ouroboros_bytes / mib
      << " MiB per worker per tick (" << t.ouroboros_messages << " messages): +" << ouro
      << " s per step at most\n";
    // GPipe moves the same activations and errors, as M micro-batches each.
    const int64_t M = cfg.engine.micro_batches;
    s << "  gpipe K = " << cfg.engine.modules << ", M = " << M << ": the same bytes in "
      << t.ouroboros_messages * M << " messages: +"
      << link.seconds(t.ouroboros_bytes, t.ouroboros_messages * M) << " s per step at most\n";
  }
  s << "  data parallelism on " << W << " replica" << (W == 1 ? "" : "s") << ": ";
  if (W == 1) {
    s << "one replica sends nothing\n";
  } else {
    s << t.allreduce_bytes / mib << " MiB of the " << params << " weights' gradients per rank ("
      << t.allreduce_rounds << " rounds): +" << dp << " s per step\n";
    s << "  data parallelism sends " << t.allreduce_bytes / t.ouroboros_bytes
      << "x the bytes of Ouroboros per step\n";
  }
  return s.str();
}

}  // namespace ouroboros
