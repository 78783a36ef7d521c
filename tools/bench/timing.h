// The one timing path of `ouroboros bench` and bench/bench_step: a method of the config's model
// (GPT or Transformer-XL) timed on random token batches prepared before timing.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "ouroboros/core/config.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

class DistContext;

struct TimingOptions {
  int64_t warmup = 3;  // untimed steps first
  int64_t steps = 20;  // timed steps
  // All timed steps in one run() call (mean per step), else one call per step (median). K > 1
  // needs whole, since a call ends with every worker idle.
  bool whole = true;
  std::string profile;               // Chrome trace of the timed steps; "" = none
  std::ostream* progress = nullptr;  // a few progress lines; nullptr = none
  // Times this rank's part of the method across processes (make_process_method); every rank
  // calls time_method and rank 0's Timing is the one to report. The batches have R B rows, of
  // which replica r trains on rows [r B, (r+1) B), as the threaded data parallelism of batch R B
  // splits them.
  DistContext* ctx = nullptr;
};

struct Timing {
  std::string mode;  // resolved_mode of the config
  double ms_per_step = 0.0;
  double tokens_per_s = 0.0;
  double flop_per_step = 0.0;  // the model's train_step_flops (all replicas)
  double final_loss = 0.0;
  double peak_rss_mib = 0.0;                 // this process's
  std::vector<double> transport_wait_share;  // Ouroboros on threads: per worker, of the timed run
};

// Builds the model and method of cfg (vocab_size 0 = 256) and times it; tokens are counted over
// all replicas. Sets the intra-op threads
// of the calling thread to cfg.train.threads.
Timing time_method(const Config& cfg, const TimingOptions& opts);

}  // namespace ouroboros
