// What a run checks and prepares before its first tick (see setup.h).
#include "setup.h"

#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <system_error>
#include <vector>

#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"
#include "ouroboros/run/methods.h"
#include "ouroboros/run/tensorboard.h"
#include "ouroboros/run/train.h"
#include "reporter.h"

namespace ouroboros {

namespace {

std::string gib(double bytes) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(1) << bytes / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return s.str();
}

// The layout a checkpoint's per-module state belongs to: the method, its modules (or the
// replicas of data parallelism), the partition, Ouroboros' micro-batches and the rings.
std::string layout(const Config& c) {
  const Mode mode = resolved_mode(c.engine);
  std::string s = std::string("--mode ") + name_of(mode);
  if (mode == Mode::kDataParallel) {
    s += " --workers " + std::to_string(c.engine.workers);
  } else if (mode != Mode::kSequential) {
    s += " --modules " + std::to_string(c.engine.modules) + " --partition " + c.engine.partition;
  }
  // Ouroboros keeps batches in flight between ticks, in its micro-batches' messages.
  if (mode == Mode::kOuroboros) {
    const int64_t M = c.engine.micro_batches;
    s += " --micro-batches " + (M == 0 ? std::string("auto") : std::to_string(M));
  }
  if (c.dist.replicas > 1) s += " --replicas " + std::to_string(c.dist.replicas);
  return s;
}

}  // namespace

void check_data(Config& cfg, const Dataset& ds, const std::optional<Checkpoint>& ck,
                const std::string& resume) {
  const int64_t V = ds.tokenizer.vocab_size();
  if (cfg.model.vocab_size == 0) cfg.model.vocab_size = V;
  // Before the vocab_size check, so a resume on other data reports the vocabulary that differs.
  if (ck) check_compatible(*ck, cfg.model, ds.tokenizer, resume);
  if (cfg.model.vocab_size != V) {
    throw ConfigError("vocab_size " + std::to_string(cfg.model.vocab_size) +
                          " does not match the tokenizer's " + std::to_string(V),
                      "leave --vocab-size at 0 to take it from the tokenizer");
  }
  if (num_eval_windows(static_cast<int64_t>(ds.valid.size()), cfg.model.block_size) == 0) {
    throw DataError("valid split has " + std::to_string(ds.valid.size()) +
                        " tokens, fewer than one window of block_size+1 = " +
                        std::to_string(cfg.model.block_size + 1),
                    "use more text or a smaller --block-size");
  }
}

double check_fits_memory(const Config& cfg, const LanguageModel& model, const Plan& plan) {
  const double need = estimated_memory_bytes(cfg, model, plan), have = physical_memory_bytes();
  if (have > 0 && need > have) {
    std::string fix = "use fewer --n-layer, a smaller --n-embd or --batch-size";
    if (resolved_mode(cfg.engine) == Mode::kOuroboros && cfg.engine.recompute == Recompute::kNone) {
      Config recomputed = cfg;
      recomputed.engine.recompute = Recompute::kDelayed;
      const double less = estimated_memory_bytes(recomputed, model);
      if (less <= have) fix = "add --recompute delayed (about " + gib(less) + "), or " + fix;
    }
    throw ConfigError("the run needs about " + gib(need) + " (" +
                          std::to_string(model.param_count()) +
                          " parameters with gradients, optimizer state and weight versions, "
                          "plus activations), more than this machine's " +
                          gib(have),
                      fix);
  }
  return need;
}

std::string fresh_run_id() {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(v));
  return hex;
}

namespace {

// A fresh run: refused wherever a run left its checkpoint, metrics or curves.
void check_fresh_out_dir(const Config& cfg, const std::string& ckpt) {
  const std::string metrics = metrics_path(cfg);
  std::vector<std::string> found;
  std::error_code ec;
  if (std::filesystem::exists(ckpt, ec)) found.push_back(std::filesystem::path(ckpt).filename());
  if (std::filesystem::exists(metrics, ec) && std::filesystem::file_size(metrics, ec) > 0) {
    found.push_back(std::filesystem::path(metrics).filename());
  }
  // Curves without this run's metrics file: a run's that wrote --metrics elsewhere, or another
  // program's. A fresh run removes the event files in its out-dir.
  if (found.empty() && holds_events(cfg.train.out_dir)) found.push_back("TensorBoard event files");
  if (found.empty()) return;
  std::string names;
  for (const auto& f : found) names += (names.empty() ? "" : ", ") + f;
  throw ConfigError("out-dir " + cfg.train.out_dir + " already holds a run (" + names + ")",
                    "continue it with --resume " + ckpt +
                        ", replace it with --overwrite, or choose another --out-dir");
}

// A resumed run: refused where the checkpoint (either kind), metrics or curves are another run's.
void check_resumed_out_dir(const Config& cfg, const std::string& resume, const std::string& run) {
  const std::string& dir = cfg.train.out_dir;
  std::error_code ec;
  const bool own = std::filesystem::equivalent(checkpoint_dir(resume), dir, ec);
  auto other = [&](const std::string& id) { return id.empty() || run.empty() ? !own : id != run; };
  std::vector<std::string> found;
  std::string other_id;
  auto add = [&](const std::string& what, const std::set<std::string>& ids) {
    for (const auto& id : ids) {
      if (!other(id)) continue;
      if (other_id.empty()) other_id = id;
      if (found.empty() || found.back() != what) found.push_back(what);
    }
  };
  for (const char* name : {"ckpt.pt", "ckpt"}) {
    const std::string path = (std::filesystem::path(dir) / name).string();
    if (!std::filesystem::is_regular_file(path, ec) && !is_sharded_checkpoint(path)) continue;
    std::string id;
    try {
      id = checkpoint_run(path);
    } catch (const CheckpointError&) {  // not a checkpoint: no id, like one from before ids
    }
    add(name, {id});
  }
  const std::string metrics = metrics_path(cfg);
  add(std::filesystem::path(metrics).filename(), metrics_runs(metrics));
  add("TensorBoard event files", event_file_runs(dir));
  if (found.empty()) return;
  std::string names;
  for (const auto& f : found) names += (names.empty() ? "" : ", ") + f;
  throw ConfigError(
      "out-dir " + dir + " holds another run (" +
          (other_id.empty() ? "" : "run " + other_id + ": ") + names + "); resuming " + resume +
          " (run " + (run.empty() ? "without id" : run) + ") there would mix them",
      "resume into the checkpoint's own directory " + checkpoint_dir(resume) +
          ", choose an empty --out-dir, or replace " + dir + "'s run with --overwrite");
}

}  // namespace

void check_out_dir(const Config& cfg, const std::string& ckpt, const std::string& resume,
                   const std::string& run, bool overwrite) {
  if (overwrite) return;
  if (resume.empty()) {
    check_fresh_out_dir(cfg, ckpt);
  } else {
    check_resumed_out_dir(cfg, resume, run);
  }
}

void remove_partial_writes(const std::string& ckpt) {
  const std::filesystem::path p(ckpt);
  std::error_code ec;
  const std::string prefix = p.filename().string() + ".tmp.";
  for (const auto& e : std::filesystem::directory_iterator(p.parent_path(), ec)) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) std::filesystem::remove(e.path(), ec);
  }
}

MethodState method_state(const Checkpoint& ck) {
  MethodState s;
  s.optimizer = ck.optimizer;
  s.generators = ck.generator_states;
  s.memory = ck.memory;
  s.pipeline = ck.pipeline;
  return s;
}

std::string carry_to_layout(Checkpoint& ck, const Config& cfg, const LanguageModel& model,
                            const std::string& path) {
  const std::string from = layout(ck.config), to = layout(cfg);
  if (from == to) return "";
  const MethodState s = method_state(ck);
  std::string notice = "resuming " + path + " (" + from + ") as " + to;
  if (const int64_t n = s.pipeline.batches(); n > 0) {
    if (ck.config.dist.replicas > 1) {
      throw CheckpointError(
          "checkpoint " + path + " holds " + std::to_string(n) + " batches in flight of " +
              std::to_string(ck.config.dist.replicas) +
              " rings, which drain only on processes of its layout (" + from + ")",
          "resume it once with its layout and --steps " + std::to_string(ck.step) +
              " (that writes a drained checkpoint), then change the layout");
    }
    Config old = ck.config;
    old.train.threads = cfg.train.threads;
    std::unique_ptr<Method> m = make_method(old, model, ck.model.snapshot());
    m->restore(s, ck.step);
    m->drain();
    const MethodState drained = m->state();
    ck.model = m->params();
    ck.optimizer = drained.optimizer;
    ck.memory = drained.memory;
    notice += ": drained its " + std::to_string(n) + " batches in flight on the old layout";
  }
  ck.pipeline = PipelineState{};
  ck.generator_states.clear();
  return notice + "; weights and optimizer moments carried by name, dropout generators afresh";
}

}  // namespace ouroboros
