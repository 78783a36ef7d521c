// The schedule's consistency and deadlock check: symbolic execution of several ticks with blocking
// receives and buffered sends, optionally keeping each worker's clock for simulate().
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "ouroboros/core/errors.h"
#include "schedule_detail.h"

namespace ouroboros {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

bool is_send(OpKind k) { return k == OpKind::SendAct || k == OpKind::SendErr; }
bool is_recv(OpKind k) { return k == OpKind::RecvAct || k == OpKind::RecvErr; }
// 'A' for activations, 'E' for errors; what a message op carries.
char carried(OpKind k) { return (k == OpKind::SendAct || k == OpKind::RecvAct) ? 'A' : 'E'; }

// Symbolic execution of `ticks` ticks with the executor's semantics: ops on batches < 0 are
// skipped; F<k>(s) needs A<k-1>(s) in the mailbox and leaves A<k>(s) there; B<k>(s) needs the
// stored F<k>(s) and E<k>(s) and leaves E<k-1>(s); sends move a mailbox item into a channel
// (buffered, never blocking), receives block until it is there. With op costs it also keeps
// each worker's clock: receives wait for the send's time, sends are free.
class Machine {
 public:
  Machine(const Schedule& s, int64_t ticks, std::vector<std::vector<double>> costs)
      : update_done(ticks, 0.0),
        compute(s.workers.size()),
        s_(s),
        ticks_(ticks),
        costs_(std::move(costs)),
        state_(s.workers.size()) {}

  void run() {
    const int64_t W = static_cast<int64_t>(s_.workers.size());
    while (true) {
      bool all_done = true, progressed = false;
      for (int64_t w = 0; w < W; ++w) {
        while (!done(w) && step(w)) progressed = true;
        all_done = all_done && done(w);
      }
      if (all_done) break;
      if (!progressed) deadlock();
    }
    check_all_received();
  }

  std::vector<double> update_done;                              // worker 0's U end, per tick
  std::vector<std::vector<std::pair<double, double>>> compute;  // per worker, [start, end)

 private:
  struct Item {
    char what;  // 'A' activation, 'E' error, 'F' stored forward
    int64_t index, batch, micro;
    bool operator==(const Item& o) const {
      return what == o.what && index == o.index && batch == o.batch && micro == o.micro;
    }
    std::string text() const {
      return std::string(1, what) + str(index) + "(" + str(batch) + ")" +
             (micro > 0 ? "[" + str(micro) + "]" : "");
    }
  };
  struct Message {
    int64_t src, dst;
    Item item;
    double time;
    int64_t tick;
    const Op* op;
  };
  struct WorkerState {
    int64_t pc = 0;  // tick * ops_per_tick + position
    double clock = 0.0;
    std::vector<Item> mailbox, stored;
  };

  static bool take(std::vector<Item>& items, const Item& item) {
    auto it = std::find(items.begin(), items.end(), item);
    if (it == items.end()) return false;
    items.erase(it);
    return true;
  }
  int64_t size(int64_t w) const { return static_cast<int64_t>(s_.workers[w].size()); }
  bool done(int64_t w) const { return state_[w].pc >= ticks_ * size(w); }
  int64_t tick(int64_t w) const { return state_[w].pc / size(w); }
  const Op& current(int64_t w) const { return s_.workers[w][state_[w].pc % size(w)]; }

  [[noreturn]] void fail(int64_t w, const std::string& what, const std::string& hint) const {
    const Op& op = current(w);
    throw PlanError(op.to_string() + " on w" + str(w) + " at tick " + str(tick(w)) + " (batch " +
                        str(tick(w) - op.lag) + ") " + what,
                    hint);
  }

  void run_compute(int64_t w) {
    WorkerState& st = state_[w];
    const double start = st.clock;
    if (!costs_.empty()) st.clock += costs_[w][st.pc % size(w)];
    compute[w].push_back({start, st.clock});
  }

  // Runs the current op of worker w; false when it is a receive that must wait.
  bool step(int64_t w) {
    WorkerState& st = state_[w];
    const Op& op = current(w);
    const int64_t t = tick(w), batch = t - op.lag, k = op.index, m = op.micro;
    if (op.kind != OpKind::Update && batch < 0) return ++st.pc, true;  // pipeline fill
    switch (op.kind) {
      case OpKind::Forward:
        if (k > 1 && !take(st.mailbox, {'A', k - 1, batch, m}))
          fail(w, "has no input " + Item{'A', k - 1, batch, m}.text() + " in the mailbox",
               "receive or compute the activation before the forward");
        if (k < s_.K) st.mailbox.push_back({'A', k, batch, m});
        st.stored.push_back({'F', k, batch, m});
        run_compute(w);
        break;
      case OpKind::Backward:
        if (!take(st.stored, {'F', k, batch, m}))
          fail(w, "runs before " + Item{'F', k, batch, m}.text() + " (no stored forward)",
               "a backward needs its own forward earlier");
        if (k < s_.K && !take(st.mailbox, {'E', k, batch, m}))
          fail(w, "has no input " + Item{'E', k, batch, m}.text() + " in the mailbox",
               "receive or compute the error before the backward");
        if (k > 1) st.mailbox.push_back({'E', k - 1, batch, m});
        run_compute(w);
        break;
      case OpKind::SendAct:
      case OpKind::SendErr: {
        const Item item{carried(op.kind), k, batch, m};
        if (!take(st.mailbox, item))
          fail(w, "has nothing to send: " + item.text() + " is not in the mailbox",
               "send only after the op that produces it");
        channel_.push_back({w, op.peer, item, st.clock, t, &op});
        break;
      }
      case OpKind::RecvAct:
      case OpKind::RecvErr: {
        const Item item{carried(op.kind), k, batch, m};
        auto it = std::find_if(channel_.begin(), channel_.end(), [&](const Message& m) {
          return m.src == op.peer && m.dst == w && m.item == item;
        });
        if (it == channel_.end()) return false;
        st.clock = std::max(st.clock, it->time);
        st.mailbox.push_back(item);
        channel_.erase(it);
        break;
      }
      case OpKind::Update:
        run_compute(w);
        if (w == 0) update_done[t] = st.clock;
        break;
    }
    ++st.pc;
    return true;
  }

  // No worker can advance: every unfinished one waits in a receive.
  [[noreturn]] void deadlock() const {
    std::string waits;
    for (int64_t w = 0; w < static_cast<int64_t>(s_.workers.size()); ++w) {
      if (done(w)) continue;
      const Op& op = current(w);
      const Item item{carried(op.kind), op.index, tick(w) - op.lag, op.micro};
      const auto& peer_ops = s_.workers[op.peer];
      const bool has_send = std::any_of(peer_ops.begin(), peer_ops.end(), [&](const Op& p) {
        return is_send(p.kind) && carried(p.kind) == item.what && p.index == item.index &&
               p.peer == w;
      });
      if (!has_send)
        fail(w,
             "is never matched: w" + str(op.peer) + " has no send of " + std::string(1, item.what) +
                 str(item.index) + " to w" + str(w),
             "add the matching send on the peer");
      if (done(op.peer))
        fail(w,
             "is never matched: w" + str(op.peer) + " finished " + str(ticks_) +
                 " ticks without sending " + item.text() + " to w" + str(w),
             "the send's batch (lag) must match the receive's");
      waits += (waits.empty() ? "" : "; ") + std::string("w") + str(w) + " tick " + str(tick(w)) +
               " waits at " + op.to_string() + " for " + item.text();
    }
    throw PlanError("workers deadlock: " + waits,
                    "reorder ops so that no receive waits, directly or in a cycle, on a send "
                    "that comes after it");
  }

  // Every send early enough that its receive falls within the run must have been received.
  void check_all_received() const {
    int64_t max_recv_lag = 0, min_send_lag = 0;
    bool any_send = false;
    for (const auto& ops : s_.workers)
      for (const Op& op : ops) {
        if (is_recv(op.kind)) max_recv_lag = std::max(max_recv_lag, op.lag);
        if (is_send(op.kind)) min_send_lag = any_send ? std::min(min_send_lag, op.lag) : op.lag;
        any_send = any_send || is_send(op.kind);
      }
    const int64_t span = std::max<int64_t>(0, max_recv_lag - min_send_lag);
    for (const Message& m : channel_)
      if (m.tick + span <= ticks_ - 1)
        throw PlanError(m.op->to_string() + " on w" + str(m.src) + " at tick " + str(m.tick) +
                            " (batch " + str(m.item.batch) + ") is never received",
                        "add the matching receive on w" + str(m.dst));
  }

  const Schedule& s_;
  int64_t ticks_;
  std::vector<std::vector<double>> costs_;  // empty: validation only, all ops take no time
  std::vector<WorkerState> state_;
  std::vector<Message> channel_;  // sent and not yet received
};

}  // namespace

detail::SymbolicRun detail::execute_symbolically(const Schedule& s, int64_t ticks,
                                                 std::vector<std::vector<double>> costs) {
  Machine m(s, ticks, std::move(costs));
  m.run();
  return {std::move(m.update_done), std::move(m.compute)};
}

}  // namespace ouroboros
