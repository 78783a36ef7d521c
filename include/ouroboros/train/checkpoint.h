// Checkpoints: one file that Python's torch.load reads as a dict (model weights by GPT-2 name,
// optimizer state, config JSON, vocabulary, step, RNG state, per-tensor checksums,
// format_version, the batches in flight, the run's id), written atomically; or, from a
// multi-process run, a directory of one such shard per rank and a manifest.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/core/config.h"
#include "ouroboros/data/tokenizer.h"
#include "ouroboros/model/language_model.h"
#include "ouroboros/train/pipeline_state.h"

namespace ouroboros {

// 3: engine.micro_batches applies to Ouroboros too (format 2 files read as Ouroboros on whole
// batches); pending messages of micro-batches carry "micro". 2: the vocabulary as bytes
// (tokenizer.vocab_bytes, tokenizer.vocab_offsets), and for bpe and unigram the serialized
// sentencepiece model (tokenizer.model, uint8; for gpt2, added since, its tokenizer.json); 1, still
// read: as a list of strings, which Python cannot unpickle for byte vocabularies. The run's id
// ("run") came within format 3: a reader that does not know it never looks it up, and a file
// without it has none.
constexpr int64_t kCheckpointFormatVersion = 3;

struct Checkpoint {
  // The run that wrote it, 16 hex digits (a resumed run keeps it); "" in files written before
  // runs had ids.
  std::string run;
  Config config;
  Tokenizer tokenizer = Tokenizer::byte_level();
  ParamSet model;  // plain tensors (no grad)
  c10::impl::GenericDict optimizer{c10::StringType::get(), c10::AnyType::get()};
  int64_t step = 0;  // ticks completed
  uint64_t sampler_state = 0;
  std::vector<Tensor> generator_states;  // dropout generators, one per module
  std::map<int64_t, Tensor> memory;      // recurrent models: layer -> segment memory [B, M, C]
  // The batches in flight of a pipelined method (MethodState::pipeline); none saved = drained.
  PipelineState pipeline;
};

// FNV-1a (64 bit) of a tensor's bytes: the checksum stored for every model tensor.
int64_t tensor_checksum(const Tensor& t);

// Writes a temporary file of this process, fsyncs and renames it, so a crash never leaves a
// broken file at path and two writers never share a temporary name. Returns the bytes written.
int64_t save_checkpoint(const std::string& path, const Checkpoint& ck);
// Reads a single file or a sharded directory (is_sharded_checkpoint). Throws CheckpointError (one
// line: which file, what is wrong, how to fix), also when a model tensor does not match its
// checksum, a shard is missing or belongs to another checkpoint.
Checkpoint load_checkpoint(const std::string& path);
// The run id of a single file or a sharded directory's manifest ("" for none), read without the
// rest of the checkpoint. Throws CheckpointError for a file that is not a checkpoint.
std::string checkpoint_run(const std::string& path);
// The directory a checkpoint lies in: the one holding ckpt.pt or ckpt/ ("." for a bare name).
std::string checkpoint_dir(const std::string& path);

// One rank's part of a multi-process run's checkpoint: its workers' weights and optimizer state,
// the dropout generators and memories of its modules, and its batches in flight.
struct CheckpointShard {
  int64_t id = 0;  // the checkpoint's: every shard and the manifest carry it
  int64_t rank = 0, world = 1;
  ParamSet model;
  c10::impl::GenericDict optimizer{c10::StringType::get(), c10::AnyType::get()};
  std::map<int64_t, Tensor> generators;  // module (1-based) -> generator state
  std::map<int64_t, Tensor> memory;      // layer -> segment memory
  // This worker's entry of MethodState::pipeline (workers[rank]); none for a method that saves
  // none (it drains before a checkpoint).
  std::optional<WorkerInFlight> pipeline;
  int64_t pipeline_start = 0;  // MethodState::pipeline.start
};

// A sharded checkpoint is a directory: <id>/rank-<r>.pt, one file per rank, each written by its
// rank in parallel (atomically, a checksum per tensor), and manifest.pt, written last by rank 0
// (config, tokenizer, step, sampler state, the id and shard count). Each file opens with
// torch.load; `ouroboros export --format torch` joins them into one. Until a new manifest is
// renamed into place the previous one and its shards stay whole.
std::string shard_path(const std::string& dir, int64_t id, int64_t rank);
bool is_sharded_checkpoint(const std::string& path);
// Returns the bytes written.
int64_t save_shard(const std::string& dir, const CheckpointShard& shard);
// Rank 0, once every shard of `id` is written: the manifest of meta's config, tokenizer, step,
// sampler state and pipeline start, and the model's tensor names in order; then removes the
// shards of earlier checkpoints.
int64_t save_manifest(const std::string& dir, const Checkpoint& meta, int64_t id, int64_t world,
                      const std::vector<std::string>& names);
// Throws CheckpointError if the checkpoint's model shape or vocabulary differs from the run's.
void check_compatible(const Checkpoint& ck, const ModelConfig& model, const Tokenizer& tok,
                      const std::string& path);

}  // namespace ouroboros
