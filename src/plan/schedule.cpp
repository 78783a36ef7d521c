// The per-tick schedule as a value (docs/ALGORITHM.md section 5): built by a pure function,
// printed, parsed, validated by symbolic execution and simulated on a cost model. No tensors here.
#include "ouroboros/plan/schedule.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "ouroboros/core/errors.h"
#include "schedule_detail.h"

namespace ouroboros {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

Op fwd(int64_t k, int64_t lag, int64_t m = 0) { return Op{OpKind::Forward, k, lag, -1, m}; }
Op bwd(int64_t k, int64_t lag, int64_t m = 0) { return Op{OpKind::Backward, k, lag, -1, m}; }
Op send_act(int64_t b, int64_t lag, int64_t peer, int64_t m = 0) {
  return Op{OpKind::SendAct, b, lag, peer, m};
}
Op recv_act(int64_t b, int64_t lag, int64_t peer, int64_t m = 0) {
  return Op{OpKind::RecvAct, b, lag, peer, m};
}
Op send_err(int64_t b, int64_t lag, int64_t peer, int64_t m = 0) {
  return Op{OpKind::SendErr, b, lag, peer, m};
}
Op recv_err(int64_t b, int64_t lag, int64_t peer, int64_t m = 0) {
  return Op{OpKind::RecvErr, b, lag, peer, m};
}
Op update() { return Op{OpKind::Update, 0, 0, -1, 0}; }

bool is_module_op(OpKind k) { return k == OpKind::Forward || k == OpKind::Backward; }

// An op with its batch written out: "t-2" symbolically, "3" on a concrete tick.
std::string op_text(const Op& op, const std::string& batch) {
  const std::string b = "(" + batch + ")" + (op.micro > 0 ? "[" + str(op.micro) + "]" : "");
  const std::string peer = ":w" + str(op.peer);
  switch (op.kind) {
    case OpKind::Forward:
      return "F" + str(op.index) + b;
    case OpKind::Backward:
      return "B" + str(op.index) + b;
    case OpKind::SendAct:
      return ">A" + str(op.index) + b + peer;
    case OpKind::RecvAct:
      return "<A" + str(op.index) + b + peer;
    case OpKind::SendErr:
      return ">E" + str(op.index) + b + peer;
    case OpKind::RecvErr:
      return "<E" + str(op.index) + b + peer;
    case OpKind::Update:
      break;
  }
  return "U";
}

int64_t workers_for(int64_t K) { return K == 1 ? 1 : K - 1; }

// ---- building ---------------------------------------------------------------------------------

// The ops of one tick are runs of a few ops repeated for every micro-batch: each(M, run) appends
// run(m) for m = 1..M, or run(0) (the whole batch) when M = 1.
class Row {
 public:
  explicit Row(int64_t M) : M_(M) {}
  template <typename Run>
  Row& each(Run run) {
    for (int64_t m = M_ == 1 ? 0 : 1; m <= (M_ == 1 ? 0 : M_); ++m) {
      for (const Op& op : run(m)) ops_.push_back(op);
    }
    return *this;
  }
  std::vector<Op> done() {
    ops_.push_back(update());
    return std::move(ops_);
  }

 private:
  int64_t M_;
  std::vector<Op> ops_;
};

using Ops = std::vector<Op>;

// Worker 0 holds modules 1 and K; boundary K-1 connects it to the worker of module K-1.
std::vector<Op> worker0_ops(int64_t K, bool sync, int64_t M) {
  const int64_t prev = module_worker(K, K - 1);
  Row row(M);
  row.each([&](int64_t m) { return Ops{fwd(1, 0, m), send_act(1, 0, 1, m)}; });
  const int64_t d = sync ? 0 : K - 1;
  const auto module1_back = [&](int64_t m) { return Ops{recv_err(1, d, 1, m), bwd(1, d, m)}; };
  if (!sync) row.each(module1_back);
  row.each([&](int64_t m) {
    return Ops{recv_act(K - 1, 0, prev, m), fwd(K, 0, m), bwd(K, 0, m),
               send_err(K - 1, 0, prev, m)};
  });
  if (sync) row.each(module1_back);
  return row.done();
}

// Middle module m (2..K-1) on worker m-1: forwards this tick's batch (every piece) as soon as it
// arrives, since the forward chain is the critical path, then back-propagates: the error that came
// in during the previous tick in the delayed order (the same op order as GPipe's, one tick apart),
// this tick's in the synchronous one. Putting a piece's backward between two forwards instead
// delays every later piece of the chain (the cost model: 4.80x against 5.18x at W = 8, M = 8).
std::vector<Op> middle_ops(int64_t K, int64_t k, bool sync, int64_t M) {
  const int64_t prev = module_worker(K, k - 1), next = module_worker(K, k + 1);
  const int64_t d = sync ? 0 : K - k;
  return Row(M)
      .each([&](int64_t m) {
        return Ops{recv_act(k - 1, 0, prev, m), fwd(k, 0, m), send_act(k, 0, next, m)};
      })
      .each([&](int64_t m) {
        return Ops{recv_err(k, d, next, m), bwd(k, d, m), send_err(k - 1, d, prev, m)};
      })
      .done();
}

// ---- parsing ----------------------------------------------------------------------------------

struct Cursor {
  const std::string& s;
  size_t i = 0;
  bool eat(char c) { return i < s.size() && s[i] == c ? (++i, true) : false; }
  bool end() const { return i == s.size(); }
  bool number(int64_t& v) {  // 1..9 decimal digits
    size_t start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])) && i - start < 9) ++i;
    if (i == start) return false;
    v = std::stoll(s.substr(start, i - start));
    return true;
  }
  bool batch(int64_t& lag, int64_t& micro) {  // "(t)" or "(t-<n>)", then "[<m>]" or nothing
    lag = 0;
    micro = 0;
    if (!eat('(') || !eat('t')) return false;
    if (!eat(')') && !(eat('-') && number(lag) && eat(')'))) return false;
    return !eat('[') || (number(micro) && micro >= 1 && eat(']'));
  }
};

const char* kOpHint = "ops look like F1(t), B1(t-2), >A1(t):w1, <E2(t-1)[3]:w0, U";

Op parse_op(const std::string& tok, int64_t K, int64_t W) {
  if (tok == "U") return update();
  Cursor c{tok};
  Op op = update();
  bool ok = false;
  if (c.eat('F') || c.eat('B')) {
    op.kind = tok[0] == 'F' ? OpKind::Forward : OpKind::Backward;
    ok = c.number(op.index) && c.batch(op.lag, op.micro) && c.end();
  } else if (c.eat('>') || c.eat('<')) {
    const bool send = tok[0] == '>', act = c.eat('A'), err = !act && c.eat('E');
    if (act) op.kind = send ? OpKind::SendAct : OpKind::RecvAct;
    if (err) op.kind = send ? OpKind::SendErr : OpKind::RecvErr;
    ok = (act || err) && c.number(op.index) && c.batch(op.lag, op.micro) && c.eat(':') &&
         c.eat('w') && c.number(op.peer) && c.end();
  }
  if (!ok) throw PlanError("bad schedule op '" + tok + "'", kOpHint);
  if (is_module_op(op.kind) && (op.index < 1 || op.index > K))
    throw PlanError("schedule op '" + tok + "' names module " + str(op.index) + " but K=" + str(K),
                    "modules are 1..K");
  if (!is_module_op(op.kind) && (op.index < 1 || op.index > K - 1))
    throw PlanError(
        "schedule op '" + tok + "' names boundary " + str(op.index) + " but K=" + str(K),
        "boundaries are 1..K-1");
  if (!is_module_op(op.kind) && op.peer >= W)
    throw PlanError(
        "schedule op '" + tok + "' names worker " + str(op.peer) + " but there are " + str(W),
        "workers are 0..K-2");
  return op;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// ---- checking ---------------------------------------------------------------------------------

// Checks that need no execution: shapes, ranges, placement, one F and one B per module with the
// delay of section 3 (lag K-k, or 0 when synchronous), one U per worker.
void check_structure(const Schedule& s) {
  if (s.K < 1) throw PlanError("schedule has K=" + str(s.K), "K must be >= 1");
  const int64_t W = workers_for(s.K);
  if (s.num_workers != W || static_cast<int64_t>(s.workers.size()) != W)
    throw PlanError("schedule for K=" + str(s.K) + " has " + str(s.workers.size()) +
                        " worker lists (num_workers=" + str(s.num_workers) + ")",
                    "K modules need " + str(W) + " workers");
  const int64_t M = s.micro_batches;
  if (M < 1) throw PlanError("schedule has " + str(M) + " micro-batches", "M must be >= 1");
  // forwards[k][m], backwards[k][m]: ops of module k on micro-batch m (0 = the whole batch).
  std::vector<std::vector<int>> forwards(s.K + 1, std::vector<int>(M + 1)), backwards = forwards;
  for (int64_t w = 0; w < W; ++w) {
    int updates = 0;
    for (const Op& op : s.workers[w]) {
      const std::string where = op.to_string() + " on w" + str(w);
      if (op.lag < 0) throw PlanError(where + " has negative lag " + str(op.lag), kOpHint);
      if (op.kind != OpKind::Update && (M == 1 ? op.micro != 0 : op.micro < 1 || op.micro > M))
        throw PlanError(where + " names micro-batch " + str(op.micro) + " but M=" + str(M),
                        M == 1 ? "a schedule of whole batches names no micro-batch"
                               : "every op names one of the micro-batches 1.." + str(M));
      if (op.kind == OpKind::Update) {
        ++updates;
      } else if (is_module_op(op.kind)) {
        if (op.index < 1 || op.index > s.K)
          throw PlanError(where + " names module " + str(op.index) + " but K=" + str(s.K),
                          "modules are 1..K");
        const int64_t owner = module_worker(s.K, op.index);
        if (owner != w)
          throw PlanError(where + ": module " + str(op.index) + " lives on w" + str(owner),
                          "modules 1 and K live on w0, module k on w(k-1)");
        const bool forward = op.kind == OpKind::Forward;
        const int64_t want = (forward || s.synchronous) ? 0 : s.K - op.index;
        if (op.lag != want)
          throw PlanError(where + " has lag " + str(op.lag) + " but needs " + str(want),
                          "forwards run batch t; module k back-propagates batch t-(K-k) "
                          "(t when synchronous)");
        ++(forward ? forwards : backwards)[op.index][op.micro];
      } else {
        if (op.index < 1 || op.index > s.K - 1)
          throw PlanError(where + " names boundary " + str(op.index) + " but K=" + str(s.K),
                          "boundaries are 1..K-1");
        if (op.peer < 0 || op.peer >= W || op.peer == w)
          throw PlanError(where + " names peer w" + str(op.peer),
                          "the peer is another worker, 0.." + str(W - 1));
      }
    }
    if (updates != 1)
      throw PlanError("w" + str(w) + " has " + str(updates) + " U ops per tick",
                      "each worker updates exactly once per tick");
  }
  for (int64_t k = 1; k <= s.K; ++k)
    for (int64_t m = M == 1 ? 0 : 1; m <= (M == 1 ? 0 : M); ++m)
      if (forwards[k][m] != 1 || backwards[k][m] != 1)
        throw PlanError("module " + str(k) + " has " + str(forwards[k][m]) + " forward and " +
                            str(backwards[k][m]) + " backward ops per tick" +
                            (m > 0 ? " on micro-batch " + str(m) : ""),
                        M == 1 ? "each module needs exactly one F and one B per tick"
                               : "each module needs exactly one F and one B per micro-batch");
}

// Cost of each op of each worker under `cost`; messages are free.
std::vector<std::vector<double>> op_costs(const Schedule& s, const Partition& p,
                                          const CostModel& cost) {
  std::vector<std::vector<double>> out(s.workers.size());
  for (size_t w = 0; w < s.workers.size(); ++w) {
    double upd = w == 0 ? cost.update_embed_head : 0.0;
    for (int64_t k : p.modules_of_worker(static_cast<int64_t>(w))) {
      const ModulePlan& m = p.module(k);
      upd += static_cast<double>(m.end_block - m.first_block) * cost.update_per_block;
    }
    for (const Op& op : s.workers[w]) {
      double c = 0.0;
      if (is_module_op(op.kind)) {
        const ModulePlan& m = p.module(op.index);
        // A micro-batch's op costs its share of the batch's.
        c = cost.module_forward(m.first_block, m.end_block, m.embed, m.head) /
            static_cast<double>(s.micro_batches);
        // A backward in a later tick than its forward (lag > 0) may recompute that forward.
        if (op.kind == OpKind::Backward)
          c *= cost.backward_ratio + (cost.recompute_delayed && op.lag > 0 ? 1.0 : 0.0);
      } else if (op.kind == OpKind::Update) {
        c = upd;
      }
      out[w].push_back(c);
    }
  }
  return out;
}

}  // namespace

bool Op::operator==(const Op& o) const {
  return kind == o.kind && index == o.index && lag == o.lag && peer == o.peer && micro == o.micro;
}

std::string Op::to_string() const { return op_text(*this, lag == 0 ? "t" : "t-" + str(lag)); }

bool Schedule::operator==(const Schedule& o) const {
  return K == o.K && num_workers == o.num_workers && synchronous == o.synchronous &&
         micro_batches == o.micro_batches && workers == o.workers;
}

Schedule build_schedule(const Partition& partition, bool synchronous, int64_t micro_batches) {
  const int64_t K = partition.K, M = micro_batches;
  if (K < 1) throw PlanError("partition has K=" + str(K), "K must be >= 1");
  if (M < 1) throw PlanError("schedule with " + str(M) + " micro-batches", "M must be >= 1");
  Schedule s;
  s.K = K;
  s.num_workers = workers_for(K);
  s.synchronous = synchronous;
  s.micro_batches = M;
  Row row(M);
  if (K == 1) {
    s.workers = {row.each([](int64_t m) { return Ops{fwd(1, 0, m), bwd(1, 0, m)}; }).done()};
  } else if (K == 2) {  // one worker, boundary 1 is local: no messages
    row.each([](int64_t m) { return Ops{fwd(1, 0, m)}; });
    const auto module1_back = [&](int64_t m) { return Ops{bwd(1, synchronous ? 0 : 1, m)}; };
    if (!synchronous) row.each(module1_back);
    row.each([](int64_t m) { return Ops{fwd(2, 0, m), bwd(2, 0, m)}; });
    if (synchronous) row.each(module1_back);
    s.workers = {row.done()};
  } else {
    s.workers.push_back(worker0_ops(K, synchronous, M));
    for (int64_t m = 2; m < K; ++m) s.workers.push_back(middle_ops(K, m, synchronous, M));
  }
  return s;
}

std::string Schedule::to_string() const {
  std::string out;
  for (size_t w = 0; w < workers.size(); ++w) {
    out += "w" + str(w) + ":";
    for (const Op& op : workers[w]) out += " " + op.to_string();
    out += "\n";
  }
  return out;
}

Schedule Schedule::parse(const std::string& text, int64_t K, bool synchronous) {
  if (K < 1) throw PlanError("cannot parse a schedule for K=" + str(K), "K must be >= 1");
  Schedule s;
  s.K = K;
  s.num_workers = workers_for(K);
  s.synchronous = synchronous;
  s.workers.resize(s.num_workers);
  std::vector<bool> seen(s.num_workers, false);
  std::istringstream in(text);
  for (std::string raw; std::getline(in, raw);) {
    const std::string line = trim(raw);
    if (line.empty()) continue;
    const size_t colon = line.find(':');
    const std::string head = colon == std::string::npos ? line : line.substr(0, colon);
    Cursor c{head};
    int64_t w = -1;
    if (colon == std::string::npos || !c.eat('w') || !c.number(w) || !c.end())
      throw PlanError("schedule line '" + line + "' does not start with 'w<i>:'",
                      "lines look like 'w0: F1(t) >A1(t):w1 ... U'");
    if (w >= s.num_workers || seen[w])
      throw PlanError("schedule line for w" + str(w) +
                          (w >= s.num_workers ? " is out of range" : " is repeated"),
                      "K=" + str(K) + " has workers w0..w" + str(s.num_workers - 1));
    seen[w] = true;
    std::istringstream ops(line.substr(colon + 1));
    for (std::string tok; ops >> tok;) {
      s.workers[w].push_back(parse_op(tok, K, s.num_workers));
      s.micro_batches = std::max(s.micro_batches, s.workers[w].back().micro);
    }
  }
  for (int64_t w = 0; w < s.num_workers; ++w)
    if (!seen[w])
      throw PlanError("schedule text has no line for w" + str(w),
                      "K=" + str(K) + " needs lines w0..w" + str(s.num_workers - 1));
  return s;
}

std::string Schedule::grid(int64_t ticks) const {
  std::vector<std::vector<std::string>> rows(1, {"tick"});
  for (size_t w = 0; w < workers.size(); ++w) rows[0].push_back("w" + str(w));
  for (int64_t t = 0; t < ticks; ++t) {
    rows.push_back({str(t)});
    for (const auto& ops : workers) {
      std::string cell;
      for (const Op& op : ops) {
        if (op.kind != OpKind::Update && t - op.lag < 0) continue;  // skipped by the executor
        cell += (cell.empty() ? "" : " ") + op_text(op, str(t - op.lag));
      }
      rows.back().push_back(cell.empty() ? "-" : cell);
    }
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::string out;
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      out += row[c];
      if (c + 1 < row.size()) out += std::string(width[c] - row[c].size() + 2, ' ');
    }
    out += "\n";
  }
  return out;
}

void Schedule::validate() const {
  check_structure(*this);
  detail::execute_symbolically(*this, 2 * K + 4, {});
}

SimResult simulate(const Schedule& schedule, const Partition& partition, const CostModel& cost,
                   int64_t ticks) {
  if (ticks < 1) throw PlanError("cannot simulate " + str(ticks) + " ticks", "use ticks >= 1");
  if (partition.K != schedule.K)
    throw PlanError(
        "schedule has K=" + str(schedule.K) + " but the partition K=" + str(partition.K),
        "build the schedule from the same partition");
  check_structure(schedule);
  const detail::SymbolicRun m =
      detail::execute_symbolically(schedule, ticks, op_costs(schedule, partition, cost));

  SimResult r;
  const int64_t first = ticks / 2;  // measured window: ticks first..ticks-1
  const double start = first > 0 ? m.update_done[first - 1] : 0.0;
  const double end = m.update_done[ticks - 1];
  r.tick_time = (end - start) / static_cast<double>(ticks - first);
  for (const ModulePlan& mod : partition.modules)
    r.sequential_time += cost.module_forward(mod.first_block, mod.end_block, mod.embed, mod.head) *
                         (1.0 + cost.backward_ratio);
  r.sequential_time +=
      static_cast<double>(partition.n_layer) * cost.update_per_block + cost.update_embed_head;
  for (const auto& intervals : m.compute) {
    double busy = 0.0;
    for (const auto& [a, b] : intervals)
      busy += std::max(0.0, std::min(b, end) - std::max(a, start));
    r.busy.push_back(end > start ? busy / (end - start) : 0.0);
  }
  return r;
}

}  // namespace ouroboros
