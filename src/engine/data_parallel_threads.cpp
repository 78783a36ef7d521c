// Data parallelism on worker threads: each replica's gradient on its rows, averaged in a fixed
// order, one update.
#include "ouroboros/engine/data_parallel_threads.h"

namespace ouroboros {

DataParallelThreads::DataParallelThreads(const LanguageModel& model, ParamSet params,
                                         const Config& cfg)
    : model_(model), cfg_(cfg), params_(std::move(params)), optimizer_(cfg.train, params_) {
  const int64_t W = cfg.engine.workers;
  for (int64_t r = 0; r < W; ++r) {
    ParamSet alias;
    for (size_t i = 0; i < params_.size(); ++i) {
      alias.add(params_.names()[i], params_.tensors()[i].detach().requires_grad_(true));
    }
    replicas_.push_back(std::move(alias));
    contexts_.push_back(training_context(cfg.train.seed, r + 1));
  }
  team_ = std::make_unique<ThreadTeam>(W, cfg.train.threads);
}

DataParallelThreads::~DataParallelThreads() = default;

void DataParallelThreads::run(int64_t first, int64_t count, const BatchFn& batch,
                              const LossFn& on_loss) {
  const int64_t W = cfg_.engine.workers, Br = cfg_.train.batch_size / W;
  const int64_t P = static_cast<int64_t>(params_.size());
  std::vector<double> losses(static_cast<size_t>(W));
  for (int64_t t = first; t < first + count; ++t) {
    const Batch b = batch(t);
    const Tensor& x = b.first;  // [B, T]
    const Tensor& y = b.second;
    const std::function<void(int64_t)> replica_step = [&](int64_t r) {
      Tensor loss = model_.loss(replicas_[static_cast<size_t>(r)], x.narrow(0, r * Br, Br),
                                y.narrow(0, r * Br, Br), contexts_[static_cast<size_t>(r)]);
      losses[static_cast<size_t>(r)] = loss.item<double>();
      loss.backward();
    };
    team_->run(replica_step);
    // The all-reduce: worker r averages parameters r, r + W, ... over the replicas in order 0..W-1.
    const std::function<void(int64_t)> average = [&](int64_t r) {
      torch::NoGradGuard no_grad;
      for (int64_t i = r; i < P; i += W) {
        Tensor g;
        for (auto& rep : replicas_) {
          Tensor p = rep.tensors()[static_cast<size_t>(i)];
          if (!p.grad().defined()) continue;
          g = g.defined() ? g + p.grad() : p.grad();
          p.mutable_grad() = Tensor();
        }
        if (!g.defined()) continue;
        if (W > 1) g = g / static_cast<double>(W);
        params_.tensors()[static_cast<size_t>(i)].mutable_grad() = g;
      }
    };
    team_->run(average);
    optimizer_.apply(learning_rate(cfg_.train, t), cfg_.train.grad_clip);
    double sum = 0.0;
    for (double l : losses) sum += l;
    on_loss(t, W == 1 ? losses[0] : sum / static_cast<double>(W));
  }
}

MethodState DataParallelThreads::state() const {
  MethodState s;
  s.optimizer = optimizer_.state_dict();
  for (const auto& ctx : contexts_) s.generators.push_back(ctx.generator->get_state());
  return s;
}

void DataParallelThreads::restore(const MethodState& s, int64_t /*tick*/) {
  check_generator_count(s, contexts_.size(), "replicas");
  optimizer_.load_state_dict(s.optimizer);
  for (size_t r = 0; r < s.generators.size(); ++r)
    contexts_[r].generator->set_state(s.generators[r]);
}

std::string DataParallelThreads::describe() const {
  return "data-parallel: " + std::to_string(cfg_.engine.workers) + " replicas x " +
         std::to_string(cfg_.train.batch_size / cfg_.engine.workers) + " sequences\n";
}

}  // namespace ouroboros
