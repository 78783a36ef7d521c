// What every method shares: dropout seeding, training contexts, and the checkpoint state helpers.
#include "ouroboros/train/method.h"

#include "ouroboros/core/errors.h"

namespace ouroboros {

uint64_t dropout_seed(uint64_t seed, int64_t module) {
  return seed * 1000003ULL + static_cast<uint64_t>(module) * 7919ULL;
}

ForwardContext training_context(int64_t seed, int64_t module) {
  ForwardContext ctx;
  ctx.training = true;
  ctx.generator = make_generator(dropout_seed(static_cast<uint64_t>(seed), module));
  return ctx;
}

void check_generator_count(const MethodState& s, size_t expected, const std::string& of_what) {
  if (s.generators.size() == expected) return;
  throw CheckpointError("checkpoint holds " + std::to_string(s.generators.size()) +
                            " dropout generators, the run has " + std::to_string(expected) + " " +
                            of_what,
                        "resume with the --mode, --modules and --workers the checkpoint was "
                        "written with");
}

void collect_memory(const ForwardContext& ctx, std::map<int64_t, Tensor>& into) {
  for (const auto& [layer, t] : ctx.memory) into[layer] = t;
}

void restore_memory(ForwardContext& ctx, const ModulePlan& m,
                    const std::map<int64_t, Tensor>& all) {
  ctx.memory.clear();
  for (int64_t i = m.first_block; i < m.end_block; ++i) {
    if (all.count(i)) ctx.memory[i] = all.at(i);
  }
}

void merge_optimizer_state(c10::impl::GenericDict& into, const c10::impl::GenericDict& from) {
  for (const auto& item : from) into.insert_or_assign(item.key(), item.value());
}

}  // namespace ouroboros
