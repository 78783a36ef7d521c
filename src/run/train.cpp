// The training loop shared by every method and every rank: progress lines, JSONL metrics,
// periodic evaluation, atomic checkpoints and exact resume.
#include "ouroboros/run/train.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>
#include <random>

#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"
#include "ouroboros/data/dataset.h"
#include "ouroboros/data/stream.h"
#include "ouroboros/run/methods.h"
#include "ouroboros/train/checkpoint.h"
#include "ouroboros/train/optim.h"
#include "reporter.h"
#include "setup.h"

namespace ouroboros {

namespace {

using Clock = std::chrono::steady_clock;

int64_t next_boundary(int64_t step, int64_t interval, int64_t end) {
  if (interval <= 0) return end;
  return std::min(end, (step / interval + 1) * interval);
}

// Where a run reads its batches: the corpus order (seeded) or, for a recurrent model, parallel
// streams segment after segment. With R replicas a tick draws one batch of R*B rows; ring r
// trains on rows [rB, (r+1)B).
struct Batches {
  std::optional<BatchSampler> sampler;
  std::optional<StreamSampler> streams;
  Batch next() { return streams ? streams->next() : sampler->next(); }
  uint64_t state() const { return streams ? streams->state() : sampler->state(); }
  void set_state(uint64_t s) {
    if (sampler) sampler->set_state(s);
    if (streams) streams->set_state(s);
  }
};

std::atomic<int> g_stop_signal{0};

// A checkpoint's identity, shared by its shards and manifest: a fresh random positive number.
int64_t fresh_checkpoint_id() {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return static_cast<int64_t>(v & 0x7fffffffffffffffULL);
}

}  // namespace

double estimated_memory_bytes(const Config& cfg, const LanguageModel& model) {
  const double P = static_cast<double>(model.param_count());
  const std::string mode = resolved_mode(cfg.engine);
  const double K = static_cast<double>(cfg.engine.modules);
  const double state = cfg.train.optimizer == "sgd" ? (cfg.train.momentum > 0 ? 1.0 : 0.0) : 2.0;
  // Module k keeps K - k weight versions of its own weights: (K - 1) / 2 copies on average.
  const double versions = mode == "ouroboros" ? (K - 1.0) / 2.0 : 0.0;
  const ModelConfig& m = model.config();
  const double B = static_cast<double>(cfg.train.batch_size), T = static_cast<double>(m.block_size),
               C = static_cast<double>(m.n_embd), H = static_cast<double>(m.n_head),
               L = static_cast<double>(m.n_layer), V = static_cast<double>(m.vocab_size);
  const double keys = model.recurrent() ? T + static_cast<double>(m.mem_len) : T;
  // Saved tensors of one block per sequence (attention scores, MLP, LayerNorms), and the logits.
  const double per_block = T * C * 34.0 + H * T * keys * 5.0;
  const double in_flight = mode == "ouroboros" ? (K + 1.0) / 2.0 : 1.0;  // batches per module
  const double activations = B * (L * per_block * in_flight + T * V * 3.0);
  return 4.0 * (P * (2.0 + state + versions) + activations);
}

void request_stop(int signal_number) {
  int expected = 0;
  g_stop_signal.compare_exchange_strong(expected, signal_number);
}
int stop_requested() { return g_stop_signal.load(); }

std::vector<TrainJob> training_jobs(const TrainConfig& cfg, int64_t from, int64_t end) {
  std::vector<TrainJob> jobs;
  for (int64_t step = from; step < end;) {
    const int64_t stop = std::min(next_boundary(step, cfg.eval_interval, end),
                                  next_boundary(step, cfg.checkpoint_interval, end));
    jobs.push_back({TrainJob::kRun, step, stop - step});
    step = stop;
    if (cfg.eval_interval > 0 && step % cfg.eval_interval == 0 && step < cfg.steps) {
      jobs.push_back({TrainJob::kEvaluate, step, 0});
    }
    if (cfg.checkpoint_interval > 0 && step % cfg.checkpoint_interval == 0 && step < end) {
      jobs.push_back({TrainJob::kCheckpoint, step, 0});
    }
  }
  jobs.push_back({TrainJob::kFinal, std::max(from, end), 0});
  return jobs;
}

TrainResult train(Config cfg, const TrainOptions& opts) {
  std::ostream& log = opts.log ? *opts.log : std::cout;
  const RankRole& role = opts.role;
  const bool talk = role.lead && !opts.quiet;
  cfg.validate();

  if (cfg.dist.replicas > 1 && !opts.method_factory) {
    throw ConfigError("replicas " + std::to_string(cfg.dist.replicas) +
                          " needs one process per worker of every ring",
                      "start R*(K-1) processes, e.g. ouroboros launch --nproc N -- train ...");
  }
  if (cfg.dist.backend != "auto" && !opts.method_factory) {
    throw ConfigError("--backend " + cfg.dist.backend +
                          " picks what carries messages between processes; the workers of one "
                          "process pass them in memory",
                      "drop --backend, or start processes (ouroboros launch --nproc N -- train)");
  }
  std::optional<Checkpoint> ck;
  if (!opts.resume.empty()) {
    ck = load_checkpoint(opts.resume);
  }
  std::optional<Dataset> ds;
  if (role.draws_batches)
    ds = load_dataset(cfg.data.data, cfg.data.format, cfg.data.tokenizer, cfg.model.vocab_size);
  // One process writes one file; processes each write a shard into a directory.
  const std::string ckpt_path =
      (std::filesystem::path(cfg.train.out_dir) / (role.single_process ? "ckpt.pt" : "ckpt"))
          .string();
  if (role.lead) check_data(cfg, *ds, ck, opts.resume);
  // Rank 0's value of what every rank must agree on (this process's own in one process).
  auto lead_value = [&](const char* topic, int64_t mine) {
    return role.lead_value ? role.lead_value(topic, mine) : mine;
  };
  cfg.model.vocab_size = lead_value("vocab", cfg.model.vocab_size);
  std::unique_ptr<LanguageModel> model_ptr = make_model(cfg.model);
  const LanguageModel& model = *model_ptr;
  const c10::Device device = run_device(cfg.train.device, role.local_rank);
  set_tf32(cfg.train.tf32 != 0, device);
  if (role.lead && role.single_process && device.is_cpu()) check_fits_memory(cfg, model);
  if (role.lead) check_out_dir(cfg, ckpt_path, ck.has_value(), opts.overwrite);

  at::set_num_threads(static_cast<int>(cfg.train.threads));
  if (talk) {
    const std::string warning = blas_warning(check_blas());
    if (!warning.empty()) log << warning << std::endl;
    log << "config " << cfg.to_json().dump() << std::endl;
    log << "data " << ds->description << std::endl;
  }

  const std::string relayout = ck ? carry_to_layout(*ck, cfg, model, opts.resume) : "";
  if (talk && !relayout.empty()) log << relayout << std::endl;
  // Initialised on the CPU (the same weights wherever the run trains), then moved.
  // A checkpoint's weights are copied once, to where the run trains (ParamSet::to copies).
  ParamSet params = ck ? (device.is_cpu() ? trainable_copy(ck->model) : ck->model.to(device))
                       : model.init_params(cfg.train.seed).to(device);
  if (talk && !device.is_cpu()) log << "device " << describe_device(device) << std::endl;
  if (talk) {
    log << "model " << cfg.model.model << ": " << cfg.model.n_layer << " layers, "
        << cfg.model.n_embd << " wide, " << params.numel() << " parameters" << std::endl;
  }
  std::unique_ptr<Method> method = opts.method_factory ? opts.method_factory(cfg, model, params)
                                                       : make_method(cfg, model, params);
  if (talk) log << method->describe() << std::flush;

  // The rows of a tick's batch, all rings together: R rings of B rows draw, and evaluate, as one
  // ring of R*B.
  const int64_t rows = cfg.train.batch_size * cfg.dist.replicas;
  Batches batches;
  if (ds) {
    if (model.recurrent()) {
      batches.streams.emplace(ds->train, cfg.model.block_size, rows);
    } else {
      batches.sampler.emplace(ds->train, cfg.model.block_size, rows,
                              static_cast<uint64_t>(cfg.train.seed));
    }
  }
  int64_t step = 0;
  if (ck) {  // the one restore path
    MethodState s = method_state(*ck);
    // Another layout's checkpoint has none (carry_to_layout): the method's own fresh ones.
    if (s.generators.empty()) s.generators = method->state().generators;
    step = ck->step;
    method->restore(s, step);
    batches.set_state(ck->sampler_state);
    if (talk) log << "resumed from " << opts.resume << " at step " << step << std::endl;
  }
  const int64_t end =
      opts.stop_after >= 0 ? std::min(opts.stop_after, cfg.train.steps) : cfg.train.steps;
  const bool chars = ds && ds->tokenizer.is_character_level();
  const double valid_bytes_per_token = ds ? bytes_per_token(ds->tokenizer, ds->valid) : 0.0;
  // The out-dir is the lead's for the whole run: a second run into it is refused.
  std::optional<DirLock> lock;
  if (role.lead) {
    std::filesystem::create_directories(cfg.train.out_dir);
    lock.emplace(cfg.train.out_dir);
    remove_partial_writes(ckpt_path);
  }
  std::optional<Reporter> reporter;
  if (role.lead) reporter.emplace(cfg, log, opts.quiet, !ck, step);
  std::vector<double> losses;

  // A checkpoint keeps the batches in flight where the method can (resuming continues the very
  // same run); the last one, and those of methods that cannot, drain the pipeline first.
  auto save = [&](int64_t at_step, bool final) {
    if (final || !method->saves_in_flight()) method->drain();
    const auto started = Clock::now();
    Checkpoint out;
    int64_t bytes = 0, in_flight = 0, id = 0;
    if (!role.single_process) {  // every rank its shard, then rank 0 the manifest
      CheckpointShard shard = method->shard().value();
      id = shard.id = lead_value("checkpoint", fresh_checkpoint_id());
      in_flight = role.sum_at_lead("in-flight", shard.pipeline ? shard.pipeline->batches() : 0);
      bytes = role.sum_at_lead("checkpoint", save_shard(ckpt_path, shard));
      if (!role.lead) return;
      out.pipeline.start = shard.pipeline_start;
    } else if (!role.lead) {
      return;
    }
    out.config = cfg;
    out.tokenizer = ds->tokenizer;
    out.step = at_step;
    out.sampler_state = batches.state();
    if (!role.single_process) {
      bytes += save_manifest(ckpt_path, out, id, role.world, params.names());
    } else {
      const MethodState s = method->state();
      out.model = method->params();
      out.optimizer = s.optimizer;
      out.memory = s.memory;
      out.generator_states = s.generators;
      out.pipeline = s.pipeline;
      in_flight = s.pipeline.batches();
      bytes = save_checkpoint(ckpt_path, out);
    }
    reporter->checkpoint(at_step, ckpt_path, static_cast<double>(bytes),
                         std::chrono::duration<double>(Clock::now() - started).count(), in_flight);
  };
  // Every rank calls it. Processes evaluate through ring 0 (every rank of it runs its modules;
  // the middle ones never read the corpus, so a split of the lead's length gives them the
  // batches' shapes); otherwise the lead holds the whole model and evaluates params(). The lead's
  // result.
  auto validate = [&](int64_t at_step, int64_t max_windows) -> std::optional<EvalResult> {
    const std::optional<LossSumFn> ring = method->ring_loss_sum();
    if (!ring && !role.lead) return std::nullopt;
    EvalResult r;
    if (ring) {
      const int64_t n =
          lead_value("eval-tokens", role.lead ? static_cast<int64_t>(ds->valid.size()) : 0);
      const std::vector<int32_t> shapes_only(role.lead ? 0 : static_cast<size_t>(n));
      r = evaluate(model, *ring, role.lead ? ds->valid : shapes_only, rows, max_windows);
    } else {
      r = evaluate(model, method->params(), ds->valid, rows, max_windows);
    }
    if (!role.lead) return std::nullopt;
    r.bytes_per_token = valid_bytes_per_token;
    reporter->eval(at_step, "valid", r, chars);
    return r;
  };

  const BatchFn next_batch = [&](int64_t) { return batches.next(); };
  int64_t nonfinite = 0;
  const LossFn on_loss = [&](int64_t tick, double loss) {
    losses.push_back(loss);
    if (!std::isfinite(loss)) {
      // The update of a non-finite loss is dropped by the optimizers (skip_nonfinite) or
      // stops the run; it never enters the reported mean.
      if (++nonfinite > cfg.train.skip_nonfinite) {
        throw NumericError(
            "step " + std::to_string(tick + 1) + ": non-finite loss (" + std::to_string(loss) + ")",
            "lower --lr, keep --grad-clip on, or step over rare spikes with "
            "--skip-nonfinite N; the last checkpoint is kept");
      }
      return;
    }
    if (reporter) reporter->loss(tick, loss);
  };
  // When a stop may be requested, a run job goes in pieces of about opts.stop_check_seconds
  // (measured on the pieces before; the first is 10 ticks), and the request is looked at between
  // them. Splitting a run changes no result; each cut costs the pipeline about one tick.
  double seconds_per_tick = 0.0;
  auto run_ticks = [&](int64_t first, int64_t count) {
    for (int64_t t = first; t < first + count;) {
      int64_t n = first + count - t;
      if (opts.stop_check_seconds > 0) {
        if (lead_value("stop", stop_requested() != 0) != 0) return t;
        const int64_t piece = seconds_per_tick > 0
                                  ? static_cast<int64_t>(opts.stop_check_seconds / seconds_per_tick)
                                  : 10;
        n = std::min(n, std::max<int64_t>(1, piece));
        // Every rank must cut at the same ticks: rank 0's measurement decides.
        n = lead_value("piece", n);
      }
      const auto started = Clock::now();
      try {
        method->run(t, n, next_batch, on_loss);
      } catch (const NumericError& e) {
        const std::string what = e.what();
        if (what.rfind("step ", 0) == 0) throw;
        throw NumericError("steps " + std::to_string(t + 1) + "-" + std::to_string(t + n) + ": " +
                           what);
      }
      seconds_per_tick =
          std::chrono::duration<double>(Clock::now() - started).count() / static_cast<double>(n);
      for (const ModuleStats& m : method->take_diagnostics()) {
        if (reporter) reporter->module_stats(m);
      }
      t += n;
    }
    return first + count;
  };
  TrainResult result;
  for (const TrainJob& job : training_jobs(cfg.train, step, end)) {
    if (job.kind == TrainJob::kRun) {
      step = run_ticks(job.first, job.count);
      if (step < job.first + job.count) {
        result.stopped = true;
        break;
      }
      continue;
    }
    // Time spent evaluating or checkpointing does not count as training speed.
    if (reporter) reporter->pause_clock();
    if (job.kind == TrainJob::kEvaluate) fault_point("evaluation");
    if (job.kind == TrainJob::kCheckpoint) fault_point("checkpoint");
    if (job.kind == TrainJob::kEvaluate) validate(job.first, cfg.train.eval_batches * rows);
    if (job.kind == TrainJob::kCheckpoint || job.kind == TrainJob::kFinal) {
      // A run stopped early (stop_after) keeps its pipeline like any interruption.
      save(job.first, job.kind == TrainJob::kFinal && job.first == cfg.train.steps);
      if (job.kind == TrainJob::kCheckpoint) fault_point("checkpoint-written");
    }
    if (reporter) reporter->resume_clock();
  }

  if (result.stopped) {
    save(step, false);  // the pipeline kept: --resume continues the same run
    if (talk) {
      log << "stopped by signal at step " << step << "; checkpoint " << ckpt_path
          << " (continue with --resume " << ckpt_path << ")" << std::endl;
    }
  }
  if (!result.stopped && step == cfg.train.steps) {
    // The final evaluation, on the whole valid split.
    if (auto r = validate(step, 0)) result.valid = *r;
  }
  method->collect_params();  // the lead holds the whole model from here on
  result.steps = step;
  result.losses = losses;
  if (!role.lead) return result;
  result.checkpoint = ckpt_path;
  if (talk) {
    log << "checkpoint " << ckpt_path << " | " << reporter->elapsed() << " s | peak memory "
        << std::fixed << std::setprecision(0) << peak_rss_mib() << " MiB" << std::endl;
  }
  result.final_train_loss = reporter->last_mean();
  for (size_t i = 0; i < method->params().size(); ++i) {
    result.params.add(method->params().names()[i], method->params().tensors()[i].detach().clone());
  }
  return result;
}

}  // namespace ouroboros
