// GPipe: one stage per worker, micro-batches through the Ouroboros ring placement, one flush and
// one update per step; the trainer runs the stages on worker threads (dist/gpipe_processes.h on
// processes).
#include "ouroboros/engine/gpipe_threads.h"

#include <map>

#include "ouroboros/core/errors.h"
#include "ouroboros/engine/worker.h"

namespace ouroboros {

GPipeStage::GPipeStage(const LanguageModel& model, const Plan& plan, int64_t worker,
                       const ParamSet& all, const Config& cfg)
    : model_(model),
      plan_(plan),
      cfg_(cfg),
      worker_(worker),
      params_(all.subset(worker_param_names(model, plan.partition, all, worker))),
      optimizer_(cfg.train, params_) {
  for (int64_t k : plan.partition.modules_of_worker(worker)) {
    module_params_[k] = all.subset(model.module_param_names(plan.partition.module(k)));
    contexts_[k] = training_context(cfg.train.seed, k);
  }
}

void GPipeStage::collect_state(MethodState& s) const {
  merge_optimizer_state(s.optimizer, optimizer_.state_dict());
  for (const auto& [k, ctx] : contexts_) {
    s.generators[static_cast<size_t>(k - 1)] = ctx.generator->get_state();
  }
}

void GPipeStage::restore_state(const MethodState& s) {
  optimizer_.load_state_dict(s.optimizer);
  for (auto& [k, ctx] : contexts_)
    ctx.generator->set_state(s.generators[static_cast<size_t>(k - 1)]);
}

GPipeThreads::GPipeThreads(const LanguageModel& model, ParamSet params, const Config& cfg)
    : model_(model),
      cfg_(cfg),
      params_(std::move(params)),
      plan_(make_plan(cfg, model.cost_model(cfg.train.batch_size))) {
  const int64_t W = plan_.partition.num_workers();
  for (int64_t w = 0; w < W; ++w) {
    transports_.push_back(hub_.endpoint(w));
    stages_.push_back(std::make_unique<GPipeStage>(model_, plan_, w, params_, cfg_));
  }
  team_ = std::make_unique<ThreadTeam>(W, cfg.train.threads,
                                       [this] { hub_.abort("a gpipe worker failed"); });
}

GPipeThreads::~GPipeThreads() = default;

void GPipeStage::run(Transport& tr, int64_t first, int64_t count, const BatchFn* batch,
                     const LossFn* on_loss) {
  const int64_t w = worker_;
  const Partition& part = plan_.partition;
  const int64_t K = part.K, M = plan_.micro_batches;
  const int64_t Bm = cfg_.train.batch_size / M;
  const std::vector<int64_t> shape = {Bm, cfg_.model.block_size, cfg_.model.n_embd};
  auto worker_of = [&](int64_t k) { return module_worker(K, k); };
  for (int64_t t = first; t < first + count; ++t) {
    tr.begin_tick(t);  // the sends of step t - 2 have been received (each step flushes)
    if (w == 0) {
      auto [x, y] = (*batch)(t);
      // Module 1: every micro-batch back to back; the ring works on them meanwhile.
      std::vector<Tensor> h1(static_cast<size_t>(M));
      for (int64_t m = 0; m < M; ++m) {
        Tensor h = model_.forward_module(module_params_.at(1), part.module(1),
                                         x.narrow(0, m * Bm, Bm), Tensor(), contexts_.at(1));
        tr.send(worker_of(2), MessageKey{false, 1, t * M + m}, h.detach());
        h1[static_cast<size_t>(m)] = h;
      }
      // Module K: forward and backward each micro-batch as its activation arrives.
      double loss_sum = 0.0;
      for (int64_t m = 0; m < M; ++m) {
        Tensor a = tr.recv(worker_of(K - 1), MessageKey{false, K - 1, t * M + m}, shape)
                       .detach()
                       .requires_grad_(true);
        Tensor loss = model_.forward_module(module_params_.at(K), part.module(K), a,
                                            y.narrow(0, m * Bm, Bm), contexts_.at(K));
        loss_sum += loss.item<double>();
        (M == 1 ? loss : loss / static_cast<double>(M)).backward();
        tr.send(worker_of(K - 1), MessageKey{true, K - 1, t * M + m}, a.grad());
      }
      // Module 1: backward as the errors come back round the ring.
      for (int64_t m = 0; m < M; ++m) {
        Tensor e = tr.recv(worker_of(2), MessageKey{true, 1, t * M + m}, shape);
        const Tensor& out = h1[static_cast<size_t>(m)];
        torch::autograd::backward({out}, {e.to(out.device())});
        h1[static_cast<size_t>(m)] = Tensor();
      }
      optimizer_.apply(learning_rate(cfg_.train, t), cfg_.train.grad_clip);
      (*on_loss)(t, loss_sum / static_cast<double>(M));
    } else {
      const int64_t k = w + 1;  // the middle module this worker holds
      std::vector<std::pair<Tensor, Tensor>> io(static_cast<size_t>(M));
      for (int64_t m = 0; m < M; ++m) {
        Tensor a = tr.recv(worker_of(k - 1), MessageKey{false, k - 1, t * M + m}, shape)
                       .detach()
                       .requires_grad_(true);
        Tensor h = model_.forward_module(module_params_.at(k), part.module(k), a, Tensor(),
                                         contexts_.at(k));
        tr.send(worker_of(k + 1), MessageKey{false, k, t * M + m}, h.detach());
        io[static_cast<size_t>(m)] = {a, h};
      }
      for (int64_t m = 0; m < M; ++m) {
        auto& [a, h] = io[static_cast<size_t>(m)];
        Tensor e = tr.recv(worker_of(k + 1), MessageKey{true, k, t * M + m}, shape);
        torch::autograd::backward({h}, {e.to(h.device())});
        tr.send(worker_of(k - 1), MessageKey{true, k - 1, t * M + m}, a.grad());
        a = Tensor();
        h = Tensor();
      }
      optimizer_.apply(learning_rate(cfg_.train, t), cfg_.train.grad_clip);
    }
  }
}

void GPipeThreads::run(int64_t first, int64_t count, const BatchFn& batch, const LossFn& on_loss) {
  team_->run([&](int64_t w) {
    const auto i = static_cast<size_t>(w);
    stages_[i]->run(*transports_[i], first, count, &batch, &on_loss);
  });
}

MethodState GPipeThreads::state() const {
  MethodState s;
  s.generators.resize(static_cast<size_t>(plan_.partition.K));
  for (const auto& st : stages_) st->collect_state(s);
  return s;
}

void GPipeThreads::restore(const MethodState& s, int64_t /*tick*/) {
  check_generator_count(s, static_cast<size_t>(plan_.partition.K), "modules");
  for (auto& st : stages_) st->restore_state(s);
}

std::string GPipeThreads::describe() const {
  return "gpipe: " + std::to_string(plan_.micro_batches) + " micro-batches per step\n" +
         plan_.partition.describe(plan_.cost);
}

}  // namespace ouroboros
