// Checkpoints: one file that Python's torch.load reads as a dict (model weights by GPT-2 name,
// optimizer state, config JSON, vocabulary, step, RNG state, per-tensor checksums,
// format_version), written atomically.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/core/config.h"
#include "ouroboros/data/tokenizer.h"
#include "ouroboros/model/language_model.h"

namespace ouroboros {

// 2: the vocabulary as bytes (tokenizer.vocab_bytes, tokenizer.vocab_offsets), and for bpe and
// unigram the serialized sentencepiece model (tokenizer.model, uint8); 1, still read: as a list
// of strings, which Python cannot unpickle for byte vocabularies.
constexpr int64_t kCheckpointFormatVersion = 2;

struct Checkpoint {
  Config config;
  Tokenizer tokenizer = Tokenizer::byte_level();
  ParamSet model;                       // plain tensors (no grad)
  c10::impl::GenericDict optimizer{c10::StringType::get(), c10::AnyType::get()};
  int64_t step = 0;                     // ticks completed
  uint64_t sampler_state = 0;
  std::vector<Tensor> generator_states; // dropout generators, one per module
  std::map<int64_t, Tensor> memory;     // recurrent models: layer -> segment memory [B, M, C]
  // The batches in flight of a pipelined method (MethodState::pipeline); empty = drained.
  c10::impl::GenericDict pipeline{c10::StringType::get(), c10::AnyType::get()};
};

// FNV-1a (64 bit) of a tensor's bytes: the checksum stored for every model tensor.
int64_t tensor_checksum(const Tensor& t);

// Writes a temporary file of this process, fsyncs and renames it, so a crash never leaves a
// broken file at path and two writers never share a temporary name.
void save_checkpoint(const std::string& path, const Checkpoint& ck);
// Throws CheckpointError (one line: which file, what is wrong, how to fix), also when a model
// tensor does not match its checksum.
Checkpoint load_checkpoint(const std::string& path);
// Throws CheckpointError if the checkpoint's model shape or vocabulary differs from the run's.
void check_compatible(const Checkpoint& ck, const ModelConfig& model, const Tokenizer& tok,
                      const std::string& path);

}  // namespace ouroboros
