// The batches in flight of a pipelined method between two ticks, as typed values: what a
// checkpoint keeps so that a resumed run continues the very same run (docs/CHECKPOINTS.md). The
// engine fills and reads them; the checkpoint code alone turns them into the file's dictionaries
// and back (src/train/checkpoint.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include <torch/torch.h>

namespace ouroboros {

// One forward of a module whose backward has not run yet. With micro-batches, every piece of the
// batch was forwarded (in order, from `generator` and `memory`) and none back-propagated yet: the
// record holds the whole batch's input.
struct BatchInFlight {
  int64_t batch = 0;  // the tick that drew the batch
  // Forwarded with a copy of the weights (a module with delay > 0): the copy is in `weights`, in
  // the module's parameter order. Otherwise it used the live weights and `weights` is empty.
  bool snapshot = false;
  std::vector<at::Tensor> weights;
  at::Tensor input;                      // module 1: the token ids; else the activation received
  at::Tensor generator;                  // the module's dropout generator before the forward
  std::map<int64_t, at::Tensor> memory;  // recurrent models: layer -> memory before the forward
};

// A message between workers that a checkpoint catches between its send and its use.
struct PendingMessage {
  bool error = false;  // an error signal going down the ring; else an activation going up
  int64_t boundary = 0, batch = 0;
  int64_t micro = 0;  // 0: the whole batch; 1..M: one of its micro-batches
  at::Tensor tensor;
  int64_t peer = -1;       // sent messages: the receiving worker
  int64_t recv_tick = -1;  // sent messages: the tick whose ops receive it
};

// One worker's share.
struct WorkerInFlight {
  std::map<int64_t, std::vector<BatchInFlight>> modules;  // module k -> batches, oldest first
  std::map<int64_t, at::Tensor> targets;                  // batch -> targets the last module awaits
  std::vector<PendingMessage> mailbox;                    // received and not yet used
  std::vector<PendingMessage> sent;  // sent; the receiver takes them at recv_tick or later
  // Forwards that still wait for their backward.
  int64_t batches() const {
    int64_t n = 0;
    for (const auto& [k, list] : modules) n += static_cast<int64_t>(list.size());
    return n;
  }
};

// Every worker's share, in worker (rank) order, and the tick the pipeline started at. No workers:
// nothing saved, and a resumed run refills the pipeline from empty.
struct PipelineState {
  int64_t start = 0;
  std::vector<WorkerInFlight> workers;
  bool saved() const { return !workers.empty(); }
  int64_t batches() const {
    int64_t n = 0;
    for (const WorkerInFlight& w : workers) n += w.batches();
    return n;
  }
};

}  // namespace ouroboros
