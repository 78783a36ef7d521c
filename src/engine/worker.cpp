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

Worker::Worker(const LanguageModel& model, const Plan& plan, int64_t rank, const ParamSet& all,
               const Config& cfg, Transport& transport)
    : model_(model),
      partition_(plan.partition),
      rank_(rank),
      train_cfg_(cfg.train),
      engine_cfg_(cfg.engine),
      transport_(transport),
      params_(all.subset(worker_param_names(model, plan.partition, all, rank))),
      optimizer_(cfg.train, params_, delay_correction_scale(cfg.engine)) {
  const Partition& partition = plan.partition;
  micro_batches_ = plan.micro_batches;
  recompute_ = cfg.engine.recompute == Recompute::kDelayed;
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
    MessageKey m{std::get<0>(key), std::get<1>(key), std::get<2>(key), std::get<3>(key)};
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
    if (op.kind == want && op.index == send.index && op.micro == send.micro)
      return t - send.lag + op.lag;
  }
  return t;
}
}  // namespace

void Worker::run_tick(const Schedule& schedule, const TickWindow& w, const BatchFn* batch,
                      const LossFn* on_loss) {
  if (schedule.micro_batches != micro_batches_) {
    throw PlanError("worker " + std::to_string(rank_) + " was built for " +
                        std::to_string(micro_batches_) + " micro-batches, the schedule has " +
                        std::to_string(schedule.micro_batches),
                    "build the schedules and the workers from one plan");
  }
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
        forward(op.index, s, op.micro, w, batch, on_loss);
        break;
      case OpKind::Backward:
        backward(op.index, s, op.micro);
        break;
      case OpKind::SendAct:
      case OpKind::SendErr: {
        const bool err = op.kind == OpKind::SendErr;
        const MessageKey key{err, op.index, s, op.micro};
        Tensor t = take_local({err, op.index, s, op.micro});
        const int64_t at = receive_tick(schedule, op, w.tick);
        if (at > w.tick && !draining) sent_.push_back({op.peer, key, t, at});
        transport_.send(op.peer, key, t);
        break;
      }
      case OpKind::RecvAct:
      case OpKind::RecvErr: {
        const bool err = op.kind == OpKind::RecvErr;
        const MessageKey key{err, op.index, s, op.micro};
        mailbox_[{err, op.index, s, op.micro}] =
            transport_.recv(op.peer, key, message_shape(op.micro));
        break;
      }
      case OpKind::Update:
        update(w);
        break;
    }
  }
}

Tensor Worker::rows(const Tensor& t, int64_t micro) const {
  if (micro == 0) return t;
  const int64_t n = t.size(0) / micro_batches_;
  return t.narrow(0, (micro - 1) * n, n);
}

std::vector<int64_t> Worker::message_shape(int64_t micro) const {
  std::vector<int64_t> shape = message_shape_;
  if (micro > 0) shape[0] /= micro_batches_;
  return shape;
}

void Worker::set_version(InFlight& rec, int64_t k, std::optional<ParamSet> copy) const {
  const ParamSet& live = module_params_.at(k);
  rec.snapshot = copy.has_value();
  rec.separate = rec.snapshot || micro_batches_ > 1;
  if (copy) {
    rec.version = std::move(*copy);
  } else if (micro_batches_ > 1) {
    // The pieces' gradients sum on a leaf of their own, then join the live weights' in one
    // addition, as a copy's do: the tied wte then sums its two sides in the same order.
    for (size_t i = 0; i < live.size(); ++i)
      rec.version.add(live.names()[i], live.tensors()[i].detach().requires_grad_(true));
  } else {
    rec.version = live;
  }
}

Tensor Worker::forward_piece(InFlight& rec, int64_t k, int64_t micro, const Tensor& input,
                             const Tensor& targets) {
  const ModulePlan& plan = partition_.module(k);
  ForwardContext& ctx = contexts_.at(k);
  const bool split_memory = micro > 0 && model_.recurrent();
  if (split_memory) {
    ctx.memory.clear();
    for (const auto& [layer, mem] : rec.memory_before) ctx.memory[layer] = rows(mem, micro);
  }
  Tensor out = model_.forward_module(rec.version, plan, input, targets, ctx);
  if (split_memory) {
    rec.memory_after.push_back(ctx.memory);
    if (micro == micro_batches_) {  // every row advanced: the memories of the whole batch
      ctx.memory.clear();
      for (const auto& [layer, first] : rec.memory_after.front()) {
        std::vector<Tensor> parts;
        for (const auto& piece : rec.memory_after) parts.push_back(piece.at(layer));
        ctx.memory[layer] = at::cat(parts, 0);
      }
      rec.memory_after.clear();
    }
  }
  return out;
}

Tensor Worker::recompute(const InFlight& rec, int64_t k, int64_t micro, const Piece& piece) const {
  const ModulePlan& plan = partition_.module(k);
  const ForwardContext& live = contexts_.at(k);
  // A context of its own: the module's generator and memories have moved on since.
  ForwardContext ctx = live;
  ctx.generator = live.generator->clone();
  ctx.generator->set_state(piece.generator);
  ctx.memory.clear();
  for (const auto& [layer, mem] : rec.memory_before) ctx.memory[layer] = rows(mem, micro);
  const Tensor input = plan.embed ? rows(rec.tokens, micro) : piece.input;
  return model_.forward_module(rec.version, plan, input, Tensor(), ctx);
}

void Worker::forward(int64_t k, int64_t s, int64_t micro, const TickWindow& w,
                     const BatchFn* batch_fn, const LossFn* on_loss) {
  const ModulePlan& plan = partition_.module(k);
  auto& mine = in_flight_.at(k);
  auto found = mine.find(s);
  if (found == mine.end()) {  // the batch's first piece
    InFlight rec;
    if (plan.embed) {
      auto [x, y] = (*batch_fn)(s);
      rec.tokens = x;
      targets_[s] = y;
    }
    // A delayed backward needs the weights this forward used; the live ones change in place.
    if (plan.delay() == 0 || w.synchronous) {
      set_version(rec, k, std::nullopt);
    } else if (predicts_weights(engine_cfg_)) {
      // The copy is moved to where the weights will be when this batch's gradient arrives.
      set_version(
          rec, k,
          optimizer_.predict(module_params_.at(k),
                             prediction_horizon(engine_cfg_, plan.delay()) * w.lr, lr_scale(w)));
    } else {
      set_version(rec, k, module_params_.at(k).snapshot());
    }
    const ForwardContext& ctx = contexts_.at(k);
    if (!plan.head) {  // what a checkpoint needs to run this forward again (save_pipeline)
      rec.generator_before = ctx.generator->get_state();
    }
    rec.memory_before = ctx.memory;
    found = mine.emplace(s, std::move(rec)).first;
    peak_in_flight_[k] = std::max<int64_t>(peak_in_flight_[k], static_cast<int64_t>(mine.size()));
  }
  InFlight& rec = found->second;
  Piece piece;
  Tensor input;
  if (plan.embed) {
    input = rows(rec.tokens, micro);
  } else {
    input = take_local({false, k - 1, s, micro}).detach().requires_grad_(true);
    piece.input = input;
  }
  Tensor targets;
  if (plan.head) targets = rows(targets_.at(s), micro);
  const bool keep_graph = keeps_graph(plan, w.synchronous);
  if (!keep_graph) piece.generator = contexts_.at(k).generator->get_state();
  {
    torch::AutoGradMode grad(keep_graph && torch::GradMode::is_enabled());
    piece.output = forward_piece(rec, k, micro, input, targets);
  }
  if (plan.head) {
    const bool last = micro == 0 || micro == pieces();
    if (last) targets_.erase(s);
    if (on_loss) {
      // The batch's loss is the mean of its pieces' (equal sizes), reported after the last.
      rec.loss_sum += piece.output.item<double>();
      if (last) (*on_loss)(s, rec.loss_sum / static_cast<double>(pieces()));
    }
  } else {
    mailbox_[{false, k, s, micro}] = piece.output.detach();
    if (!keep_graph) piece.output = Tensor();
  }
  rec.pieces.emplace(micro, std::move(piece));
}

void Worker::backward(int64_t k, int64_t s, int64_t micro) {
  auto& mine = in_flight_.at(k);
  auto it = mine.find(s);
  if (it == mine.end() || it->second.pieces.count(micro) == 0) {
    throw PlanError("module " + std::to_string(k) + " has no forward of batch " +
                    std::to_string(s) + (micro > 0 ? " micro-batch " + std::to_string(micro) : "") +
                    " to back-propagate");
  }
  InFlight& rec = it->second;
  Piece piece = std::move(rec.pieces.at(micro));
  rec.pieces.erase(micro);
  if (!piece.output.defined()) piece.output = recompute(rec, k, micro, piece);
  if (partition_.module(k).head) {
    // The batch's loss is the mean over its M equal pieces.
    (micro == 0 ? piece.output : piece.output / static_cast<double>(pieces())).backward();
  } else {
    // An error received from another process arrives on the CPU.
    Tensor err = take_local({true, k, s, micro}).to(piece.output.device());
    torch::autograd::backward({piece.output}, {err});
  }
  if (!partition_.module(k).embed) mailbox_[{true, k - 1, s, micro}] = piece.input.grad();
  if (micro != 0 && ++rec.backwards < pieces()) return;
  InFlight done = std::move(rec);
  mine.erase(it);
  if (!done.separate) return;
  // The gradient at the old weights is applied to the live ones (the tied wte sums both sides).
  const ParamSet& live = module_params_.at(k);
  for (size_t i = 0; i < live.size(); ++i) {
    const Tensor& g = done.version.tensors()[i].grad();
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
      if (rec.backwards > 0 ||
          static_cast<int64_t>(rec.pieces.size()) != std::max<int64_t>(1, pieces())) {
        throw Error("module " + std::to_string(k) + " holds a part of batch " + std::to_string(s) +
                        " between ticks",
                    "the schedule forwards and back-propagates every micro-batch within a tick");
      }
      BatchInFlight b;
      b.batch = s;
      b.snapshot = rec.snapshot;
      if (rec.snapshot) {
        for (const Tensor& t : rec.version.tensors()) b.weights.push_back(t.detach());
      }
      if (rec.tokens.defined()) {
        b.input = rec.tokens;
      } else {
        std::vector<Tensor> inputs;  // the pieces' rows, in order: the batch's input
        for (const auto& [m, piece] : rec.pieces) inputs.push_back(piece.input.detach());
        b.input = inputs.size() == 1 ? inputs.front() : at::cat(inputs, 0);
      }
      b.generator = rec.generator_before;
      b.memory = rec.memory_before;
      saved.push_back(std::move(b));
    }
  }
  out.targets = targets_;
  for (const auto& [key, t] : mailbox_) {
    const auto& [error, boundary, batch, micro] = key;
    out.mailbox.push_back({error, boundary, batch, micro, t});
  }
  for (const Sent& m : sent_) {
    if (m.recv_tick < next_tick) continue;  // taken already
    out.sent.push_back(
        {m.key.error, m.key.boundary, m.key.batch, m.key.micro, m.tensor, m.peer, m.recv_tick});
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
  for (const PendingMessage& m : saved.mailbox)
    mailbox_[{m.error, m.boundary, m.batch, m.micro}] = m.tensor;
  for (const PendingMessage& m : saved.sent) {
    Sent sent{m.peer, {m.error, m.boundary, m.batch, m.micro}, m.tensor, m.recv_tick};
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
    if (b.snapshot) {
      if (b.weights.size() != live.size()) {
        throw Error("the saved pipeline of module " + std::to_string(k) + " holds " +
                        std::to_string(b.weights.size()) + " weights, the module " +
                        std::to_string(live.size()),
                    "resume with the layout that wrote it");
      }
      ParamSet copy;
      for (size_t i = 0; i < live.size(); ++i) {  // a copy where the live weight is
        copy.add(live.names()[i],
                 b.weights[i].to(live.tensors()[i].device(), false, true).requires_grad_(true));
      }
      set_version(rec, k, std::move(copy));
    } else {
      set_version(rec, k, std::nullopt);
    }
    if (plan.embed) rec.tokens = b.input;
    rec.generator_before = b.generator;
    rec.memory_before = b.memory;
    ctx.generator->set_state(rec.generator_before);
    ctx.memory = rec.memory_before;
    const int64_t M = pieces();
    // A recomputed piece keeps what its forward started from; the forward then only advances
    // the generator, for the pieces after it. Saved batches wait for a later tick's backward.
    const bool keep_graph = keeps_graph(plan, false);
    for (int64_t m = M == 1 ? 0 : 1; m <= (M == 1 ? 0 : M); ++m) {
      Piece piece;
      Tensor input = rows(b.input, m);
      if (!plan.embed) {
        input = input.clone().requires_grad_(true);
        piece.input = input;
      }
      if (!keep_graph) piece.generator = ctx.generator->get_state();
      torch::AutoGradMode grad(keep_graph);
      piece.output = forward_piece(rec, k, m, input, Tensor());
      if (!keep_graph) piece.output = Tensor();
      rec.pieces.emplace(m, std::move(piece));
    }
    batches.emplace(b.batch, std::move(rec));
    peak_in_flight_[k] =
        std::max<int64_t>(peak_in_flight_[k], static_cast<int64_t>(batches.size()));
  }
  ctx.generator->set_state(generator_now);
  ctx.memory = memory_now;
}

}  // namespace ouroboros
