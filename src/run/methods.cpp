// The method factory.
#include "ouroboros/run/methods.h"

#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"
#include "ouroboros/dist/gpipe_processes.h"
#include "ouroboros/dist/ouroboros_processes.h"
#include "ouroboros/engine/data_parallel_threads.h"
#include "ouroboros/engine/gpipe_threads.h"
#include "ouroboros/engine/ouroboros_threads.h"
#include "ouroboros/train/sequential_backprop.h"

namespace ouroboros {

std::unique_ptr<Method> make_method(const Config& cfg, const LanguageModel& model, ParamSet params,
                                    const Plan* plan) {
  keep_freed_memory();
  switch (resolved_mode(cfg.engine)) {
    case Mode::kGPipe:
      return std::make_unique<GPipeThreads>(model, std::move(params), cfg);
    case Mode::kDataParallel:
      return std::make_unique<DataParallelThreads>(model, std::move(params), cfg);
    case Mode::kSequential:
      return std::make_unique<SequentialBackprop>(model, std::move(params), cfg.train);
    case Mode::kAuto:
    case Mode::kOuroboros:
      break;
  }
  if (plan) return std::make_unique<OuroborosThreads>(model, std::move(params), cfg, *plan);
  return std::make_unique<OuroborosThreads>(model, std::move(params), cfg);
}

void check_process_mode(const Config& cfg) {
  const Mode mode = resolved_mode(cfg.engine);
  const std::string name = name_of(mode);
  const bool ddp = mode == Mode::kSequential && cfg.dist.replicas > 1;
  if (mode != Mode::kOuroboros && mode != Mode::kGPipe && !ddp) {
    throw ConfigError(
        "processes run --mode ouroboros or gpipe, or data parallelism as --modules 1 "
        "--replicas R, not " +
            name,
        mode == Mode::kDataParallel
            ? "one process per replica: --modules 1 --replicas R (batch B each)"
            : "use --modules K >= 2 with the default mode, or run " + name +
                  " on threads of one process");
  }
  if (mode == Mode::kGPipe && cfg.dist.replicas > 1) {
    throw ConfigError("--mode gpipe runs one ring across processes, not --replicas " +
                          std::to_string(cfg.dist.replicas),
                      "drop --replicas, or use the default mode (Ouroboros) for several rings");
  }
}

std::unique_ptr<Method> make_process_method(const Config& cfg, const LanguageModel& model,
                                            ParamSet params, DistContext& ctx, RankStats* stats) {
  check_process_mode(cfg);
  keep_freed_memory();  // as every threaded method does
  if (resolved_mode(cfg.engine) == Mode::kGPipe) {
    auto gpipe = std::make_unique<GPipeProcesses>(model, std::move(params), cfg, ctx);
    gpipe->set_stats_sink(stats);
    return gpipe;
  }
  auto engine = std::make_unique<OuroborosProcesses>(model, std::move(params), cfg, ctx);
  engine->set_stats_sink(stats);
  return engine;
}

}  // namespace ouroboros
