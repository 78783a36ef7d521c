// Rank discovery from torchrun or mpirun variables, and the configuration fingerprint.
#include "ouroboros/dist/env.h"

#include <cstdlib>
#include <optional>
#include <set>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

using json = nlohmann::json;

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

}  // namespace

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
      "data.data",        "data.format",   "data.tokenizer",     "data.tokenizer_file",
      "model.vocab_size", "train.threads", "train.log_interval", "train.out_dir",
      "train.metrics",    "train.device"};
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
      return "rank " + std::to_string(their_rank) + " has config key " + key + " that rank " +
             std::to_string(my_rank) + " lacks";
    }
  }
  return "";
}

}  // namespace ouroboros
