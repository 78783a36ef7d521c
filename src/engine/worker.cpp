// The executor of one worker's schedule row: forward with the live weights (kept as a frozen copy
// while the backward is delayed), backward on the error that arrived a tick earlier, update.
#include "ouroboros/engine/worker.h"

#include <algorithm>
#include <limits>
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

Worker::Worker(const LanguageModel& model, const Partition& partition, int64_t rank,
               const ParamSet& all, const Config& cfg, Transport& transport)
    : model_(model),
      partition_(partition),
      rank_(rank),
      train_cfg_(cfg.train),
      engine_cfg_(cfg.engine),
      transport_(transport),
      params_(all.subset(worker_param_names(model, partition, all, rank))),
      optimizer_(cfg.train, params_, delay_correction_scale(cfg.engine)) {
  for (int64_t k : partition.modules_of_worker(rank)) {
    module_params_[k] = all.subset(model.module_param_names(partition.module(k)));
    contexts_[k] = training_context(cfg.train.seed, k);
    peak_in_flight_[k] = 0;
    in_flight_[k];
  }
  message_shape_ = {cfg.train.batch_size, cfg.model.block_size, cfg.model.n_embd};
  // The tied V sits in module 1 (delay K-1) and module K (delay 0): its learning rate is the
  // fresh side's, and its statistics are reported with module K (it updates from tick 0).
  param_delay_.assign(params_.size(), std::numeric_limits<int64_t>::max());
  std::vector<int64_t> here = partition.modules_of_worker(rank);
  std::sort(here.rbegin(), here.rend());
  for (int64_t k : here) {
    const int64_t d = partition.module(k).delay();
    for (const auto& name : module_params_.at(k).names()) {
      const size_t i = params_.index(name);
      // Modules come K first, so a parameter is reported with the first module that holds it.
      if (param_delay_[i] == std::numeric_limits<int64_t>::max()) module_index_[k].push_back(i);
      param_delay_[i] = std::min(param_delay_[i], d);
    }
  }
  if (cfg.train.diagnostics_interval > 0) optimizer_.set_tracking(true);
}

std::vector<ModuleStats> Worker::take_diagnostics() { return std::exchange(diagnostics_, {}); }

std::vector<double> Worker::lr_scale(const TickWindow& w) const {
  if (w.synchronous || engine_cfg_.stale_lr == StaleLr::kNone) return {};
  std::vector<double> scale;
  for (int64_t d : param_delay_) scale.push_back(stale_lr_factor(engine_cfg_, d, w.tick));
  return scale;
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
    throw PlanError(
        "worker " + std::to_string(rank_) + " needs " + m.to_string() + " but it never arrived",
        "the schedule is inconsistent");
  }
  Tensor t = std::move(it->second);
  mailbox_.erase(it);
  return t;
}

namespace {
// The tick at which the peer's row receives the message a send op of tick t carries: the receive
// op of the same message runs at lag recv.lag behind it, so at t - send.lag + recv.lag.
int64_t receive_tick(const Schedule& schedule, const Op& send, int64_t t) {
  const OpKind want = send.kind == OpKind::SendErr ? OpKind::RecvErr : OpKind::RecvAct;
  for (const Op& op : schedule.workers.at(send.peer)) {
    if (op.kind == want && op.index == send.index) return t - send.lag + op.lag;
  }
  return t;
}
}  // namespace

void Worker::run_tick(const Schedule& schedule, const TickWindow& w, const BatchFn* batch,
                      const LossFn* on_loss) {
  // What a checkpoint between ticks must send again. A drain tick (t >= horizon) receives
  // everything sent before it and its own sends, so a drained pipeline keeps none.
  const bool draining = w.tick >= w.horizon;
  sent_.erase(std::remove_if(sent_.begin(), sent_.end(),
                             [&](const Sent& m) { return draining || m.recv_tick < w.tick; }),
              sent_.end());
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
        const MessageKey key{err, op.index, s};
        Tensor t = take_local({err, op.index, s});
        const int64_t at = receive_tick(schedule, op, w.tick);
        if (at > w.tick && !draining) sent_.push_back({op.peer, key, t, at});
        transport_.send(op.peer, key, t);
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
        update(w);
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
    rec.tokens = x;
    targets_[s] = y;
  } else {
    input = take_local({false, k - 1, s}).detach().requires_grad_(true);
    rec.input = input;
  }
  // A delayed backward needs the weights this forward used; the live ones change in place.
  rec.snapshot = plan.delay() > 0 && !w.synchronous;
  if (!rec.snapshot) {
    rec.version = module_params_.at(k);
  } else if (predicts_weights(engine_cfg_)) {
    // The copy is moved to where the weights will be when this batch's gradient arrives.
    rec.version = optimizer_.predict(
        module_params_.at(k), prediction_horizon(engine_cfg_, plan.delay()) * w.lr, lr_scale(w));
  } else {
    rec.version = module_params_.at(k).snapshot();
  }
  Tensor targets;
  if (plan.head) {
    targets = targets_.at(s);
    targets_.erase(s);
  }
  ForwardContext& ctx = contexts_.at(k);
  if (!plan.head) {  // what a checkpoint needs to run this forward again (save_pipeline)
    rec.generator_before = ctx.generator->get_state();
    rec.memory_before = ctx.memory;
  }
  rec.output = model_.forward_module(rec.version, plan, input, targets, ctx);
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
    // An error received from another process arrives on the CPU.
    Tensor err = take_local({true, k, s}).to(rec.output.device());
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

void Worker::update(const TickWindow& w) {
  if (before_update_) before_update_(params_);
  // A no-op until the pipeline has filled.
  const bool applied = optimizer_.apply(w.lr, train_cfg_.grad_clip, lr_scale(w),
                                        w.synchronous ? std::vector<int64_t>{} : param_delay_);
  const int64_t every = train_cfg_.diagnostics_interval;
  if (!applied || every <= 0 || (w.tick + 1) % every != 0) return;
  for (const auto& [k, idx] : module_index_) {
    ModuleStats m = summarize(k, optimizer_.last_stats(), idx);
    if (!m.updated) continue;  // e.g. module K during a drain
    m.step = w.tick + 1;
    diagnostics_.push_back(m);
  }
}

}  // namespace ouroboros

namespace ouroboros {

WorkerInFlight Worker::save_pipeline(int64_t next_tick) const {
  WorkerInFlight out;
  for (const auto& [k, batches] : in_flight_) {
    std::vector<BatchInFlight>& saved = out.modules[k];
    for (const auto& [s, rec] : batches) {
      if (partition_.module(k).head) {
        throw Error(
            "module " + std::to_string(k) + " holds batch " + std::to_string(s) + " between ticks",
            "the schedule back-propagates the last module at once");
      }
      BatchInFlight b;
      b.batch = s;
      b.snapshot = rec.snapshot;
      if (rec.snapshot) {
        for (const Tensor& t : rec.version.tensors()) b.weights.push_back(t.detach());
      }
      b.input = rec.tokens.defined() ? rec.tokens : rec.input.detach();
      b.generator = rec.generator_before;
      b.memory = rec.memory_before;
      saved.push_back(std::move(b));
    }
  }
  out.targets = targets_;
  for (const auto& [key, t] : mailbox_) {
    out.mailbox.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key), t});
  }
  for (const Sent& m : sent_) {
    if (m.recv_tick < next_tick) continue;  // taken already
    out.sent.push_back({m.key.error, m.key.boundary, m.key.batch, m.tensor, m.peer, m.recv_tick});
  }
  return out;
}

void Worker::restore_pipeline(const WorkerInFlight& saved) {
  for (auto& [k, batches] : in_flight_) batches.clear();
  targets_ = saved.targets;
  mailbox_.clear();
  sent_.clear();
  for (auto& [k, batches] : in_flight_) {
    const auto it = saved.modules.find(k);
    if (it != saved.modules.end()) replay_forwards(k, it->second);
  }
  for (const PendingMessage& m : saved.mailbox) mailbox_[{m.error, m.boundary, m.batch}] = m.tensor;
  for (const PendingMessage& m : saved.sent) {
    Sent sent{m.peer, {m.error, m.boundary, m.batch}, m.tensor, m.recv_tick};
    // Sent again as in the tick before its receiver's: an asynchronous transport then waits for
    // it where it waited for the original, after the receiver's tick has begun.
    transport_.begin_tick(sent.recv_tick - 1);
    transport_.send(sent.peer, sent.key, sent.tensor);
    sent_.push_back(std::move(sent));
  }
}

// Module k's saved forwards run again, each from its own weights, input, generator and memories,
// so that their backwards find their graphs; the module's generator and memories are left as
// restore_state set them (the state between the ticks).
void Worker::replay_forwards(int64_t k, const std::vector<BatchInFlight>& saved) {
  torch::NoGradGuard outer;  // re-enabled around each forward below
  const ModulePlan& plan = partition_.module(k);
  ForwardContext& ctx = contexts_.at(k);
  const Tensor generator_now = ctx.generator->get_state();
  const std::map<int64_t, Tensor> memory_now = ctx.memory;
  std::map<int64_t, InFlight>& batches = in_flight_.at(k);
  const ParamSet& live = module_params_.at(k);
  for (const BatchInFlight& b : saved) {
    InFlight rec;
    rec.snapshot = b.snapshot;
    if (rec.snapshot) {
      if (b.weights.size() != live.size()) {
        throw Error("the saved pipeline of module " + std::to_string(k) + " holds " +
                        std::to_string(b.weights.size()) + " weights, the module " +
                        std::to_string(live.size()),
                    "resume with the layout that wrote it");
      }
      for (size_t i = 0; i < live.size(); ++i) {  // a copy where the live weight is
        rec.version.add(
            live.names()[i],
            b.weights[i].to(live.tensors()[i].device(), false, true).requires_grad_(true));
      }
    } else {
      rec.version = live;
    }
    Tensor input = b.input;
    if (plan.embed) {
      rec.tokens = input;
    } else {
      input = input.clone().requires_grad_(true);
      rec.input = input;
    }
    rec.generator_before = b.generator;
    rec.memory_before = b.memory;
    ctx.generator->set_state(rec.generator_before);
    ctx.memory = rec.memory_before;
    {
      torch::AutoGradMode grad(true);
      rec.output = model_.forward_module(rec.version, plan, input, Tensor(), ctx);
    }
    batches.emplace(b.batch, std::move(rec));
    peak_in_flight_[k] =
        std::max<int64_t>(peak_in_flight_[k], static_cast<int64_t>(batches.size()));
  }
  ctx.generator->set_state(generator_now);
  ctx.memory = memory_now;
}

}  // namespace ouroboros
