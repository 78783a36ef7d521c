// The executor of one worker's schedule row: forward with the live weights (kept as a frozen copy
// while the backward is delayed), backward on the error that arrived a tick earlier, update.
#include "ouroboros/engine/worker.h"

#include <algorithm>
#include <set>

#include "ouroboros/core/errors.h"

namespace ouroboros {

std::vector<std::string> worker_param_names(const LanguageModel& model, const Partition& partition,
                                            const ParamSet& all, int64_t worker) {
  std::set<std::string> mine;
  for (int64_t k : partition.modules_of_worker(worker)) {
    for (auto& n : model.module_param_names(partition.module(k))) mine.insert(n);
  }
  std::vector<std::string> ordered;
  for (const auto& n : all.names()) {
    if (mine.count(n)) ordered.push_back(n);
  }
  return ordered;
}

Worker::Worker(const LanguageModel& model, const Partition& partition, int64_t rank, const ParamSet& all,
               const Config& cfg, Transport& transport)
    : model_(model),
      partition_(partition),
      rank_(rank),
      train_cfg_(cfg.train),
      transport_(transport),
      params_(all.subset(worker_param_names(model, partition, all, rank))),
      optimizer_(cfg.train, params_) {
  for (int64_t k : partition.modules_of_worker(rank)) {
    module_params_[k] = all.subset(model.module_param_names(partition.module(k)));
    contexts_[k] = training_context(cfg.train.seed, k);
    peak_in_flight_[k] = 0;
    in_flight_[k];
  }
  message_shape_ = {cfg.train.batch_size, cfg.model.block_size, cfg.model.n_embd};
}

std::vector<int64_t> Worker::modules() const { return partition_.modules_of_worker(rank_); }

void Worker::collect_state(MethodState& s) const {
  merge_optimizer_state(s.optimizer, optimizer_.state_dict());
  for (const auto& [k, ctx] : contexts_) {
    s.generators.at(static_cast<size_t>(k - 1)) = ctx.generator->get_state();
    collect_memory(ctx, s.memory);
  }
}

void Worker::restore_state(const MethodState& s) {
  optimizer_.load_state_dict(s.optimizer);
  for (auto& [k, ctx] : contexts_) {
    ctx.generator->set_state(s.generators.at(static_cast<size_t>(k - 1)));
    restore_memory(ctx, partition_.module(k), s.memory);
  }
}

int64_t Worker::in_flight() const {
  int64_t n = 0;
  for (const auto& [k, m] : in_flight_) n += static_cast<int64_t>(m.size());
  return n;
}

Tensor Worker::take_local(const LocalKey& key) {
  auto it = mailbox_.find(key);
  if (it == mailbox_.end()) {
    MessageKey m{std::get<0>(key), std::get<1>(key), std::get<2>(key)};
    throw PlanError("worker " + std::to_string(rank_) + " needs " + m.to_string() +
                    " but it never arrived", "the schedule is inconsistent");
  }
  Tensor t = std::move(it->second);
  mailbox_.erase(it);
  return t;
}

void Worker::run_tick(const Schedule& schedule, const TickWindow& w, const BatchFn* batch,
                      const LossFn* on_loss) {
  for (const Op& op : schedule.workers.at(rank_)) {
    const int64_t s = w.tick - op.lag;
    if (op.kind != OpKind::Update && (s < w.start || s >= w.horizon)) continue;
    switch (op.kind) {
      case OpKind::Forward:
        forward(op.index, s, w, batch, on_loss);
        break;
      case OpKind::Backward:
        backward(op.index, s);
        break;
      case OpKind::SendAct:
      case OpKind::SendErr: {
        const bool err = op.kind == OpKind::SendErr;
        transport_.send(op.peer, MessageKey{err, op.index, s}, take_local({err, op.index, s}));
        break;
      }
      case OpKind::RecvAct:
      case OpKind::RecvErr: {
        const bool err = op.kind == OpKind::RecvErr;
        mailbox_[{err, op.index, s}] =
            transport_.recv(op.peer, MessageKey{err, op.index, s}, message_shape());
        break;
      }
      case OpKind::Update:
        update(w.lr);
        break;
    }
  }
}

void Worker::forward(int64_t k, int64_t s, const TickWindow& w, const BatchFn* batch_fn,
                     const LossFn* on_loss) {
  const ModulePlan& plan = partition_.module(k);
  InFlight rec;
  Tensor input;
  if (plan.embed) {
    auto [x, y] = (*batch_fn)(s);
    input = x;
    targets_[s] = y;
  } else {
    input = take_local({false, k - 1, s}).detach().requires_grad_(true);
    rec.input = input;
  }
  // A delayed backward needs the weights this forward used; the live ones change in place.
  rec.snapshot = plan.delay() > 0 && !w.synchronous;
  rec.version = rec.snapshot ? module_params_.at(k).snapshot() : module_params_.at(k);
  Tensor targets;
  if (plan.head) {
    targets = targets_.at(s);
    targets_.erase(s);
  }
  rec.output = model_.forward_module(rec.version, plan, input, targets, contexts_.at(k));
  if (plan.head) {
    if (on_loss) (*on_loss)(s, rec.output.item<double>());
  } else {
    mailbox_[{false, k, s}] = rec.output.detach();
  }
  auto& mine = in_flight_.at(k);
  mine.emplace(s, std::move(rec));
  peak_in_flight_[k] = std::max<int64_t>(peak_in_flight_[k], static_cast<int64_t>(mine.size()));
}

void Worker::backward(int64_t k, int64_t s) {
  auto& mine = in_flight_.at(k);
  auto it = mine.find(s);
  if (it == mine.end()) {
    throw PlanError("module " + std::to_string(k) + " has no forward of batch " +
                    std::to_string(s) + " to back-propagate");
  }
  InFlight rec = std::move(it->second);
  mine.erase(it);
  if (partition_.module(k).head) {
    rec.output.backward();
  } else {
    Tensor err = take_local({true, k, s});
    torch::autograd::backward({rec.output}, {err});
  }
  if (!partition_.module(k).embed) mailbox_[{true, k - 1, s}] = rec.input.grad();
  if (!rec.snapshot) return;
  // The gradient at the old weights is applied to the live ones (the tied wte sums both sides).
  const ParamSet& live = module_params_.at(k);
  for (size_t i = 0; i < live.size(); ++i) {
    const Tensor& g = rec.version.tensors()[i].grad();
    if (!g.defined()) continue;
    Tensor p = live.tensors()[i];
    if (p.grad().defined()) {
      p.mutable_grad() = p.grad() + g;
    } else {
      p.mutable_grad() = g;
    }
  }
}

void Worker::update(double lr) {
  if (before_update_) before_update_(params_);
  optimizer_.apply(lr, train_cfg_.grad_clip);  // a no-op until the pipeline has filled
}

}  // namespace ouroboros
