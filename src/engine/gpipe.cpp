// GPipe on worker threads: micro-batches through the Ouroboros ring placement, one flush and one
// update per step.
#include "ouroboros/engine/gpipe.h"

#include <map>

#include "ouroboros/core/errors.h"
#include "ouroboros/engine/worker.h"

namespace ouroboros {

struct GPipeTrainer::Stage {
  Stage(const LanguageModel& model, const Partition& partition, int64_t rank, const ParamSet& all,
        const Config& cfg)
      : rank(rank),
        params(all.subset(worker_param_names(model, partition, all, rank))),
        optimizer(cfg.train, params) {
    for (int64_t k : partition.modules_of_worker(rank)) {
      module_params[k] = all.subset(model.module_param_names(partition.module(k)));
      contexts[k] = training_context(cfg.train.seed, k);
    }
  }
  int64_t rank;
  ParamSet params;
  Optimizer optimizer;
  std::map<int64_t, ParamSet> module_params;
  std::map<int64_t, ForwardContext> contexts;
};

GPipeTrainer::GPipeTrainer(const LanguageModel& model, ParamSet params, const Config& cfg)
    : model_(model), cfg_(cfg), params_(std::move(params)), plan_(make_plan(cfg, model.cost_model(cfg.train.batch_size))) {
  const int64_t W = plan_.partition.num_workers();
  for (int64_t w = 0; w < W; ++w) {
    transports_.push_back(hub_.endpoint(w));
    stages_.push_back(std::make_unique<Stage>(model_, plan_.partition, w, params_, cfg_));
  }
  team_ = std::make_unique<ThreadTeam>(W, cfg.train.threads,
                                       [this] { hub_.abort("a gpipe worker failed"); });
}

GPipeTrainer::~GPipeTrainer() = default;

void GPipeTrainer::run_worker(int64_t w, int64_t first, int64_t count, const BatchFn* batch,
                              const LossFn* on_loss) {
  Stage& st = *stages_[w];
  Transport& tr = *transports_[w];
  const Partition& part = plan_.partition;
  const int64_t K = part.K, M = cfg_.engine.micro_batches;
  const int64_t Bm = cfg_.train.batch_size / M;
  const std::vector<int64_t> shape = {Bm, cfg_.model.block_size, cfg_.model.n_embd};
  auto worker_of = [&](int64_t k) { return module_worker(K, k); };
  for (int64_t t = first; t < first + count; ++t) {
    if (w == 0) {
      auto [x, y] = (*batch)(t);
      // Module 1: every micro-batch back to back; the ring works on them meanwhile.
      std::vector<Tensor> h1(static_cast<size_t>(M));
      for (int64_t m = 0; m < M; ++m) {
        Tensor h = model_.forward_module(st.module_params.at(1), part.module(1),
                                         x.narrow(0, m * Bm, Bm), Tensor(), st.contexts.at(1));
        tr.send(worker_of(2), MessageKey{false, 1, t * M + m}, h.detach());
        h1[static_cast<size_t>(m)] = h;
      }
      // Module K: forward and backward each micro-batch as its activation arrives.
      double loss_sum = 0.0;
      for (int64_t m = 0; m < M; ++m) {
        Tensor a = tr.recv(worker_of(K - 1), MessageKey{false, K - 1, t * M + m}, shape)
                       .detach()
                       .requires_grad_(true);
        Tensor loss = model_.forward_module(st.module_params.at(K), part.module(K), a,
                                            y.narrow(0, m * Bm, Bm), st.contexts.at(K));
        loss_sum += loss.item<double>();
        (M == 1 ? loss : loss / static_cast<double>(M)).backward();
        tr.send(worker_of(K - 1), MessageKey{true, K - 1, t * M + m}, a.grad());
      }
      // Module 1: backward as the errors come back round the ring.
      for (int64_t m = 0; m < M; ++m) {
        Tensor e = tr.recv(worker_of(2), MessageKey{true, 1, t * M + m}, shape);
        torch::autograd::backward({h1[static_cast<size_t>(m)]}, {e});
        h1[static_cast<size_t>(m)] = Tensor();
      }
      st.optimizer.apply(learning_rate(cfg_.train, t), cfg_.train.grad_clip);
      (*on_loss)(t, loss_sum / static_cast<double>(M));
    } else {
      const int64_t k = w + 1;  // the middle module this worker holds
      std::vector<std::pair<Tensor, Tensor>> io(static_cast<size_t>(M));
      for (int64_t m = 0; m < M; ++m) {
        Tensor a = tr.recv(worker_of(k - 1), MessageKey{false, k - 1, t * M + m}, shape)
                       .detach()
                       .requires_grad_(true);
        Tensor h = model_.forward_module(st.module_params.at(k), part.module(k), a, Tensor(),
                                         st.contexts.at(k));
        tr.send(worker_of(k + 1), MessageKey{false, k, t * M + m}, h.detach());
        io[static_cast<size_t>(m)] = {a, h};
      }
      for (int64_t m = 0; m < M; ++m) {
        auto& [a, h] = io[static_cast<size_t>(m)];
        Tensor e = tr.recv(worker_of(k + 1), MessageKey{true, k, t * M + m}, shape);
        torch::autograd::backward({h}, {e});
        tr.send(worker_of(k - 1), MessageKey{true, k - 1, t * M + m}, a.grad());
        a = Tensor();
        h = Tensor();
      }
      st.optimizer.apply(learning_rate(cfg_.train, t), cfg_.train.grad_clip);
    }
  }
}

void GPipeTrainer::run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) {
  team_->run([&](int64_t w) { run_worker(w, first, count, &batch, &on_loss); });
}

MethodState GPipeTrainer::state() const {
  MethodState s;
  s.generators.resize(static_cast<size_t>(plan_.partition.K));
  for (const auto& st : stages_) {
    merge_optimizer_state(s.optimizer, st->optimizer.state_dict());
    for (auto& [k, ctx] : st->contexts) {
      s.generators[static_cast<size_t>(k - 1)] = ctx.generator->get_state();
    }
  }
  return s;
}

void GPipeTrainer::restore(const MethodState& s, int64_t /*tick*/) {
  check_generator_count(s, static_cast<size_t>(plan_.partition.K), "modules");
  for (auto& st : stages_) {
    st->optimizer.load_state_dict(s.optimizer);
    for (auto& [k, ctx] : st->contexts) ctx.generator->set_state(s.generators[static_cast<size_t>(k - 1)]);
  }
}

std::string GPipeTrainer::describe() const {
  return "gpipe: " + std::to_string(cfg_.engine.micro_batches) + " micro-batches per step\n" +
         plan_.partition.describe(plan_.cost);
}

}  // namespace ouroboros
