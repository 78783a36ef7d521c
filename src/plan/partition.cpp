// Cutting L Transformer blocks into K modules on K-1 workers (docs/ALGORITHM.md section 2):
// explicit and "even" cuts, checked; the "auto" search is in planner.cpp.
#include "ouroboros/plan/partition.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <sstream>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

std::string join(const std::vector<int64_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + str(v[i]);
  return out;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

// Checks that L blocks can be cut into K modules at all.
void check_partition_shape(int64_t n_layer, int64_t K) {
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

int64_t ModulePlan::delay() const { return K - index; }

int64_t delayed_block_ticks(const Partition& partition) {
  int64_t n = 0;
  for (const ModulePlan& m : partition.modules) n += (m.end_block - m.first_block) * m.delay();
  return n;
}

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
  check_partition_shape(n_layer, K);
  const auto& b = boundaries;
  if (static_cast<int64_t>(b.size()) != K - 1)
    throw PlanError("K=" + str(K) + " needs " + str(K - 1) + " boundaries, got " + str(b.size()) +
                        " (" + join(b) + ")",
                    "give a1,...,a(K-1)");
  for (size_t i = 0; i < b.size(); ++i)
    if (b[i] < 0 || b[i] > n_layer)
      throw PlanError(
          "boundary a" + str(i + 1) + "=" + str(b[i]) + " is outside [0, " + str(n_layer) + "]",
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

}  // namespace ouroboros
