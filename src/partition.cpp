// Cutting L Transformer blocks into K modules on K-1 workers (ALGORITHM.md section 2): explicit,
// "even" and "auto" cuts, and the analytic cost model the "auto" cut is balanced on.
#include "ouroboros/partition.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <sstream>

#include "ouroboros/errors.h"
#include "ouroboros/schedule.h"

namespace ouroboros {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

std::string join(const std::vector<int64_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + str(v[i]);
  return out;
}

// Checks that L blocks can be cut into K modules at all.
void check_shape(int64_t n_layer, int64_t K) {
  if (K < 1)
    throw PlanError("K=" + str(K) + " modules is impossible",
                    "K must be >= 1 (K=1 is plain backprop on one worker)");
  if (n_layer < 0) throw PlanError("n_layer=" + str(n_layer) + " is negative", "use n_layer >= 0");
  if (K - 2 > n_layer)
    throw PlanError("K=" + str(K) + " needs " + str(K - 2) +
                        " middle modules of at least one block but n_layer=" + str(n_layer) +
                        " (more middle modules than blocks)",
                    "use K <= n_layer + 2");
}

// Every module gets floor(L/K) blocks; the remainder r = L mod K goes one block each to the middle
// modules 2..K-1 in order, then to module 1, then module K (r <= K-1, so module K never gets one).
// When floor(L/K) = 0 the L blocks therefore all go to the middle modules first, so with
// L >= K-2 every middle module holds a block and no fix-up is needed.
// L=6,K=3 -> 2,2,2 {2,4}; L=4,K=3 -> 1,2,1 {1,3}; L=2,K=4 -> 0,1,1,0 {0,1,2}.
std::vector<int64_t> even_boundaries(int64_t L, int64_t K) {
  std::vector<int64_t> sizes(K, L / K);
  std::vector<int64_t> order;  // 0-based module positions in remainder order
  for (int64_t k = 1; k + 1 < K; ++k) order.push_back(k);
  order.push_back(0);
  if (K > 1) order.push_back(K - 1);
  for (int64_t i = 0; i < L % K; ++i) ++sizes[order[i]];
  std::vector<int64_t> boundaries;
  int64_t at = 0;
  for (int64_t k = 0; k + 1 < K; ++k) boundaries.push_back(at += sizes[k]);
  return boundaries;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// "a1,a2,..." -> boundaries; an empty spec is the empty list (K=1).
std::vector<int64_t> parse_boundaries(const std::string& raw) {
  std::vector<int64_t> out;
  const std::string spec = trim(raw);
  if (spec.empty()) return out;
  std::stringstream in(spec);
  std::string part;
  while (std::getline(in, part, ',')) {
    const std::string p = trim(part);
    size_t digits = (!p.empty() && p[0] == '-') ? 1 : 0;
    bool ok = p.size() > digits && p.size() - digits <= 9;
    for (size_t i = digits; ok && i < p.size(); ++i) ok = std::isdigit((unsigned char)p[i]);
    if (!ok)
      throw PlanError("partition spec '" + spec + "': '" + p + "' is not a block number",
                      "use even, auto, or boundaries like 2,4");
    out.push_back(std::stoll(p));
  }
  if (spec.back() == ',')
    throw PlanError("partition spec '" + spec + "' ends with a comma",
                    "use even, auto, or boundaries like 2,4");
  return out;
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
      for (int64_t v = 0; v <= L; ++v) {
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

CostModel cost_model_for(int64_t n_layer, int64_t n_embd, int64_t block_size, int64_t vocab_size,
                         int64_t batch_size) {
  if (n_layer < 0 || n_embd < 1 || block_size < 1 || vocab_size < 1 || batch_size < 1)
    throw PlanError("model shape L=" + str(n_layer) + " C=" + str(n_embd) + " T=" +
                        str(block_size) + " V=" + str(vocab_size) + " B=" + str(batch_size) +
                        " is impossible",
                    "all sizes must be >= 1 (L >= 0)");
  constexpr double kMatmulPerSecond = 60e9;      // FLOP/s of one core on a well-blocked GEMM
  constexpr double kElementwisePerSecond = 1.5e9;  // element passes/s, memory bound
  const double C = n_embd, T = block_size, V = vocab_size, B = batch_size, N = B * T;
  const double heads = std::max<int64_t>(1, n_embd / 64);  // head dim 64 assumed
  const double block_matmul = N * 24 * C * C + 4 * B * T * T * C;  // qkv, proj, MLP; QK^T, AV
  const double block_elementwise = N * C * 20 + B * T * T * heads * 4;  // LN, GELU, adds; softmax
  CostModel cost;
  cost.block_forward.assign(n_layer, block_matmul / kMatmulPerSecond +
                                         block_elementwise / kElementwisePerSecond);
  cost.embed_forward = N * C * 3 / kElementwisePerSecond;
  cost.head_forward =
      2 * N * C * V / kMatmulPerSecond + (N * V * 6 + N * C * 8) / kElementwisePerSecond;
  cost.backward_ratio = 2.0;
  cost.update_per_block = 12 * C * C * 10 / kElementwisePerSecond;
  cost.update_embed_head = (V * C + T * C) * 10 / kElementwisePerSecond;
  return cost;
}

int64_t ModulePlan::delay() const { return K - index; }

int64_t module_worker(int64_t K, int64_t k) {
  if (k < 1 || k > K)
    throw PlanError("module " + str(k) + " does not exist with K=" + str(K),
                    "modules are numbered 1..K");
  return (k == 1 || k == K) ? 0 : k - 1;
}

std::vector<int64_t> Partition::modules_of_worker(int64_t w) const {
  if (w < 0 || w >= num_workers())
    throw PlanError("worker " + str(w) + " does not exist with K=" + str(K),
                    "workers are numbered 0..K-2 (0 for K=1)");
  if (w > 0) return {w + 1};
  if (K == 1) return {1};
  return {1, K};
}

std::string Partition::describe(const CostModel& cost) const {
  std::vector<double> work;
  double total = 0.0;
  for (const ModulePlan& m : modules) {
    // forward + backward = forward * (1 + backward_ratio); the factor cancels in the share.
    work.push_back(cost.module_forward(m.first_block, m.end_block, m.embed, m.head) *
                   (1.0 + cost.backward_ratio));
    total += work.back();
  }
  std::ostringstream out;
  for (size_t i = 0; i < modules.size(); ++i) {
    const ModulePlan& m = modules[i];
    const long share = total > 0.0 ? std::lround(100.0 * work[i] / total) : 0;
    out << "module " << m.index << "  blocks [" << m.first_block << "," << m.end_block
        << ")  worker " << m.worker << "  ~" << share << "% of work\n";
  }
  return out.str();
}

Partition make_partition(int64_t n_layer, int64_t K, const std::vector<int64_t>& boundaries) {
  check_shape(n_layer, K);
  const auto& b = boundaries;
  if (static_cast<int64_t>(b.size()) != K - 1)
    throw PlanError("K=" + str(K) + " needs " + str(K - 1) + " boundaries, got " +
                        str(b.size()) + " (" + join(b) + ")",
                    "give a1,...,a(K-1)");
  for (size_t i = 0; i < b.size(); ++i)
    if (b[i] < 0 || b[i] > n_layer)
      throw PlanError("boundary a" + str(i + 1) + "=" + str(b[i]) + " is outside [0, " +
                          str(n_layer) + "]",
                      "boundaries are block numbers between 0 and n_layer");
  for (size_t i = 1; i < b.size(); ++i)
    if (b[i - 1] > b[i])
      throw PlanError("boundaries decrease: a" + str(i) + "=" + str(b[i - 1]) + " > a" +
                          str(i + 1) + "=" + str(b[i]),
                      "boundaries must be non-decreasing");
  for (size_t i = 1; i < b.size(); ++i)
    if (b[i - 1] == b[i])
      throw PlanError("module " + str(i + 1) + " would hold no blocks (a" + str(i) + "=a" +
                          str(i + 1) + "=" + str(b[i]) + ")",
                      "middle modules need at least one block");
  Partition p;
  p.n_layer = n_layer;
  p.K = K;
  p.boundaries = b;
  for (int64_t k = 1; k <= K; ++k) {
    ModulePlan m;
    m.index = k;
    m.first_block = k == 1 ? 0 : b[k - 2];
    m.end_block = k == K ? n_layer : b[k - 1];
    m.worker = module_worker(K, k);
    m.embed = k == 1;
    m.head = k == K;
    m.K = K;
    p.modules.push_back(m);
  }
  return p;
}

Partition plan_partition(int64_t n_layer, int64_t K, const std::string& spec,
                         const CostModel& cost) {
  check_shape(n_layer, K);
  const std::string s = trim(spec);
  if (s == "even") return make_partition(n_layer, K, even_boundaries(n_layer, K));
  if (s != "auto") return make_partition(n_layer, K, parse_boundaries(spec));
  if (static_cast<int64_t>(cost.block_forward.size()) != n_layer)
    throw PlanError("the cost model has " + str(cost.block_forward.size()) +
                        " block costs but n_layer=" + str(n_layer),
                    "build it with cost_model_for for the same model");
  if (K == 1) return make_partition(n_layer, K, {});
  const bool small = count_cuts(n_layer, K, 20000) <= 20000;
  const Candidate best = small ? search_exhaustive(n_layer, K, cost)
                               : search_descent(n_layer, K, cost);
  return make_partition(n_layer, K, best.boundaries);
}

}  // namespace ouroboros
