// libFuzzer target: arbitrary bytes as a checkpoint file. load_checkpoint must answer with a
// CheckpointError (one line: which file, what is wrong) or a checkpoint, never crash or throw
// anything else.
#include <cstdint>
#include <cstdio>
#include <string>

#include <unistd.h>

#include "ouroboros/core/errors.h"
#include "ouroboros/train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/ouroboros_ckpt_fuzz_" + std::to_string(getpid()) + ".pt";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    ouroboros::Checkpoint ck = ouroboros::load_checkpoint(path);
    (void)ck;
  } catch (const ouroboros::Error&) {
  }
  return 0;
}
