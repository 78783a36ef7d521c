// The planner: the "auto" cut search (exhaustive when small, coordinate descent otherwise) on the
// schedule simulator, and the plan of a run.
#include "ouroboros/plan/planner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

// How much slower than the fastest cut (and micro-batch count) Ouroboros' plan may be to hold
// fewer blocks at a delay. Measured at the demo's shape with Muon, 1000 steps (docs/DELAY.md
// section 4.8): the cut with no block at delay 2 ends +0.7% above plain backprop where the
// fastest cut ends +2.5%, for 5-8% of step time.
constexpr double kAccuracyTolerance = 0.08;

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
  int64_t block_ticks = 0;  // delayed_block_ticks of the cut
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
                   const CostModel& cost, int64_t M) {
  const Partition p = make_partition(L, K, boundaries);
  Candidate c;
  c.boundaries = boundaries;
  // Enough ticks that the measured last half lies past the K-1 tick pipeline fill.
  c.tick_time =
      simulate(build_schedule(p, false, M), p, cost, std::max<int64_t>(32, 4 * K)).tick_time;
  for (int64_t w = 0; w < p.num_workers(); ++w) {
    double f = 0.0;
    for (int64_t k : p.modules_of_worker(w)) {
      const ModulePlan& m = p.module(k);
      f += cost.module_forward(m.first_block, m.end_block, m.embed, m.head);
    }
    c.max_worker_forward = std::max(c.max_worker_forward, f);
  }
  c.block_ticks = delayed_block_ticks(p);
  return c;
}

// Among cuts whose tick is within `tolerance` of `fastest`: fewer delayed block-ticks first, then
// the faster cut, then `better`'s order.
bool more_accurate(const Candidate& a, const Candidate& b, double fastest, double tolerance) {
  const double limit = fastest * (1.0 + tolerance) * (1.0 + 1e-12);
  const bool a_in = a.tick_time <= limit, b_in = b.tick_time <= limit;
  if (a_in != b_in) return a_in;
  if (!a_in) return better(a, b);
  if (a.block_ticks != b.block_ticks) return a.block_ticks < b.block_ticks;
  return better(a, b);
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

// The chosen cut and the fastest tick any cut reached.
struct Search {
  Candidate chosen;
  double fastest = 0.0;
};

Search search_exhaustive(int64_t L, int64_t K, const CostModel& cost, int64_t M, double tolerance) {
  const int64_t r = K - 1;
  std::vector<int64_t> b(r);
  for (int64_t i = 0; i < r; ++i) b[i] = i;  // smallest strictly increasing cut
  std::vector<Candidate> all{evaluate(L, K, b, cost, M)};
  while (true) {
    int64_t i = r - 1;  // advance to the next combination in lexicographic order
    while (i >= 0 && b[i] == L - (r - 1 - i)) --i;
    if (i < 0) break;
    ++b[i];
    for (int64_t j = i + 1; j < r; ++j) b[j] = b[j - 1] + 1;
    all.push_back(evaluate(L, K, b, cost, M));
  }
  Search s{all.front(), all.front().tick_time};
  for (const Candidate& c : all) s.fastest = std::min(s.fastest, c.tick_time);
  for (const Candidate& c : all) {
    if (more_accurate(c, s.chosen, s.fastest, tolerance)) s.chosen = c;
  }
  return s;
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

// One descent to a local optimum of `consider`'s order: moves one boundary at a time to its best
// position between its neighbours, and one block from any module to any other.
template <typename Consider>
void descend(int64_t L, int64_t K, Candidate& best, Consider&& consider) {
  // Rounds are capped: on a flat stretch of equal ticks (micro-batches balance many cuts) a deep
  // model's tie-breaks could otherwise creep a few hundred blocks per round.
  int rounds = 0;
  for (bool improved = true; improved && rounds < 32; ++rounds) {
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
}

// Coordinate descent from "even": moves one boundary at a time to its best position between its
// neighbours. One-boundary moves stall where a block must travel across several modules at
// once, so each round also tries moving one block from any module i to any module j (shifting
// every boundary in between by one). Only strictly better cuts are accepted, so it terminates;
// it may still stop in a local optimum, which is why small searches are exhaustive.
Search search_descent(int64_t L, int64_t K, const CostModel& cost, int64_t M, double tolerance) {
  Candidate best = evaluate(L, K, even_boundaries(L, K), cost, M);
  // Pass 1 descends on speed alone; pass 2 from there on accuracy within the tolerance.
  double fastest = 0.0;
  bool accuracy = false;
  auto consider = [&](const std::vector<int64_t>& b) {
    if (b == best.boundaries || !valid_cut(L, K, b)) return false;
    Candidate c = evaluate(L, K, b, cost, M);
    if (accuracy ? !more_accurate(c, best, fastest, tolerance) : !better(c, best)) return false;
    best = std::move(c);
    return true;
  };
  // Beyond 1024 blocks the descent's steps are coarse and the accuracy pass would creep along
  // the many cuts of equal speed a few hundred blocks per round: speed only.
  const int passes = tolerance > 0.0 && L <= 1024 ? 2 : 1;
  for (int pass = 0; pass < passes; ++pass) {
    accuracy = pass == 1;
    fastest = best.tick_time;
    descend(L, K, best, consider);
    if (pass == 0) fastest = best.tick_time;  // pass 2 keeps within the tolerance of it
  }
  return {best, fastest};
}

}  // namespace

namespace {

// The cut of plan_partition, with its tick and the fastest tick of any cut it saw.
Search search_partition(int64_t n_layer, int64_t K, const std::string& spec, const CostModel& cost,
                        int64_t M, double tolerance) {
  check_partition_shape(n_layer, K);
  const std::string s = trim(spec);
  if (s != "auto" || K == 1) {
    std::vector<int64_t> b;
    if (K > 1) b = s == "even" ? even_boundaries(n_layer, K) : parse_boundaries(spec);
    const Partition p = make_partition(n_layer, K, b);  // checks the boundaries
    const bool simulate_it = static_cast<int64_t>(cost.block_forward.size()) == n_layer;
    Candidate c;
    c.boundaries = p.boundaries;
    if (simulate_it) c = evaluate(n_layer, K, p.boundaries, cost, M);
    c.block_ticks = delayed_block_ticks(p);
    return {c, c.tick_time};
  }
  if (static_cast<int64_t>(cost.block_forward.size()) != n_layer)
    throw PlanError("the cost model has " + str(cost.block_forward.size()) +
                        " block costs but n_layer=" + str(n_layer),
                    "build it with the model's cost_model for the same n_layer");
  const bool small = count_cuts(n_layer, K, 20000) <= 20000;
  return small ? search_exhaustive(n_layer, K, cost, M, tolerance)
               : search_descent(n_layer, K, cost, M, tolerance);
}

}  // namespace

Partition plan_partition(int64_t n_layer, int64_t K, const std::string& spec, const CostModel& cost,
                         int64_t micro_batches, double tolerance) {
  const Search s = search_partition(n_layer, K, spec, cost, micro_batches, tolerance);
  return make_partition(n_layer, K, s.chosen.boundaries);
}

Plan make_plan(const Config& cfg, const CostModel& cost) {
  Plan p;
  p.cost = cost;
  if (cfg.train.optimizer == OptimizerKind::kMuon) {
    p.cost.update_per_block +=
        static_cast<double>(cfg.train.muon_ns_steps) * cost.newton_schulz_per_block;
  }
  p.cost.recompute_delayed = cfg.engine.recompute == Recompute::kDelayed;
  const int64_t L = cfg.model.n_layer, K = cfg.engine.modules, B = cfg.train.batch_size;
  const std::string& spec = cfg.engine.partition;
  const bool ouroboros = resolved_mode(cfg.engine) == Mode::kOuroboros;
  // Ouroboros trades a little speed for fewer delayed blocks; GPipe has no delays.
  const double tolerance = ouroboros ? kAccuracyTolerance : 0.0;
  if (!ouroboros || cfg.engine.micro_batches > 0) {
    const Mode mode = resolved_mode(cfg.engine);
    p.micro_batches = mode == Mode::kGPipe ? gpipe_micro_batches(cfg)
                      : ouroboros          ? cfg.engine.micro_batches
                                           : 1;
    p.partition = plan_partition(L, K, spec, p.cost, p.micro_batches, tolerance);
  } else {
    // Every M that splits the batch, up to 2 pieces per worker: among the cuts within the
    // tolerance of the fastest tick of any M, the fewest delayed block-ticks; then the fastest,
    // taking the fewest pieces within 1% of it (each piece costs a little the model ignores).
    const int64_t most = std::min<int64_t>(B, 2 * std::max<int64_t>(1, K - 1));
    std::vector<std::pair<int64_t, Search>> options;
    double fastest = 0.0;
    for (int64_t M = 1; M <= most; ++M) {
      if (B % M != 0) continue;
      options.emplace_back(M, search_partition(L, K, spec, p.cost, M, tolerance));
      const double f = options.back().second.fastest;
      fastest = options.size() == 1 ? f : std::min(fastest, f);
    }
    const double limit = fastest * (1.0 + tolerance) * (1.0 + 1e-12);
    int64_t fewest = std::numeric_limits<int64_t>::max();
    double quickest = std::numeric_limits<double>::max();
    for (const auto& [M, s] : options) {
      if (s.chosen.tick_time <= limit) fewest = std::min(fewest, s.chosen.block_ticks);
    }
    for (const auto& [M, s] : options) {
      if (s.chosen.tick_time <= limit && s.chosen.block_ticks == fewest)
        quickest = std::min(quickest, s.chosen.tick_time);
    }
    for (const auto& [M, s] : options) {
      if (s.chosen.tick_time <= limit && s.chosen.block_ticks == fewest &&
          s.chosen.tick_time <= quickest * 1.01) {
        p.micro_batches = M;
        p.partition = make_partition(L, K, s.chosen.boundaries);
        break;
      }
    }
  }
  p.delayed = build_schedule(p.partition, false, p.micro_batches);
  p.synchronous = build_schedule(p.partition, true, p.micro_batches);
  p.delayed.validate();
  p.synchronous.validate();
  return p;
}

int64_t gpipe_micro_batches(const Config& cfg) {
  if (cfg.engine.micro_batches > 0) return cfg.engine.micro_batches;
  int64_t M = 4;
  while (M > 1 && cfg.train.batch_size % M != 0) --M;
  return M;
}

std::string Plan::summary() const {
  std::ostringstream s;
  SimResult sim = simulate(delayed, partition, cost);
  s << "plan: K = " << partition.K << " modules on " << partition.num_workers() << " workers"
    << (micro_batches > 1 ? ", " + std::to_string(micro_batches) + " micro-batches per tick" : "")
    << "\n"
    << partition.describe(cost) << "delayed block-ticks: " << delayed_block_ticks(partition)
    << " (blocks times their delay)\n"
    << "schedule (one tick t):\n"
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
    const int64_t M = gpipe_micro_batches(cfg);
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
