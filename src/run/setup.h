// What a training run checks and prepares before its first tick: the data against the run and
// the checkpoint it resumes, the out-dir, the machine's memory, and a checkpoint of another layout
// carried over. Private to the run layer.
#pragma once

#include <optional>
#include <string>

#include "ouroboros/core/config.h"
#include "ouroboros/data/dataset.h"
#include "ouroboros/model/language_model.h"
#include "ouroboros/plan/planner.h"
#include "ouroboros/train/checkpoint.h"
#include "ouroboros/train/method.h"

namespace ouroboros {

// Fails before out_dir is touched when the data cannot serve the run: another vocabulary than a
// resumed checkpoint's, or a valid split too short for the final evaluation. Sets a vocab_size
// of 0 to the tokenizer's.
void check_data(Config& cfg, const Dataset& ds, const std::optional<Checkpoint>& ck,
                const std::string& resume);

// Refused before anything is allocated: a run past the machine's memory would otherwise grow
// until the kernel kills it (estimated_memory_bytes against the physical memory). Returns the
// estimate.
// plan: Ouroboros' (make_plan of the config), read by the estimate; the other methods ignore it.
double check_fits_memory(const Config& cfg, const LanguageModel& model, const Plan& plan);

// A fresh run's id: 16 hex digits of a random 64-bit number.
std::string fresh_run_id();

// Refuses to write over another run's files, unless told to overwrite: a fresh run (resume "")
// over any run's, a resumed run over those of a run other than its checkpoint's (id `run`, ""
// for a checkpoint written before runs had ids). Files without an id count as another run's
// unless the out-dir is the checkpoint's own directory.
void check_out_dir(const Config& cfg, const std::string& ckpt, const std::string& resume,
                   const std::string& run, bool overwrite);

// Temporary files of a writer that died mid-write (the out-dir lock is held, so no other writer
// is at work): ckpt.pt.tmp.* beside a single file; a sharded directory's are removed with its
// next manifest.
void remove_partial_writes(const std::string& ckpt);

// What a checkpoint holds of its method, as the method restores it.
MethodState method_state(const Checkpoint& ck);

// A checkpoint of another layout resumes with what is keyed by name: the weights and optimizer
// moments (by parameter) and memories (by layer). Its batches in flight are first drained on the
// layout that wrote them (on threads of this process); dropout generators start afresh (they are
// per module or replica). Returns the notice to print, empty for the same layout.
std::string carry_to_layout(Checkpoint& ck, const Config& cfg, const LanguageModel& model,
                            const std::string& path);

}  // namespace ouroboros
