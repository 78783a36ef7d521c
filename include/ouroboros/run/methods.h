// The method factory: the training method a config's mode asks for.
#pragma once

#include <memory>

#include "ouroboros/core/config.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

// resolved_mode(cfg.engine): the reference trainer (sequential), the Ouroboros engine on
// threads, GPipe or data parallelism.
std::unique_ptr<Method> make_method(const Config& cfg, const LanguageModel& model, ParamSet params);

}  // namespace ouroboros
