// torch.save files for the checkpoint code: bytes checked before libtorch trusts them, and
// writes a crash cannot tear (not part of the public API).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/train/pipeline_state.h"

namespace ouroboros::checkpoint_detail {

// Every tensor in a nested value (dicts, lists, tuples), with the key of the innermost dict
// entry holding it (`name` outside any).
template <typename F>
void for_each_tensor(const c10::IValue& v, const std::string& name, F&& visit) {
  if (v.isTensor()) visit(name, v.toTensor());
  if (v.isGenericDict()) {
    for (const auto& item : v.toGenericDict()) {
      for_each_tensor(item.value(), item.key().isString() ? item.key().toStringRef() : name, visit);
    }
  }
  if (v.isList()) {
    for (const c10::IValue& x : v.toListRef()) for_each_tensor(x, name, visit);
  }
  if (v.isTuple()) {
    for (const c10::IValue& x : v.toTupleRef().elements()) for_each_tensor(x, name, visit);
  }
}

// A tensor as save_checkpoint writes it: contiguous and within its storage. A damaged size or
// stride field (a zero stride over a huge shape, say) would otherwise be materialised by the
// first copy, gigabytes from a few kilobytes (found by fuzzing). Throws CheckpointError.
void check_layout(const std::string& path, const std::string& name, const at::Tensor& t);
// check_layout on every tensor of a nested value (optimizer state, pipeline).
void check_layouts(const std::string& path, const std::string& name, const c10::IValue& v);

// torch.save's bytes of a nested value, its tensors on the CPU (a GPU run's checkpoint loads
// anywhere).
std::vector<char> pickled(const c10::IValue& v);

// The value the torch.save file at `path` holds, read only after its zip directory, pickle and
// storages are found possible; one CheckpointError line ("<what> <path> ...") otherwise.
c10::IValue read_torch_file(const std::string& path, const std::string& what);

// Written to a temporary file of this process, flushed to the disk, then renamed: a crash leaves
// the old file or the new one, and concurrent writers never share a temporary name. Returns the
// bytes written.
int64_t write_atomically(const std::string& path, const std::vector<char>& bytes);

// The hint of every error about a file that cannot be what ouroboros wrote.
constexpr const char kDamagedHint[] = "it was not written by ouroboros or is damaged";

// An empty dictionary of string keys, the kind every level of a checkpoint file is.
c10::impl::GenericDict new_dict();

// The batches in flight as the file's dictionaries (src/train/checkpoint_pipeline.cpp), and back:
// a whole pipeline (a single file's "pipeline" entry) and one worker's share (a shard's). Reading
// throws std::exception where an entry is missing or of the wrong kind.
c10::impl::GenericDict pipeline_dict(const PipelineState& p);
PipelineState pipeline_of(const c10::impl::GenericDict& d);
c10::impl::GenericDict worker_dict(const WorkerInFlight& w);
WorkerInFlight worker_of(const c10::impl::GenericDict& d);

}  // namespace ouroboros::checkpoint_detail
