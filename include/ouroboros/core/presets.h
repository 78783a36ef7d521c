// Named configurations (`--preset NAME`): the Transformer-XL base settings of Dai et al. 2019 and a
// small one for the demo corpus. A preset fills config fields; a config file and explicit flags
// given with it override them.
#pragma once

#include <string>
#include <vector>

#include "ouroboros/core/config.h"

namespace ouroboros {

struct Preset {
  std::string name;
  std::string description;  // one line for --help
  void (*apply)(Config&);
};

const std::vector<Preset>& presets();
// Throws ConfigError naming the known presets when name is not one of them.
void apply_preset(const std::string& name, Config& cfg);
// "enwik8-base | text8-base | wt103-base | demo-xl"
std::string preset_list();

// The engine benchmark model, on which speed and the delay study are measured: GPT, 6 layers of
// 4 heads, 256 wide, 128 tokens, a byte vocabulary (256), batches of 8, K = 3 modules. The
// default of `ouroboros bench`.
Config benchmark_config();

}  // namespace ouroboros
