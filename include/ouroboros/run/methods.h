// The method factory: the training method a config's mode asks for.
#pragma once

#include <memory>

#include "ouroboros/core/config.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

class DistContext;
struct Plan;
struct RankStats;

// resolved_mode(cfg.engine): the reference trainer (sequential), the Ouroboros engine on
// threads, GPipe or data parallelism. `plan`: Ouroboros' plan when the caller made it already.
std::unique_ptr<Method> make_method(const Config& cfg, const LanguageModel& model, ParamSet params,
                                    const Plan* plan = nullptr);

// Throws ConfigError, with what to use instead, for a config that processes cannot run: they run
// Ouroboros (one ring or several), GPipe (one ring), or data parallelism as --modules 1
// --replicas R (one process per replica, DDP).
void check_process_mode(const Config& cfg);

// This rank's part of the config's method across processes: GPipeProcesses for GPipe, else
// OuroborosProcesses (Ouroboros, and plain backprop in R rings of one worker). `stats` (may be
// null) receives the rank's traffic when the method is destroyed.
std::unique_ptr<Method> make_process_method(const Config& cfg, const LanguageModel& model,
                                            ParamSet params, DistContext& ctx, RankStats* stats);

}  // namespace ouroboros
