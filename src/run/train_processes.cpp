// One rank of a multi-process run: the training loop of run/train.cpp with the per-process engine,
// the vocabulary shared through the store, and rank 0's report of every rank's traffic.
#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"
#include "ouroboros/dist/context.h"
#include "ouroboros/dist/ouroboros_processes.h"
#include "ouroboros/run/methods.h"
#include "ouroboros/run/train.h"

namespace ouroboros {

using json = nlohmann::json;

namespace {

// This process's part in the run: its rank's role, and what every rank must agree on coming from
// rank 0 through the store, one key per value (the vocabulary size rank 0 read, stop requests, the
// pieces of a run, the checkpoint's id and the sums rank 0 reports).
RankRole rank_role(DistContext& ctx, const DistEnv& env) {
  RankRole role;
  role.lead = ctx.is_lead();
  role.single_process = false;
  role.world = ctx.world_size();
  role.local_rank = env.local_rank;
  // Worker 0 of another ring reads its shard of the corpus; middle workers never open it.
  role.draws_batches = ctx.worker() == 0;
  auto sent = std::make_shared<std::map<std::string, int64_t>>();
  role.lead_value = [&ctx, sent](const std::string& topic, int64_t value) {
    const std::string key = topic + "/" + std::to_string((*sent)[topic]++);
    if (ctx.is_lead()) {
      ctx.set_text(key, std::to_string(value));
      return value;
    }
    return static_cast<int64_t>(std::stoll(ctx.get_text(key, DistContext::between_jobs(), 0)));
  };
  auto reported = std::make_shared<std::map<std::string, int64_t>>();
  role.sum_at_lead = [&ctx, reported](const std::string& topic, int64_t value) {
    const std::string key = "sum/" + topic + "/" + std::to_string((*reported)[topic]++) + "/";
    if (!ctx.is_lead()) {
      ctx.set_text(key + std::to_string(ctx.rank()), std::to_string(value));
      return value;
    }
    for (int64_t r = 1; r < ctx.world_size(); ++r) {
      value +=
          static_cast<int64_t>(std::stoll(ctx.get_text(key + std::to_string(r), ctx.timeout(), r)));
    }
    return value;
  };
  return role;
}

// Each rank's traffic, printed by rank 0: bytes per tick and time spent waiting on peers.
void report_traffic(DistContext& ctx, const RankStats& stats, double wall,
                    const TrainOptions& opts) {
  const json stats_json = {{"messages", stats.messages},
                           {"bytes", stats.bytes},
                           {"ticks", stats.ticks},
                           {"wait_s", stats.wait_s},
                           {"allreduce_s", stats.allreduce_s},
                           {"wall_s", wall}};
  ctx.set_text("stats/" + std::to_string(ctx.rank()), stats_json.dump());
  if (!ctx.is_lead() || opts.quiet) return;
  std::ostream& log = opts.log ? *opts.log : std::cout;
  for (int64_t r = 0; r < ctx.world_size(); ++r) {
    const json j = json::parse(ctx.get_text("stats/" + std::to_string(r), ctx.timeout()));
    const double ticks = std::max<double>(1.0, j["ticks"].get<double>());
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(1);
    s << "transport rank " << r << ": " << j["messages"].get<int64_t>() << " messages, "
      << j["bytes"].get<double>() / ticks / 1024.0 << " KiB sent per tick, waited "
      << j["wait_s"].get<double>() << " s on peers ("
      << 100.0 * j["wait_s"].get<double>() / std::max(1e-9, j["wall_s"].get<double>()) << "% of "
      << j["wall_s"].get<double>() << " s)";
    if (ctx.replicas() > 1) s << ", " << j["allreduce_s"].get<double>() << " s in all-reduce";
    log << s.str() << std::endl;
  }
}

}  // namespace

TrainResult train_distributed(const Config& cfg, const TrainOptions& opts, const DistEnv& env) {
  cfg.validate();
  check_process_mode(cfg);
  if (cfg.train.diagnostics_interval > 0) {
    throw ConfigError("--diagnostics-interval records on threads of one process only",
                      "drop it here, or train the same config on threads to see the statistics");
  }
  DistContext ctx(env, cfg);
  TrainResult result;
  RankStats stats;
  const auto start = std::chrono::steady_clock::now();
  TrainOptions mine = opts;
  mine.method_factory = [&](const Config& c, const LanguageModel& model, ParamSet params) {
    return make_process_method(c, model, std::move(params), ctx, &stats);
  };
  mine.role = rank_role(ctx, env);
  try {
    result = train(cfg, mine);
  } catch (const TransportError&) {
    ctx.linger_after_failure();
    throw;
  } catch (const std::exception& e) {
    ctx.report_failure(e.what());
    ctx.linger_after_failure();
    throw;
  }
  report_traffic(ctx, stats,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                 opts);
  ctx.finish();
  return result;
}

}  // namespace ouroboros
