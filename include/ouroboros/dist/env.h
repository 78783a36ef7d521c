// Where a process sits in a process group: rank discovery from torchrun or mpirun variables, and
// the configuration fingerprint every rank must agree on (docs/DISTRIBUTED.md).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "ouroboros/core/config.h"

namespace ouroboros {

// Where this process sits in the group. Ranks are laid out ring after ring:
// rank = ring * (K-1) + worker.
struct DistEnv {
  int64_t rank = -1;
  int64_t world_size = 0;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  // Several processes take part (a world of one is an ordinary run).
  bool active() const { return world_size > 1; }
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (torchrun), else the
// OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK variables (mpirun); fields of `flags` that are set
// (rank >= 0, world_size > 0, non-empty address, port > 0) override them.
DistEnv discover_env(const DistEnv& flags);
// Overrides that override nothing.
DistEnv no_env_overrides();

// The configuration fields every rank must agree on, flattened to "section.name" -> value
// (paths, logging and threads may differ between ranks).
nlohmann::json config_fingerprint(const Config& cfg);
// "" when equal, else the first differing key with both values.
std::string fingerprint_difference(const nlohmann::json& mine, const nlohmann::json& theirs,
                                   int64_t my_rank, int64_t their_rank);

}  // namespace ouroboros
