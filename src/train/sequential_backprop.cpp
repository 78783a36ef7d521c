// The reference trainer: forward, backward and update of the whole model, tick after tick.
#include "ouroboros/train/sequential_backprop.h"

namespace ouroboros {

SequentialBackprop::SequentialBackprop(const LanguageModel& model, ParamSet params,
                                       const TrainConfig& cfg)
    : model_(model),
      params_(std::move(params)),
      cfg_(cfg),
      optimizer_(cfg, params_),
      ctx_(training_context(cfg.seed, 1)) {
  if (cfg.diagnostics_interval > 0) optimizer_.set_tracking(true);
}

void SequentialBackprop::run(int64_t first, int64_t count, const BatchFn& batch,
                             const LossFn& on_loss) {
  for (int64_t t = first; t < first + count; ++t) {
    auto [x, y] = batch(t);
    Tensor loss = model_.loss(params_, x, y, ctx_);
    loss.backward();
    const bool applied = optimizer_.apply(learning_rate(cfg_, t), cfg_.grad_clip);
    const int64_t every = cfg_.diagnostics_interval;
    if (applied && every > 0 && (t + 1) % every == 0) {
      std::vector<size_t> all(params_.size());
      for (size_t i = 0; i < all.size(); ++i) all[i] = i;
      ModuleStats m = summarize(0, optimizer_.last_stats(), all);
      m.step = t + 1;
      diagnostics_.push_back(m);
    }
    on_loss(t, loss.item<double>());
  }
}

MethodState SequentialBackprop::state() const {
  MethodState s;
  s.optimizer = optimizer_.state_dict();
  s.generators = {ctx_.generator->get_state()};
  s.memory = ctx_.memory;
  return s;
}

void SequentialBackprop::restore(const MethodState& s, int64_t /*tick*/) {
  check_generator_count(s, 1, "modules");
  optimizer_.load_state_dict(s.optimizer);
  ctx_.generator->set_state(s.generators[0]);
  ctx_.memory = s.memory;
}

}  // namespace ouroboros
