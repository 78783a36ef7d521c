// libFuzzer target: a config file's bytes through the reader, the field table and validation.
// Anything but ouroboros::Error (a one-line message with a hint) is a finding.
#include <cstdint>
#include <cstdio>
#include <string>

#include <unistd.h>

#include "ouroboros/core/config.h"
#include "ouroboros/core/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      "/tmp/ouroboros_config_fuzz_" + std::to_string(getpid()) + ".json";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    ouroboros::Config c = ouroboros::load_config_file(path);
    c.validate();
    // A config that validates survives its own JSON round trip.
    ouroboros::Config back;
    back.merge_json(c.to_json());
    if (back.to_json() != c.to_json()) __builtin_trap();
  } catch (const ouroboros::Error&) {
  }
  return 0;
}
