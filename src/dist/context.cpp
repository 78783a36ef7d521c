// The process groups of a run and their failure handling: TCPStore rendezvous, configuration
// check against rank 0, Gloo groups, heartbeats, and the one line that names a lost rank.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include "ouroboros/dist/context.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "dist_detail.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"

namespace ouroboros {
namespace {

using namespace dist_detail;
using json = nlohmann::json;

const char* kLostKey = "ouroboros/lost";

std::optional<std::string> env_string(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

// Runs a store operation on a thread of its own and waits at most `limit` for it. The store lives
// in rank 0: a frozen rank 0 accepts the request and never answers, and a blocked socket read
// cannot be interrupted, so on a timeout the thread is left behind (the process is about to exit)
// and the caller gets an exception, as for a closed connection.
template <typename F>
auto bounded(F op, Millis limit) -> decltype(op()) {
  using R = decltype(op());
  auto promise = std::make_shared<std::promise<R>>();
  std::future<R> result = promise->get_future();
  std::thread([promise, op]() mutable {
    try {
      promise->set_value(op());
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  }).detach();
  if (result.wait_for(limit) != std::future_status::ready) {
    throw std::runtime_error("no answer from the store within " +
                             std::to_string(limit.count() / 1000.0) + " s");
  }
  return result.get();
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

// This host's address on the route to `host` (the kernel's choice for a UDP socket connected
// there; nothing is sent), or nothing when it has no route. Gloo listens on it, so ranks on
// several machines find each other without GLOO_SOCKET_IFNAME even where the machine's host
// name resolves to an address of another interface (or of none, as in a network namespace).
std::optional<std::string> local_address_towards(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), "9", &hints, &found) != 0 || !found) return std::nullopt;
  std::optional<std::string> local;
  const int s = ::socket(found->ai_family, SOCK_DGRAM, 0);
  sockaddr_storage me{};
  socklen_t len = sizeof me;
  char text[INET6_ADDRSTRLEN] = {};
  if (s >= 0 && ::connect(s, found->ai_addr, found->ai_addrlen) == 0 &&
      ::getsockname(s, reinterpret_cast<sockaddr*>(&me), &len) == 0) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&me);
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&me);
    const void* where = me.ss_family == AF_INET ? static_cast<const void*>(&v4->sin_addr)
                                                : static_cast<const void*>(&v6->sin6_addr);
    if (::inet_ntop(me.ss_family, where, text, sizeof text)) local = std::string(text);
  }
  if (s >= 0) ::close(s);
  ::freeaddrinfo(found);
  return local;
}

}  // namespace

DistContext::DistContext(const DistEnv& env, const Config& cfg) : env_(env) {
  workers_ = cfg.engine.modules == 1 ? 1 : cfg.engine.modules - 1;  // K - 1 per ring
  replicas_ = cfg.dist.replicas;
  timeout_ = Millis(static_cast<int64_t>(cfg.dist.timeout * 1000.0));
  checkpoint_ = (std::filesystem::path(cfg.train.out_dir) / "ckpt").string();
  if (env.world_size != workers_ * replicas_) {
    throw ConfigError("world size " + std::to_string(env.world_size) + " does not match " +
                          std::to_string(replicas_) + " ring(s) of " + std::to_string(workers_) +
                          " worker(s) (--replicas R times K-1)",
                      "start R*(K-1) = " + std::to_string(workers_ * replicas_) + " processes");
  }
  device_ = run_device(cfg.train.device, env.local_rank);
  backend_ = resolve_backend(cfg.dist.backend, device_);
  fault_point("rendezvous");
  open_store();
  fault_point("fingerprint");
  check_fingerprints(cfg);
  try {
    world_ = gloo_group("world", env.rank, env.world_size);
    if (replicas_ > 1) {
      replica_group_ = gloo_group("replicas/" + std::to_string(worker()), ring(), replicas_);
    }
    if (backend_ == Backend::kNccl) {
      nccl_ = std::make_unique<PairGroups>(nccl_groups(store_, device_, timeout_), env.rank,
                                           ring_layout(env.rank, workers_, replicas_));
    }
    start_heartbeat();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw TransportError(
        "rank " + std::to_string(env.rank) +
            " could not connect to every other rank: " + first_line(e.what()),
        "all " + std::to_string(env.world_size) + " processes must start within --timeout seconds");
  }
}

c10d::TCPStoreOptions DistContext::store_options(bool server) const {
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env_.master_port);
  so.isServer = server;
  so.numWorkers = static_cast<size_t>(env_.world_size);
  so.waitWorkers = false;
  so.timeout = timeout_;
  return so;
}

// Rank 0 hosts the store; the others connect to it.
void DistContext::open_store() {
  const c10d::TCPStoreOptions so = store_options(env_.rank == 0);
  try {
    store_ = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, so);
  } catch (const std::exception& e) {
    throw TransportError("rank " + std::to_string(env_.rank) + " cannot " +
                             (so.isServer ? "host" : "reach") + " the store at " +
                             env_.master_addr + ":" + std::to_string(env_.master_port) + ": " +
                             first_line(e.what()),
                         "check MASTER_ADDR/MASTER_PORT (--master-addr/--master-port) and that "
                         "rank 0 is running");
  }
}

// Every rank checks every other rank's configuration, so each one refuses a mismatch itself.
void DistContext::check_fingerprints(const Config& cfg) {
  json mine = config_fingerprint(cfg);
  // Each rank resolves dist.backend for its own device; all must end up on the same one.
  mine["dist.backend (resolved)"] = name_of(backend_);
  store_set("fingerprint/" + std::to_string(env_.rank), bytes_of(mine.dump()), timeout_);
  std::string diff;
  for (int64_t r = 0; r < env_.world_size && diff.empty(); ++r) {
    if (r == env_.rank) continue;
    const json theirs = json::parse(string_of(get("fingerprint/" + std::to_string(r), timeout_)));
    diff = fingerprint_difference(mine, theirs, env_.rank, r);
  }
  store_set("fingerprint_read/" + std::to_string(env_.rank), bytes_of("1"), timeout_);
  if (diff.empty()) return;
  if (env_.rank == 0) {
    // The store lives in this process: let every rank read the fingerprints before it goes.
    std::vector<std::string> keys;
    for (int64_t r = 1; r < env_.world_size; ++r) {
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

void DistContext::start_heartbeat() {
  heartbeat_store_ = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, store_options(false));
  // The thread holds its own references, so it can be left behind if the store stops
  // answering while it waits in add() (a frozen rank 0).
  heartbeat_ =
      std::thread([store = heartbeat_store_, stop = stop_heartbeat_, done = heartbeat_done_,
                   key = "heartbeat/" + std::to_string(env_.rank)] {
        while (!*stop) {
          try {
            store->add(key, 1);
          } catch (const std::exception&) {
            break;
          }
          for (int i = 0; i < 5 && !*stop; ++i) std::this_thread::sleep_for(Millis(100));
        }
        *done = true;
      });
}

c10::intrusive_ptr<CommGroup> DistContext::gloo_group(const std::string& name, int64_t rank,
                                                      int64_t size) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout_);
  if (auto ifname = env_string("GLOO_SOCKET_IFNAME")) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*ifname));
  } else if (is_loopback(env_.master_addr)) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else if (auto local = local_address_towards(env_.master_addr)) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(*local));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(
      c10::make_intrusive<c10d::PrefixStore>(name, store_), static_cast<int>(rank),
      static_cast<int>(size), options);
}

Backend resolve_backend(Backend backend, const c10::Device& device) {
  if (backend == Backend::kGloo) return Backend::kGloo;
  if (backend == Backend::kNccl) {
    if (!nccl_built()) {
      throw ConfigError("--backend nccl: this build has no NCCL (it needs a CUDA libtorch 2.x)",
                        "build with scripts/build-torch2.sh, or use --backend gloo");
    }
    if (!device.is_cuda()) {
      throw ConfigError("--backend nccl carries GPU memory, but this process trains on the CPU",
                        "use --device cuda, or --backend gloo");
    }
    return Backend::kNccl;
  }
  return nccl_built() && device.is_cuda() ? Backend::kNccl : Backend::kGloo;  // auto
}

DistContext::~DistContext() {
  *stop_heartbeat_ = true;
  if (!heartbeat_.joinable()) return;
  const auto deadline = std::chrono::steady_clock::now() + Millis(store_lost_ ? 0 : 1000);
  while (!*heartbeat_done_ && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(Millis(10));
  }
  if (*heartbeat_done_) {
    heartbeat_.join();
  } else {
    heartbeat_.detach();  // blocked on a store that stopped answering
  }
}

// Once the store has not answered, every later operation fails at once: the failure is being
// reported, and each wait would only delay the exit.
template <typename F>
auto DistContext::on_store(F op, Millis limit) -> decltype(op()) {
  if (store_lost_) throw std::runtime_error("the store stopped answering");
  try {
    return bounded(op, limit);
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).rfind("no answer from the store", 0) == 0) store_lost_ = true;
    throw;
  }
}

bool DistContext::store_check(const std::string& key, Millis limit) {
  return on_store([store = store_, key] { return store->check({key}); }, limit);
}

std::vector<uint8_t> DistContext::store_get(const std::string& key, Millis limit) {
  return on_store([store = store_, key] { return store->get(key); }, limit);
}

int64_t DistContext::store_add(const std::string& key, int64_t n, Millis limit) {
  return on_store([store = store_, key, n] { return store->add(key, n); }, limit);
}

void DistContext::store_set(const std::string& key, const std::vector<uint8_t>& value,
                            Millis limit) {
  on_store(
      [store = store_, key, value] {
        store->set(key, value);
        return 0;
      },
      limit);
}

Millis DistContext::wait_limit() const {
  // The heartbeat check after a wait takes about 1.2 s: the whole detection fits the timeout.
  return std::max(Millis(1000), timeout_ - Millis(1200));
}

std::string DistContext::resume_hint() const {
  std::error_code ec;
  if (!checkpoint_.empty() && std::filesystem::exists(checkpoint_, ec)) {
    return "the last checkpoint is intact; fix the lost process and restart with --resume " +
           checkpoint_;
  }
  return "no checkpoint was written yet; fix the lost process and start the run again";
}

std::vector<int64_t> DistContext::silent_ranks() {
  std::vector<int64_t> silent;
  try {
    std::vector<int64_t> before;
    for (int64_t r = 0; r < env_.world_size; ++r) {
      before.push_back(store_add("heartbeat/" + std::to_string(r), 0, short_limit()));
    }
    std::this_thread::sleep_for(Millis(1100));  // two heartbeats of a live rank
    for (int64_t r = 0; r < env_.world_size; ++r) {
      if (r != env_.rank &&
          store_add("heartbeat/" + std::to_string(r), 0, short_limit()) == before[r]) {
        silent.push_back(r);
      }
    }
  } catch (const std::exception&) {
  }
  return silent;
}

std::string DistContext::lost_peer(int64_t peer, const std::string& what) {
  auto recorded = [&]() -> std::string {
    return store_check(kLostKey, short_limit()) ? string_of(store_get(kLostKey, short_limit()))
                                                : "";
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
      store_set(kLostKey, bytes_of(line), short_limit());
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
    if (!store_check(kLostKey, short_limit())) {
      store_set(kLostKey,
                bytes_of("lost rank " + std::to_string(env_.rank) + ": " + first_line(what)),
                short_limit());
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
      if (store_check(key, timeout_)) return store_get(key, timeout_);
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      if (now >= next_probe) {
        next_probe = now + Millis(1000);
        if (store_check(kLostKey, timeout_)) {
          throw TransportError(
              "rank " + std::to_string(env_.rank) + ": " + string_of(store_get(kLostKey, timeout_)),
              resume_hint());
        }
        if (writer >= 0) {
          const int64_t b = store_add(beat, 0, timeout_);
          still = b == last_beat ? still + 1 : 0;
          last_beat = b;
          if (still >= 3) {
            throw TransportError(lost_peer(writer, "no heartbeat while waiting for " + key),
                                 resume_hint());
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
                         resume_hint());
  }
  throw TransportError(
      lost_peer(writer >= 0 ? writer : 0, "no " + key + " in the store after " +
                                              std::to_string(timeout.count() / 1000) + " s"),
      resume_hint());
}

void DistContext::linger_after_failure() {
  try {
    int64_t n = store_add("ouroboros/failed", 1, short_limit());
    if (!is_lead()) return;
    // Every rank but the lost one reads the line; the lost one never will.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (n < env_.world_size - 1 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(Millis(50));
      n = store_add("ouroboros/failed", 0, short_limit());
    }
  } catch (const std::exception&) {
  }
}

void DistContext::set(const std::string& key, const std::vector<uint8_t>& value) {
  try {
    store_set(key, value, timeout_);
  } catch (const std::exception& e) {
    throw TransportError(lost_peer(0, "store: " + first_line(e.what())), resume_hint());
  }
}

void DistContext::set_text(const std::string& key, const std::string& value) {
  set(key, bytes_of(value));
}

std::string DistContext::get_text(const std::string& key, Millis timeout, int64_t writer) {
  return string_of(get(key, timeout, writer));
}

Millis DistContext::between_jobs() { return kBetweenJobs; }

void DistContext::open_job(int64_t n) {
  const std::string go = "go/" + std::to_string(n);
  if (is_lead()) {
    set(go, {1});
  } else {
    get(go, between_jobs(), 0);
  }
}

void DistContext::finish() {
  try {
    int64_t n = store_add("ouroboros/finished", 1, timeout_);
    if (!is_lead()) return;
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (n < env_.world_size && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(Millis(10));
      n = store_add("ouroboros/finished", 0, timeout_);
    }
  } catch (const std::exception&) {
    // Training is complete and its checkpoint written; a peer that vanished at exit is harmless.
  }
}

}  // namespace ouroboros
