// The method factory.
#include "ouroboros/run/methods.h"

#include "ouroboros/core/system.h"
#include "ouroboros/engine/data_parallel.h"
#include "ouroboros/engine/gpipe.h"
#include "ouroboros/engine/ouroboros_engine.h"
#include "ouroboros/train/reference.h"

namespace ouroboros {

std::unique_ptr<Method> make_method(const Config& cfg, const LanguageModel& model, ParamSet params) {
  keep_freed_memory();
  const std::string mode = resolved_mode(cfg.engine);
  if (mode == "gpipe") return std::make_unique<GPipeTrainer>(model, std::move(params), cfg);
  if (mode == "data-parallel") {
    return std::make_unique<DataParallelTrainer>(model, std::move(params), cfg);
  }
  if (mode == "sequential") {
    return std::make_unique<ReferenceTrainer>(model, std::move(params), cfg.train);
  }
  return std::make_unique<OuroborosEngine>(model, std::move(params), cfg);
}

}  // namespace ouroboros
