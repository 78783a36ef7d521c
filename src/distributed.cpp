// Ouroboros as one worker per process: rank discovery, the process groups and their failure
// handling, the c10d transport, the per-process engine and the loop of ranks other than 0.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include "ouroboros/distributed.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "ouroboros/checkpoint.h"
#include "ouroboros/data.h"
#include "ouroboros/errors.h"
#include "ouroboros/system.h"

namespace ouroboros {
namespace {

using Millis = std::chrono::milliseconds;
using json = nlohmann::json;

const char* kLostKey = "ouroboros/lost";
// Ranks other than 0 wait this long for rank 0 between jobs (it may be evaluating or writing a
// checkpoint); a dead rank 0 is still noticed at once, as it hosts the store.
const Millis kBetweenJobs = std::chrono::hours(24);

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
std::string string_of(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

std::optional<std::string> env_string(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int64_t env_int(const char* name, const char* alt, int64_t fallback) {
  auto v = env_string(name);
  if (!v && alt) v = env_string(alt);
  if (!v) return fallback;
  try {
    size_t used = 0;
    int64_t x = std::stoll(*v, &used);
    if (used == v->size()) return x;
  } catch (const std::exception&) {
  }
  throw ConfigError(std::string("environment variable ") + name + " must be an integer, got '" +
                    *v + "'");
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

std::string hint_resume() {
  return "the last checkpoint is intact; fix the lost process and restart with --resume";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Rank discovery and the configuration fingerprint.

DistEnv no_env_overrides() {
  DistEnv e;
  e.rank = -1;
  e.world_size = 0;
  e.local_rank = -1;
  e.master_addr = "";
  e.master_port = 0;
  return e;
}

DistEnv discover_env(const DistEnv& flags) {
  DistEnv e;
  e.world_size = env_int("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", 0);
  e.rank = env_int("RANK", "OMPI_COMM_WORLD_RANK", -1);
  e.local_rank = env_int("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", 0);
  if (auto a = env_string("MASTER_ADDR")) e.master_addr = *a;
  e.master_port = env_int("MASTER_PORT", nullptr, 29500);
  if (flags.rank >= 0) e.rank = flags.rank;
  if (flags.world_size > 0) e.world_size = flags.world_size;
  if (flags.local_rank >= 0) e.local_rank = flags.local_rank;
  if (!flags.master_addr.empty()) e.master_addr = flags.master_addr;
  if (flags.master_port > 0) e.master_port = flags.master_port;
  if (e.world_size > 1 && (e.rank < 0 || e.rank >= e.world_size)) {
    throw ConfigError("rank " + std::to_string(e.rank) + " is outside a world of " +
                          std::to_string(e.world_size) + " processes",
                      "set RANK (or --rank) to 0.." + std::to_string(e.world_size - 1));
  }
  if (e.master_port <= 0 || e.master_port > 65535) {
    throw ConfigError("master port " + std::to_string(e.master_port) + " is not a TCP port");
  }
  return e;
}

json config_fingerprint(const Config& cfg) {
  // Per-process settings that may differ between ranks.
  static const std::set<std::string> local = {
      "data.data",     "data.format",        "data.tokenizer", "model.vocab_size",
      "train.threads", "train.log_interval", "train.out_dir",  "train.metrics"};
  json flat = json::object();
  const json all = cfg.to_json();
  for (const auto& [section, body] : all.items()) {
    for (const auto& [name, value] : body.items()) {
      const std::string key = section + "." + name;
      if (!local.count(key)) flat[key] = value;
    }
  }
  return flat;
}

std::string fingerprint_difference(const json& mine, const json& theirs, int64_t my_rank,
                                   int64_t their_rank) {
  for (const auto& [key, value] : mine.items()) {
    const json other = theirs.contains(key) ? theirs.at(key) : json();
    if (other != value) {
      return "rank " + std::to_string(their_rank) + " runs with " + key + " = " + other.dump() +
             " but rank " + std::to_string(my_rank) + " with " + value.dump();
    }
  }
  for (const auto& [key, value] : theirs.items()) {
    if (!mine.contains(key)) {
      return "rank " + std::to_string(their_rank) + " has config key " + key +
             " that rank " + std::to_string(my_rank) + " lacks";
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// The process groups.

DistContext::DistContext(const DistEnv& env, const Config& cfg) : env_(env) {
  workers_ = make_plan(cfg).partition.num_workers();
  replicas_ = cfg.dist.replicas;
  timeout_ = Millis(static_cast<int64_t>(cfg.dist.timeout * 1000.0));
  if (env.world_size != workers_ * replicas_) {
    throw ConfigError("world size " + std::to_string(env.world_size) + " does not match " +
                          std::to_string(replicas_) + " ring(s) of " + std::to_string(workers_) +
                          " worker(s) (--replicas R times K-1)",
                      "start R*(K-1) = " + std::to_string(workers_ * replicas_) + " processes");
  }
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = env.rank == 0;
  so.numWorkers = static_cast<size_t>(env.world_size);
  so.waitWorkers = false;
  so.timeout = timeout_;
  try {
    store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    throw TransportError("rank " + std::to_string(env.rank) + " cannot " +
                             (so.isServer ? "host" : "reach") + " the store at " +
                             env.master_addr + ":" + std::to_string(env.master_port) + ": " +
                             first_line(e.what()),
                         "check MASTER_ADDR/MASTER_PORT (--master-addr/--master-port) and that "
                         "rank 0 is running");
  }

  // Every rank checks every other rank's configuration, so each one refuses a mismatch itself.
  const json mine = config_fingerprint(cfg);
  store_->set("fingerprint/" + std::to_string(env.rank), bytes_of(mine.dump()));
  std::string diff;
  for (int64_t r = 0; r < env.world_size && diff.empty(); ++r) {
    if (r == env.rank) continue;
    const json theirs = json::parse(string_of(get("fingerprint/" + std::to_string(r), timeout_)));
    diff = fingerprint_difference(mine, theirs, env.rank, r);
  }
  store_->set("fingerprint_read/" + std::to_string(env.rank), bytes_of("1"));
  if (!diff.empty()) {
    if (env.rank == 0) {
      // The store lives in this process: let every rank read the fingerprints before it goes.
      std::vector<std::string> keys;
      for (int64_t r = 1; r < env.world_size; ++r) {
        keys.push_back("fingerprint_read/" + std::to_string(r));
      }
      const auto until = std::chrono::steady_clock::now() + std::min(timeout_, Millis(10000));
      try {
        while (!store_->check(keys) && std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(Millis(10));
        }
      } catch (const std::exception&) {
      }
    }
    throw ConfigError("configuration mismatch: " + diff,
                      "start every rank with the same configuration");
  }

  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout_);
    if (auto ifname = env_string("GLOO_SOCKET_IFNAME")) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*ifname));
    } else if (is_loopback(env.master_addr)) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    world_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("world", store_), static_cast<int>(env.rank),
        static_cast<int>(env.world_size), options);
    if (replicas_ > 1) {
      replica_group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
          c10::make_intrusive<c10d::PrefixStore>("replicas/" + std::to_string(worker()),
                                                 store_),
          static_cast<int>(ring()), static_cast<int>(replicas_), options);
    }
    so.isServer = false;
    heartbeat_store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    heartbeat_ = std::thread([this] {
      const std::string key = "heartbeat/" + std::to_string(env_.rank);
      while (!stop_heartbeat_) {
        try {
          heartbeat_store_->add(key, 1);
        } catch (const std::exception&) {
          return;
        }
        for (int i = 0; i < 5 && !stop_heartbeat_; ++i) std::this_thread::sleep_for(Millis(100));
      }
    });
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw TransportError("rank " + std::to_string(env.rank) +
                             " could not connect to every other rank: " + first_line(e.what()),
                         "all " + std::to_string(env.world_size) +
                             " processes must start within --timeout seconds");
  }
}

DistContext::~DistContext() {
  stop_heartbeat_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
}

std::vector<int64_t> DistContext::silent_ranks() {
  std::vector<int64_t> silent;
  try {
    std::vector<int64_t> before;
    for (int64_t r = 0; r < env_.world_size; ++r) {
      before.push_back(store_->add("heartbeat/" + std::to_string(r), 0));
    }
    std::this_thread::sleep_for(Millis(1500));
    for (int64_t r = 0; r < env_.world_size; ++r) {
      if (r != env_.rank && store_->add("heartbeat/" + std::to_string(r), 0) == before[r]) {
        silent.push_back(r);
      }
    }
  } catch (const std::exception&) {
  }
  return silent;
}

std::string DistContext::lost_peer(int64_t peer, const std::string& what) {
  auto recorded = [&]() -> std::string {
    return store_->check({kLostKey}) ? string_of(store_->get(kLostKey)) : "";
  };
  std::string line;
  try {
    line = recorded();
    if (line.empty()) {
      // The peer that failed us may only have given up on another rank (a timeout closes its
      // connections too): the rank whose heartbeat stopped is the one lost.
      std::vector<int64_t> silent = silent_ranks();
      if (!silent.empty() && std::find(silent.begin(), silent.end(), peer) == silent.end()) {
        peer = silent.front();
      }
      line = recorded();
    }
    if (line.empty()) {
      line = (peer >= 0 ? "lost rank " + std::to_string(peer) : "lost a replica") + ": " +
             first_line(what);
      store_->set(kLostKey, bytes_of(line));
    }
  } catch (const std::exception&) {
    // The store lives in rank 0: if it is gone, rank 0 is the one lost.
    line = peer != 0 ? "lost rank 0 (the store stopped answering)"
                     : "lost rank 0: " + first_line(what);
  }
  return "rank " + std::to_string(env_.rank) + ": " + line;
}

void DistContext::report_failure(const std::string& what) {
  try {
    if (!store_->check({kLostKey})) {
      store_->set(kLostKey,
                  bytes_of("lost rank " + std::to_string(env_.rank) + ": " + first_line(what)));
    }
  } catch (const std::exception&) {
  }
}

std::vector<uint8_t> DistContext::get(const std::string& key, Millis timeout, int64_t writer) {
  // Polls with check(), never with a short wait(): libtorch 1.13's TCPStore leaves a wait that
  // timed out registered on the server, whose late wake-up then desynchronises the connection.
  // Every second it also looks for a loss recorded by another rank and for a writer that died,
  // so either ends the wait at once.
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  auto next_probe = start + Millis(1000);
  const std::string beat = "heartbeat/" + std::to_string(writer);
  int64_t last_beat = -1, still = 0;
  auto pause = std::chrono::microseconds(250);
  try {
    while (true) {
      if (store_->check({key})) return store_->get(key);
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      if (now >= next_probe) {
        next_probe = now + Millis(1000);
        if (store_->check({kLostKey})) {
          throw TransportError(
              "rank " + std::to_string(env_.rank) + ": " + string_of(store_->get(kLostKey)),
              hint_resume());
        }
        if (writer >= 0) {
          const int64_t b = store_->add(beat, 0);
          still = b == last_beat ? still + 1 : 0;
          last_beat = b;
          if (still >= 3) {
            throw TransportError(lost_peer(writer, "no heartbeat while waiting for " + key),
                                 hint_resume());
          }
        }
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(10000));
    }
  } catch (const TransportError&) {
    throw;
  } catch (const std::exception& e) {
    throw TransportError(lost_peer(0, "the store stopped answering: " + first_line(e.what())),
                         hint_resume());
  }
  throw TransportError(lost_peer(writer >= 0 ? writer : 0,
                                 "no " + key + " in the store after " +
                                     std::to_string(timeout.count() / 1000) + " s"),
                       hint_resume());
}

void DistContext::linger_after_failure() {
  try {
    int64_t n = store_->add("ouroboros/failed", 1);
    if (!is_lead()) return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (n < env_.world_size && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(Millis(50));
      n = store_->add("ouroboros/failed", 0);
    }
  } catch (const std::exception&) {
  }
}

void DistContext::set(const std::string& key, const std::vector<uint8_t>& value) {
  try {
    store_->set(key, value);
  } catch (const std::exception& e) {
    throw TransportError(lost_peer(0, "store: " + first_line(e.what())), hint_resume());
  }
}

void DistContext::finish() {
  try {
    int64_t n = store_->add("ouroboros/finished", 1);
    if (!is_lead()) return;
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (n < env_.world_size && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(Millis(10));
      n = store_->add("ouroboros/finished", 0);
    }
  } catch (const std::exception&) {
    // Training is complete and its checkpoint written; a peer that vanished at exit is harmless.
  }
}

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
