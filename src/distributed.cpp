// Ouroboros across processes, part two: the c10d transport, the engine with one worker per
// process, and the training loop of every rank. Rank discovery and the process groups are in
// dist_context.cpp.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include "ouroboros/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <algorithm>
#include <iostream>
#include <sstream>
#include <thread>

#include "ouroboros/checkpoint.h"
#include "ouroboros/data.h"
#include "ouroboros/errors.h"
#include "ouroboros/system.h"
#include "dist_detail.h"

namespace ouroboros {

using namespace dist_detail;
using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// The c10d transport.

struct C10dTransport::Pending {
  int64_t tick;
  int64_t peer;
  c10::intrusive_ptr<c10d::Work> work;
};

C10dTransport::C10dTransport(DistContext& ctx) : ctx_(ctx) {}
C10dTransport::~C10dTransport() = default;

int C10dTransport::gloo_tag(const MessageKey& key) {
  return static_cast<int>(key.tag() & 0x7fffffff);
}

void C10dTransport::send(int64_t dst, const MessageKey& key, const torch::Tensor& t) {
  if (!aborted_.empty()) throw TransportError(aborted_);
  const int64_t peer = ctx_.ring() * ctx_.workers_per_ring() + dst;
  std::vector<at::Tensor> v{t.contiguous()};
  stats_.messages += 1;
  stats_.bytes += static_cast<int64_t>(t.numel() * t.element_size());
  try {
    auto work = ctx_.world().send(v, static_cast<int>(peer), gloo_tag(key));
    pending_.push_back(std::make_unique<Pending>(Pending{tick_, peer, work}));
  } catch (const std::exception& e) {
    throw TransportError(ctx_.lost_peer(peer, e.what()), hint_resume());
  }
}

torch::Tensor C10dTransport::recv(int64_t src, const MessageKey& key, at::IntArrayRef shape) {
  if (!aborted_.empty()) throw TransportError(aborted_);
  const int64_t peer = ctx_.ring() * ctx_.workers_per_ring() + src;
  const auto start = std::chrono::steady_clock::now();
  torch::Tensor t = torch::empty(shape);
  std::vector<at::Tensor> v{t};
  try {
    ctx_.world().recv(v, static_cast<int>(peer), gloo_tag(key))->wait(ctx_.timeout());
  } catch (const std::exception& e) {
    throw TransportError(ctx_.lost_peer(peer, "waiting for " + key.to_string() + ": " + e.what()),
                         hint_resume());
  }
  stats_.wait_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
  return t;
}

void C10dTransport::abort(const std::string& why) {
  if (aborted_.empty()) aborted_ = why;
}

void C10dTransport::wait_sends(int64_t before_tick) {
  size_t done = 0;
  const auto start = std::chrono::steady_clock::now();
  for (; done < pending_.size() && pending_[done]->tick < before_tick; ++done) {
    try {
      pending_[done]->work->wait(ctx_.timeout());
    } catch (const std::exception& e) {
      throw TransportError(ctx_.lost_peer(pending_[done]->peer, e.what()), hint_resume());
    }
  }
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(done));
  stats_.wait_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
}

void C10dTransport::begin_tick(int64_t tick) {
  tick_ = tick;
  wait_sends(tick - 1);
}

void C10dTransport::flush() { wait_sends(std::numeric_limits<int64_t>::max()); }

// ---------------------------------------------------------------------------------------------
// The engine, one worker per process.

DistributedEngine::DistributedEngine(const LanguageModel& model, ParamSet params, const Config& cfg,
                                     DistContext& ctx)
    : model_(model), cfg_(cfg), ctx_(ctx), params_(std::move(params)), plan_(make_plan(cfg)) {
  pipeline_start_ = cfg.engine.sync_warmup;
  transport_ = std::make_unique<C10dTransport>(ctx_);
  worker_ = std::make_unique<Worker>(model_, plan_.partition, ctx_.worker(), params_, cfg_,
                                     *transport_);
  if (ctx_.replicas() > 1) {
    worker_->set_before_update([this](const ParamSet& p) { average_gradients(p); });
  }
  for (int64_t k = 1; k <= plan_.partition.K; ++k) {
    peer_generators_.push_back(
        make_generator(dropout_seed(static_cast<uint64_t>(cfg.train.seed), k)).get_state());
  }
}

DistributedEngine::~DistributedEngine() {
  if (!sink_) return;
  const TransportStats& st = transport_->stats();
  sink_->messages = st.messages;
  sink_->bytes = st.bytes;
  sink_->wait_s = static_cast<double>(st.wait_ns) * 1e-9;
  sink_->allreduce_s = static_cast<double>(allreduce_ns_) * 1e-9;
  sink_->ticks = ticks_run_;
}

void DistributedEngine::average_gradients(const ParamSet& params) {
  std::vector<Tensor> grads;
  for (const auto& p : params.tensors()) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return;  // the pipeline is not full yet, in every ring alike
  const auto start = std::chrono::steady_clock::now();
  std::vector<Tensor> flat_parts;
  for (const auto& g : grads) flat_parts.push_back(g.reshape({-1}));
  std::vector<at::Tensor> buf{torch::cat(flat_parts)};
  try {
    ctx_.replica_group()->allreduce(buf)->wait(ctx_.timeout());
  } catch (const std::exception& e) {
    throw TransportError(ctx_.lost_peer(-1, std::string("gradient all-reduce: ") + e.what()),
                         hint_resume());
  }
  buf[0].div_(static_cast<double>(ctx_.replicas()));
  int64_t offset = 0;
  torch::NoGradGuard no_grad;
  for (auto& g : grads) {
    g.copy_(buf[0].narrow(0, offset, g.numel()).view(g.sizes()));
    offset += g.numel();
  }
  allreduce_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::steady_clock::now() - start)
                       .count();
}

void DistributedEngine::run_ticks(int64_t first, int64_t count, bool drain, int64_t horizon,
                                  const BatchFn* batch, const LossFn* on_loss) {
  // Rank 0 opens each job; the others wait for it (rank 0 may have been evaluating).
  const std::string go = "go/" + std::to_string(jobs_);
  if (ctx_.is_lead()) {
    ctx_.set(go, {1});
  } else {
    ctx_.get(go, kBetweenJobs, 0);
  }
  for (int64_t t = first; t < first + count; ++t) {
    TickWindow win;
    win.start = pipeline_start_;
    win.horizon = drain ? horizon : std::numeric_limits<int64_t>::max();
    win.tick = t;
    win.synchronous = !drain && t < cfg_.engine.sync_warmup;
    if (win.synchronous) {
      win.start = t;
      win.horizon = t + 1;
    }
    win.lr = learning_rate(cfg_.train, drain ? horizon - 1 : t);
    transport_->begin_tick(t);
    ++ticks_run_;
    worker_->run_tick(win.synchronous ? plan_.synchronous : plan_.delayed, win, batch, on_loss);
  }
  // A run's last messages are received in the next job's first tick; after a drain none is left.
  if (drain) transport_->flush();
  end_job();
}

void DistributedEngine::run(int64_t first, int64_t count, const BatchFn& batch,
                            const LossFn& on_loss) {
  if (first != next_tick_) {
    throw Error("engine expected tick " + std::to_string(next_tick_) + ", got " +
                std::to_string(first));
  }
  const int64_t B = cfg_.train.batch_size, R = ctx_.replicas(), ring = ctx_.ring();
  // A tick's batch has R*B rows; ring r trains on rows [rB, (r+1)B).
  const BatchFn shard = [&](int64_t t) {
    Batch b = batch(t);
    if (R == 1) return b;
    return Batch{b.first.narrow(0, ring * B, B).contiguous(),
                 b.second.narrow(0, ring * B, B).contiguous()};
  };
  // The reported loss is the mean over the rings (the loss of the whole R*B batch).
  const LossFn mean_loss = [&](int64_t t, double loss) {
    if (R > 1) {
      std::vector<at::Tensor> v{torch::full({1}, loss, torch::kFloat64)};
      try {
        ctx_.replica_group()->allreduce(v)->wait(ctx_.timeout());
      } catch (const std::exception& e) {
        throw TransportError(ctx_.lost_peer(-1, std::string("loss all-reduce: ") + e.what()),
                             hint_resume());
      }
      loss = v[0].item<double>() / static_cast<double>(R);
    }
    on_loss(t, loss);
  };
  run_ticks(first, count, false, 0, &shard, &mean_loss);
  next_tick_ = first + count;
}

void DistributedEngine::drain() {
  const int64_t end = next_tick_;
  // Every rank counts the same jobs, so a drain with nothing in flight is still one.
  const bool pending = end > pipeline_start_;
  run_ticks(end, pending ? plan_.partition.K - 1 : 0, true, end, nullptr, nullptr);
  if (pending) pipeline_start_ = end;
}

void DistributedEngine::resume_at(int64_t tick) {
  next_tick_ = tick;
  pipeline_start_ = std::max(tick, cfg_.engine.sync_warmup);
}

// Ring 0's workers other than 0 publish their part after every job; rank 0 reads it when asked.
void DistributedEngine::end_job() {
  ++jobs_;
  if (ctx_.ring() != 0 || ctx_.worker() == 0) return;
  c10::impl::GenericList names(c10::StringType::get());
  c10::impl::GenericList tensors(c10::TensorType::get());
  const ParamSet& mine = worker_->params();
  for (size_t i = 0; i < mine.size(); ++i) {
    names.push_back(mine.names()[i]);
    tensors.push_back(mine.tensors()[i].detach());
  }
  c10::impl::GenericList gens(c10::TensorType::get());
  c10::impl::GenericList modules(c10::IntType::get());
  for (int64_t k : worker_->modules()) {
    modules.push_back(k);
    gens.push_back(worker_->generator(k).get_state());
  }
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("names", names);
  d.insert("tensors", tensors);
  d.insert("optimizer", worker_->optimizer().state_dict());
  d.insert("modules", modules);
  d.insert("generators", gens);
  std::vector<char> bytes = torch::pickle_save(c10::IValue(d));
  ctx_.set("state/" + std::to_string(jobs_) + "/" + std::to_string(ctx_.worker()),
           std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

void DistributedEngine::gather() const {
  if (!ctx_.is_lead() || gathered_ == jobs_) return;
  torch::NoGradGuard no_grad;
  for (int64_t w = 1; w < ctx_.workers_per_ring(); ++w) {
    const std::string key = "state/" + std::to_string(jobs_) + "/" + std::to_string(w);
    std::vector<uint8_t> raw = ctx_.get(key, ctx_.timeout(), w);
    c10::IValue v = torch::pickle_load(std::vector<char>(raw.begin(), raw.end()));
    auto d = v.toGenericDict();
    auto names = d.at("names").toList();
    auto tensors = d.at("tensors").toList();
    ParamSet& all = const_cast<ParamSet&>(params_);
    for (size_t i = 0; i < names.size(); ++i) {
      all.at(names.get(i).toStringRef()).copy_(tensors.get(i).toTensor());
    }
    for (const auto& item : d.at("optimizer").toGenericDict()) {
      peer_optimizer_.insert_or_assign(item.key(), item.value());
    }
    auto modules = d.at("modules").toList();
    auto gens = d.at("generators").toList();
    for (size_t i = 0; i < modules.size(); ++i) {
      peer_generators_[static_cast<size_t>(modules.get(i).toInt() - 1)] = gens.get(i).toTensor();
    }
    // Earlier states nobody asked for are dropped with this one.
    for (int64_t s = gathered_ + 1; s <= jobs_; ++s) {
      try {
        ctx_.store().deleteKey("state/" + std::to_string(s) + "/" + std::to_string(w));
      } catch (const std::exception&) {
      }
    }
  }
  gathered_ = jobs_;
}

const ParamSet& DistributedEngine::params() const {
  gather();
  return params_;
}

c10::impl::GenericDict DistributedEngine::optimizer_state() const {
  gather();
  c10::impl::GenericDict all(c10::StringType::get(), c10::AnyType::get());
  for (const auto& item : peer_optimizer_) all.insert_or_assign(item.key(), item.value());
  for (const auto& item : worker_->optimizer().state_dict()) {
    all.insert_or_assign(item.key(), item.value());
  }
  return all;
}

void DistributedEngine::load_optimizer_state(const c10::impl::GenericDict& d) {
  worker_->optimizer().load_state_dict(d);
  for (const auto& item : d) peer_optimizer_.insert_or_assign(item.key(), item.value());
}

std::vector<Tensor> DistributedEngine::generator_states() const {
  gather();
  std::vector<Tensor> states = peer_generators_;
  for (int64_t k : worker_->modules()) {
    states[static_cast<size_t>(k - 1)] = worker_->generator(k).get_state();
  }
  return states;
}

void DistributedEngine::set_generator_states(const std::vector<Tensor>& s) {
  if (static_cast<int64_t>(s.size()) != plan_.partition.K) {
    throw CheckpointError("checkpoint holds " + std::to_string(s.size()) +
                              " dropout generators, the run has " +
                              std::to_string(plan_.partition.K) + " modules",
                          "resume with the --modules the checkpoint was written with");
  }
  for (int64_t k : worker_->modules()) {
    worker_->generator(k).set_state(s[static_cast<size_t>(k - 1)]);
  }
  peer_generators_ = s;
}

// ---------------------------------------------------------------------------------------------
// The training loop of every rank.

namespace {

int64_t next_boundary(int64_t step, int64_t interval, int64_t end) {
  if (interval <= 0) return end;
  return std::min(end, (step / interval + 1) * interval);
}

ParamSet trainable_copy(const ParamSet& p) {
  ParamSet out;
  for (size_t i = 0; i < p.size(); ++i) {
    out.add(p.names()[i], p.tensors()[i].detach().clone().requires_grad_(true));
  }
  return out;
}

// Ranks other than 0: the same jobs as train() runs on rank 0 (runs between evaluation and
// checkpoint boundaries, a drain at each checkpoint and at the end), without logging or files.
void follow(Config cfg, const TrainOptions& opts, DistContext& ctx, RankStats* stats) {
  std::optional<Checkpoint> ck;
  if (!opts.resume.empty()) ck = load_checkpoint(opts.resume);
  at::set_num_threads(static_cast<int>(cfg.train.threads));
  // Worker 0 of another ring reads its shard of the corpus; middle workers never open it.
  std::optional<Dataset> ds;
  std::optional<BatchSampler> sampler;
  if (ctx.worker() == 0) {
    ds = load_dataset(cfg.data.data, cfg.data.format, cfg.data.tokenizer);
    sampler.emplace(ds->train, cfg.model.block_size, cfg.train.batch_size * cfg.dist.replicas,
                    static_cast<uint64_t>(cfg.train.seed));
    if (ck) sampler->set_state(ck->sampler_state);
  }
  // The vocabulary size comes from rank 0, which read the corpus.
  cfg.model.vocab_size = std::stoll(string_of(ctx.get("vocab", kBetweenJobs, 0)));
  GPT model(cfg.model);
  ParamSet params = ck ? trainable_copy(ck->model) : model.init_params(cfg.train.seed);
  DistributedEngine method(model, params, cfg, ctx);
  method.set_stats_sink(stats);
  int64_t step = 0;
  if (ck) {
    method.load_optimizer_state(ck->optimizer);
    method.set_generator_states(ck->generator_states);
    step = ck->step;
    method.resume_at(step);
  }
  const int64_t end = opts.stop_after >= 0 ? std::min(opts.stop_after, cfg.train.steps)
                                           : cfg.train.steps;
  const BatchFn batch = [&](int64_t) { return sampler->next(); };
  const LossFn ignore = [](int64_t, double) {};
  while (step < end) {
    const int64_t stop = std::min(next_boundary(step, cfg.train.eval_interval, end),
                                  next_boundary(step, cfg.train.checkpoint_interval, end));
    method.run(step, stop - step, batch, ignore);
    step = stop;
    if (cfg.train.checkpoint_interval > 0 && step % cfg.train.checkpoint_interval == 0 &&
        step < end) {
      method.drain();
    }
  }
  method.drain();
}

}  // namespace

TrainResult train_distributed(const Config& cfg, const TrainOptions& opts, const DistEnv& env) {
  cfg.validate();
  keep_freed_memory();  // as every threaded method does (make_method)
  if (cfg.model.model != "gpt") {
    throw ConfigError("processes run the gpt model only, not " + cfg.model.model,
                      "train Transformer-XL with --modules K on threads of one process");
  }
  if (resolved_mode(cfg.engine) != "ouroboros") {
    throw ConfigError("processes run --mode ouroboros only, not " + resolved_mode(cfg.engine),
                      "use --modules K >= 2 with the default mode, or run " +
                          resolved_mode(cfg.engine) + " on threads of one process");
  }
  DistContext ctx(env, cfg);
  TrainResult result;
  RankStats stats;
  const auto start = std::chrono::steady_clock::now();
  try {
    if (ctx.is_lead()) {
      TrainOptions lead = opts;
      lead.method_factory = [&](const Config& c, const LanguageModel& model, ParamSet params) {
        ctx.set("vocab", bytes_of(std::to_string(c.model.vocab_size)));
        auto engine = std::make_unique<DistributedEngine>(model, std::move(params), c, ctx);
        engine->set_stats_sink(&stats);
        if (!opts.quiet) {
          std::ostream& log = opts.log ? *opts.log : std::cout;
          log << engine->plan().summary() << "processes: " << ctx.world_size() << " (" 
              << ctx.replicas() << " ring(s) of " << ctx.workers_per_ring()
              << " worker(s)), c10d gloo, store " << env.master_addr << ":" << env.master_port
              << std::endl;
        }
        return engine;
      };
      result = train(cfg, lead);
    } else {
      follow(cfg, opts, ctx, &stats);
    }
  } catch (const TransportError&) {
    ctx.linger_after_failure();
    throw;
  } catch (const std::exception& e) {
    ctx.report_failure(e.what());
    ctx.linger_after_failure();
    throw;
  }
  // Each rank's traffic, printed by rank 0: bytes per tick and time spent waiting on peers.
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const json mine = {{"messages", stats.messages}, {"bytes", stats.bytes},
                     {"ticks", stats.ticks},       {"wait_s", stats.wait_s},
                     {"allreduce_s", stats.allreduce_s}, {"wall_s", wall}};
  ctx.set("stats/" + std::to_string(ctx.rank()), bytes_of(mine.dump()));
  if (ctx.is_lead() && !opts.quiet) {
    std::ostream& log = opts.log ? *opts.log : std::cout;
    for (int64_t r = 0; r < ctx.world_size(); ++r) {
      const json j = json::parse(string_of(ctx.get("stats/" + std::to_string(r), ctx.timeout())));
      const double ticks = std::max<double>(1.0, j["ticks"].get<double>());
      std::ostringstream s;
      s.setf(std::ios::fixed);
      s.precision(1);
      s << "transport rank " << r << ": " << j["messages"].get<int64_t>() << " messages, "
        << j["bytes"].get<double>() / ticks / 1024.0 << " KiB sent per tick, waited "
        << j["wait_s"].get<double>() << " s on peers (" << 100.0 * j["wait_s"].get<double>() /
               std::max(1e-9, j["wall_s"].get<double>())
        << "% of " << j["wall_s"].get<double>() << " s)";
      if (ctx.replicas() > 1) s << ", " << j["allreduce_s"].get<double>() << " s in all-reduce";
      log << s.str() << std::endl;
    }
  }
  ctx.finish();
  return result;
}

}  // namespace ouroboros
