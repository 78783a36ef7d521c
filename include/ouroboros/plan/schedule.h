// The schedule is data: for K modules on W workers, the ordered operations each worker runs in one
// tick. It is built by a pure function, printed, parsed back, validated and simulated on a cost
// model before any tensor exists; the executor only walks it (docs/ALGORITHM.md section 5).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ouroboros/plan/partition.h"

namespace ouroboros {

// Messages cross a module boundary b (1 <= b <= K-1): the activation A_b is module b's output
// (module b+1's input); the error E_b is the gradient of the loss w.r.t. A_b, sent back to module
// b.
enum class OpKind {
  Forward,   // F<k>(t-lag): forward batch t-lag through module k
  Backward,  // B<k>(t-lag): back-propagate batch t-lag through module k
  SendAct,   // >A<b>(t-lag):w<peer>
  RecvAct,   // <A<b>(t-lag):w<peer>
  SendErr,   // >E<b>(t-lag):w<peer>
  RecvErr,   // <E<b>(t-lag):w<peer>
  Update,    // U: apply this tick's gradients of every module on the worker
};

struct Op {
  OpKind kind;
  int64_t index = 0;  // module k for Forward/Backward, boundary b for messages, 0 for Update
  int64_t lag = 0;    // the op concerns batch t - lag at tick t
  int64_t peer = -1;  // other worker for messages
  // 0: the whole batch; m >= 1: its m-th micro-batch (rows (m-1)B/M .. mB/M - 1).
  int64_t micro = 0;
  bool operator==(const Op& o) const;
  // "F1(t)", "B1(t-2)", ">A1(t):w1", "<E2(t-1):w0", "U"; a micro-batch's op: "F1(t)[2]",
  // ">A1(t)[2]:w1".
  std::string to_string() const;
};

struct Schedule {
  int64_t K = 1;
  int64_t num_workers = 1;
  bool synchronous = false;              // true: plain backprop order (no delay)
  int64_t micro_batches = 1;             // M: each op names micro-batch 1..M (0 when M = 1)
  std::vector<std::vector<Op>> workers;  // ops of one tick t, per worker, in order

  // "w0: F1(t) >A1(t):w1 ...\nw1: ...\n" (one line per worker); parse() reads it back (M is
  // the largest micro-batch an op names, 1 when none does).
  std::string to_string() const;
  static Schedule parse(const std::string& text, int64_t K, bool synchronous = false);
  // Ticks 0..ticks-1 as a grid (rows = ticks, columns = workers, concrete batch numbers; ops on
  // batches < 0 are left out as the executor skips them).
  std::string grid(int64_t ticks) const;
  // Throws PlanError if a backward precedes its forward, a receive has no matching send, a
  // module's op sits on the wrong worker, or the workers deadlock (checked by symbolic execution
  // of several ticks with blocking receives and buffered sends). Also checks the shape: each
  // module has one F (batch t) and one B (batch t-(K-k), or t when synchronous) per tick, each
  // worker one U, messages name a boundary 1..K-1 and another worker, and every send is received;
  // with M micro-batches, each module has that F and B once for each micro-batch 1..M.
  void validate() const;
  bool operator==(const Schedule& o) const;
};

// The Ouroboros schedule for a partition: worker 0 runs F1, sends A1, runs B1 on the error that
// came back during the previous tick while the forward travels the ring, then FK, BK, sends
// E(K-1), and updates. Middle workers forward batch t as soon as it arrives, then back-propagate
// the error that came in during the previous tick. synchronous = plain backprop order through the
// same placement.
// With M > 1 micro-batches the batch travels the ring in M pieces: worker 0 forwards and sends
// every piece through module 1 back to back, back-propagates module 1's delayed batch piece by
// piece while the ring works, then runs FK and BK on each piece as it comes back. A middle worker
// forwards each piece as it arrives, then back-propagates its delayed batch piece by piece (those
// errors came in during the previous tick). Every module still updates once per tick, with the
// gradient of the whole batch. M = 1 is the schedule above, op for op.
Schedule build_schedule(const Partition& partition, bool synchronous = false,
                        int64_t micro_batches = 1);

struct SimResult {
  double tick_time = 0.0;        // steady-state time per tick under the cost model
  double sequential_time = 0.0;  // one worker doing all the work with plain backprop
  double speedup() const { return sequential_time / tick_time; }
  std::vector<double> busy;  // per worker, fraction of the tick spent computing
};
// Discrete-event simulation of `ticks` ticks (messages are free); tick_time is measured over
// the last half so the pipeline fill does not count. Throws PlanError where validate() would.
// Middle workers' updates overlap other workers' work even in the synchronous schedule, so with
// non-zero update costs its speedup can exceed 1 by exactly those updates.
SimResult simulate(const Schedule& schedule, const Partition& partition, const CostModel& cost,
                   int64_t ticks = 32);

}  // namespace ouroboros
