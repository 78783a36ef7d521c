// The training loop shared by every method and every rank: progress lines, JSONL metrics,
// periodic evaluation, atomic checkpoints and exact resume.
#include "ouroboros/run/train.h"

#include <algorithm>
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
#include "ouroboros/plan/planner.h"
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
  if (resolved_mode(cfg.engine) != Mode::kOuroboros) return estimated_memory_bytes(cfg, model, {});
  return estimated_memory_bytes(cfg, model, make_plan(cfg, model.cost_model(cfg.train.batch_size)));
}

double estimated_memory_bytes(const Config& cfg, const LanguageModel& model, const Plan& plan) {
  const double P = static_cast<double>(model.param_count());
  const Mode mode = resolved_mode(cfg.engine);
  const double K = static_cast<double>(cfg.engine.modules);
  // Moments (Muon: momentum and its last update), and the delay correction's last change.
  const double state =
      (cfg.train.optimizer == OptimizerKind::kSgd ? (cfg.train.momentum > 0 ? 1.0 : 0.0) : 2.0) +
      (delay_correction_scale(cfg.engine) > 0.0 ? 1.0 : 0.0);
  // Module k keeps K - k weight versions of its own weights: (K - 1) / 2 copies on average.
  const double versions = mode == Mode::kOuroboros ? (K - 1.0) / 2.0 : 0.0;
  const ModelConfig& m = model.config();
  const double B = static_cast<double>(cfg.train.batch_size), T = static_cast<double>(m.block_size),
               C = static_cast<double>(m.n_embd), H = static_cast<double>(m.n_head),
               L = static_cast<double>(m.n_layer), V = static_cast<double>(m.vocab_size);
  const double keys = model.recurrent() ? T + static_cast<double>(m.mem_len) : T;
  // Saved tensors of one block per sequence (attention scores, MLP, LayerNorms), and the logits.
  const double per_block = T * C * 34.0 + H * T * keys * 5.0, logits = T * V * 3.0;
  // Graphs held at once, in blocks times batches: one batch's for the other methods.
  double block_batches = L, head_batches = 1.0, inputs = 0.0;
  if (mode == Mode::kOuroboros) {
    // Module k < K holds its graph of K - k + 1 whole batches (a middle worker forwards every
    // piece before it back-propagates); module K one piece at a time. Recomputed, the delayed
    // modules keep one input per batch instead, and one piece's graph lives while recomputed.
    const double M = static_cast<double>(plan.micro_batches);
    const bool recompute = cfg.engine.recompute == Recompute::kDelayed;
    block_batches = 0.0;
    double largest_delayed = 0.0;
    for (const ModulePlan& mod : plan.partition.modules) {
      const double blocks = static_cast<double>(mod.end_block - mod.first_block);
      const double held = static_cast<double>(mod.delay() + 1);
      if (mod.head) {
        block_batches += blocks / M;
      } else if (recompute) {
        largest_delayed = std::max(largest_delayed, blocks);
        if (!mod.embed) inputs += held * T * C;
      } else {
        block_batches += blocks * held;
      }
    }
    block_batches += largest_delayed / M;
    head_batches = 1.0 / M;
  }
  const double activations = B * (per_block * block_batches + logits * head_batches + inputs);
  // The process itself: libtorch's code, the allocator's arenas, the thread stacks.
  constexpr double kRuntimeBytes = 64.0 * 1024 * 1024;
  return 4.0 * (P * (2.0 + state + versions) + activations) + kRuntimeBytes;
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

namespace {

// One training run on this rank, in named steps: the constructor prepares (checks, data, model,
// method, resume, out-dir), run() walks the jobs (ticks, validation, checkpoints) and finish()
// hands back the result. Every rank builds one; the lead also reads the corpus, reports and writes.
class Run {
 public:
  Run(Config cfg, const TrainOptions& opts);
  TrainResult run();

 private:
  void refuse_what_needs_processes() const;
  void load_inputs();
  void build_method();
  void open_batches();
  void resume();
  void open_out_dir();
  int64_t run_ticks(int64_t first, int64_t count);
  void on_loss(int64_t tick, double loss);
  std::optional<EvalResult> validate(int64_t at_step, int64_t max_windows);
  void save(int64_t at_step, bool final);
  TrainResult finish(TrainResult result);
  // Rank 0's value of what every rank must agree on (this process's own in one process).
  int64_t lead_value(const char* topic, int64_t mine) const {
    return role_.lead_value ? role_.lead_value(topic, mine) : mine;
  }

  Config cfg_;
  const TrainOptions& opts_;
  std::ostream& log_;
  const RankRole& role_;
  const bool talk_;
  std::optional<Checkpoint> ck_;
  std::optional<Dataset> ds_;
  std::string ckpt_path_;
  std::string run_;  // the run's id (the lead's), kept in its checkpoints and metrics
  std::unique_ptr<LanguageModel> model_;
  c10::Device device_{c10::kCPU};
  ParamSet params_;
  std::unique_ptr<Method> method_;
  // The rows of a tick's batch, all rings together: R rings of B rows draw, and evaluate, as one
  // ring of R*B.
  int64_t rows_ = 0;
  Batches batches_;
  int64_t step_ = 0, end_ = 0;
  double valid_bytes_per_token_ = 0.0;  // the lead's corpus
  double memory_estimate_ = 0.0;        // bytes; 0 where not estimated (processes, GPUs)
  std::optional<Plan> plan_;            // Ouroboros' plan where the estimate made it
  std::optional<DirLock> lock_;
  std::optional<Reporter> reporter_;
  std::vector<double> losses_;
  int64_t nonfinite_ = 0;
  double seconds_per_tick_ = 0.0;
};

Run::Run(Config cfg, const TrainOptions& opts)
    : cfg_(std::move(cfg)),
      opts_(opts),
      log_(opts.log ? *opts.log : std::cout),
      role_(opts.role),
      talk_(opts.role.lead && !opts.quiet) {
  cfg_.validate();
  refuse_what_needs_processes();
  load_inputs();
  build_method();
  open_batches();
  resume();
  end_ = opts_.stop_after >= 0 ? std::min(opts_.stop_after, cfg_.train.steps) : cfg_.train.steps;
  open_out_dir();
}

void Run::refuse_what_needs_processes() const {
  if (opts_.method_factory) return;
  if (cfg_.dist.replicas > 1) {
    throw ConfigError("replicas " + std::to_string(cfg_.dist.replicas) +
                          " needs one process per worker of every ring",
                      "start R*(K-1) processes, e.g. ouroboros launch --nproc N -- train ...");
  }
  if (cfg_.dist.backend != Backend::kAuto) {
    throw ConfigError(std::string("--backend ") + name_of(cfg_.dist.backend) +
                          " picks what carries messages between processes; the workers of one "
                          "process pass them in memory",
                      "drop --backend, or start processes (ouroboros launch --nproc N -- train)");
  }
}

// The checkpoint to resume, the corpus (on the ranks that draw batches), the model and the device,
// each checked before anything is written.
void Run::load_inputs() {
  if (!opts_.resume.empty()) ck_ = load_checkpoint(opts_.resume);
  if (role_.draws_batches) {
    ds_ = load_dataset(cfg_.data.data, name_of(cfg_.data.format), name_of(cfg_.data.tokenizer),
                       cfg_.model.vocab_size, cfg_.data.tokenizer_file);
  }
  // One process writes one file; processes each write a shard into a directory.
  ckpt_path_ =
      (std::filesystem::path(cfg_.train.out_dir) / (role_.single_process ? "ckpt.pt" : "ckpt"))
          .string();
  if (role_.lead) check_data(cfg_, *ds_, ck_, opts_.resume);
  cfg_.model.vocab_size = lead_value("vocab", cfg_.model.vocab_size);
  model_ = make_model(cfg_.model);
  device_ = run_device(cfg_.train.device, role_.local_rank);
  set_tf32(cfg_.train.tf32 != 0, device_);
  if (role_.lead && role_.single_process && device_.is_cpu()) {
    // Ouroboros' plan serves the estimate and then the engine (make_method), made once.
    if (resolved_mode(cfg_.engine) == Mode::kOuroboros) {
      plan_ = make_plan(cfg_, model_->cost_model(cfg_.train.batch_size));
    }
    memory_estimate_ = check_fits_memory(cfg_, *model_, plan_ ? *plan_ : Plan{});
  }
  if (role_.lead) {
    check_out_dir(cfg_, ckpt_path_, opts_.resume, ck_ ? ck_->run : "", opts_.overwrite);
    check_is_metrics(metrics_path(cfg_));
  }
  // A checkpoint written before runs had ids continues under a new one.
  run_ = ck_ && !ck_->run.empty() ? ck_->run : fresh_run_id();

  at::set_num_threads(static_cast<int>(cfg_.train.threads));
  if (ds_) valid_bytes_per_token_ = bytes_per_token(ds_->tokenizer, ds_->valid);
  if (talk_) {
    const std::string warning = blas_warning(check_blas());
    if (!warning.empty()) log_ << warning << std::endl;
    log_ << "config " << cfg_.to_json().dump() << std::endl;
    log_ << "data " << ds_->description << std::endl;
    log_ << "run " << run_ << (ck_ ? " resumed" : " started") << " | out-dir " << cfg_.train.out_dir
         << std::endl;
  }
}

// The weights (the checkpoint's, carried to this layout, or fresh) and the method that trains them.
void Run::build_method() {
  const std::string relayout = ck_ ? carry_to_layout(*ck_, cfg_, *model_, opts_.resume) : "";
  if (talk_ && !relayout.empty()) log_ << relayout << std::endl;
  // Initialised on the CPU (the same weights wherever the run trains), then moved.
  // A checkpoint's weights are copied once, to where the run trains (ParamSet::to copies).
  params_ = ck_ ? (device_.is_cpu() ? ck_->model.snapshot() : ck_->model.to(device_))
                : model_->init_params(cfg_.train.seed).to(device_);
  if (talk_ && !device_.is_cpu()) log_ << "device " << describe_device(device_) << std::endl;
  if (talk_) {
    log_ << "model " << name_of(cfg_.model.model) << ": " << cfg_.model.n_layer << " layers, "
         << cfg_.model.n_embd << " wide, " << params_.numel() << " parameters";
    if (memory_estimate_ > 0) {
      log_ << " | memory estimate " << std::llround(memory_estimate_ / (1024.0 * 1024.0)) << " MiB";
    }
    log_ << std::endl;
  }
  method_ = opts_.method_factory ? opts_.method_factory(cfg_, *model_, params_)
                                 : make_method(cfg_, *model_, params_, plan_ ? &*plan_ : nullptr);
  if (talk_) log_ << method_->describe() << std::flush;
}

void Run::open_batches() {
  rows_ = cfg_.train.batch_size * cfg_.dist.replicas;
  if (!ds_) return;
  if (model_->recurrent()) {
    batches_.streams.emplace(ds_->train, cfg_.model.block_size, rows_);
  } else {
    batches_.sampler.emplace(ds_->train, cfg_.model.block_size, rows_,
                             static_cast<uint64_t>(cfg_.train.seed));
  }
}

// The one restore path: the method's state and the sampler's, at the checkpoint's step.
void Run::resume() {
  if (!ck_) return;
  MethodState s = method_state(*ck_);
  // Another layout's checkpoint has none (carry_to_layout): the method's own fresh ones.
  if (s.generators.empty()) s.generators = method_->state().generators;
  step_ = ck_->step;
  method_->restore(s, step_);
  batches_.set_state(ck_->sampler_state);
  if (talk_) log_ << "resumed from " << opts_.resume << " at step " << step_ << std::endl;
}

// The out-dir is the lead's for the whole run: a second run into it is refused.
void Run::open_out_dir() {
  if (!role_.lead) return;
  std::filesystem::create_directories(cfg_.train.out_dir);
  lock_.emplace(cfg_.train.out_dir);
  remove_partial_writes(ckpt_path_);
  reporter_.emplace(cfg_, run_, log_, opts_.quiet, !ck_ || opts_.overwrite, step_);
}

// The job loop: ticks, then whatever falls at the step they reach (validation, a checkpoint).
TrainResult Run::run() {
  TrainResult result;
  for (const TrainJob& job : training_jobs(cfg_.train, step_, end_)) {
    if (job.kind == TrainJob::kRun) {
      step_ = run_ticks(job.first, job.count);
      if (step_ < job.first + job.count) {
        result.stopped = true;
        break;
      }
      continue;
    }
    // Time spent evaluating or checkpointing does not count as training speed.
    if (reporter_) reporter_->pause_clock();
    if (job.kind == TrainJob::kEvaluate) fault_point("evaluation");
    if (job.kind == TrainJob::kCheckpoint) fault_point("checkpoint");
    if (job.kind == TrainJob::kEvaluate) validate(job.first, cfg_.train.eval_batches * rows_);
    if (job.kind == TrainJob::kCheckpoint || job.kind == TrainJob::kFinal) {
      // A run stopped early (stop_after) keeps its pipeline like any interruption.
      save(job.first, job.kind == TrainJob::kFinal && job.first == cfg_.train.steps);
      if (job.kind == TrainJob::kCheckpoint) fault_point("checkpoint-written");
    }
    if (reporter_) reporter_->resume_clock();
  }
  if (result.stopped) {
    save(step_, false);  // the pipeline kept: --resume continues the same run
    if (talk_) {
      log_ << "stopped by signal at step " << step_ << "; checkpoint " << ckpt_path_
           << " (continue with --resume " << ckpt_path_ << ")" << std::endl;
    }
  }
  if (!result.stopped && step_ == cfg_.train.steps) {
    // The final evaluation, on the whole valid split.
    if (auto r = validate(step_, 0)) result.valid = *r;
  }
  return finish(std::move(result));
}

// When a stop may be requested, a run job goes in pieces of about opts.stop_check_seconds
// (measured on the pieces before; the first is 10 ticks), and the request is looked at between
// them. Splitting a run changes no result; each cut costs the pipeline about one tick. Returns the
// tick reached.
int64_t Run::run_ticks(int64_t first, int64_t count) {
  const BatchFn next_batch = [this](int64_t) { return batches_.next(); };
  const LossFn loss_fn = [this](int64_t tick, double loss) { on_loss(tick, loss); };
  for (int64_t t = first; t < first + count;) {
    int64_t n = first + count - t;
    if (opts_.stop_check_seconds > 0) {
      if (lead_value("stop", stop_requested() != 0) != 0) return t;
      const int64_t piece = seconds_per_tick_ > 0
                                ? static_cast<int64_t>(opts_.stop_check_seconds / seconds_per_tick_)
                                : 10;
      n = std::min(n, std::max<int64_t>(1, piece));
      // Every rank must cut at the same ticks: rank 0's measurement decides.
      n = lead_value("piece", n);
    }
    const auto started = Clock::now();
    try {
      method_->run(t, n, next_batch, loss_fn);
    } catch (const NumericError& e) {
      const std::string what = e.what();
      if (what.rfind("step ", 0) == 0) throw;
      throw NumericError("steps " + std::to_string(t + 1) + "-" + std::to_string(t + n) + ": " +
                         what);
    }
    seconds_per_tick_ =
        std::chrono::duration<double>(Clock::now() - started).count() / static_cast<double>(n);
    for (const ModuleStats& m : method_->take_diagnostics()) {
      if (reporter_) reporter_->module_stats(m);
    }
    t += n;
  }
  return first + count;
}

void Run::on_loss(int64_t tick, double loss) {
  losses_.push_back(loss);
  if (!std::isfinite(loss)) {
    // The update of a non-finite loss is dropped by the optimizers (skip_nonfinite) or
    // stops the run; it never enters the reported mean.
    if (++nonfinite_ > cfg_.train.skip_nonfinite) {
      throw NumericError(
          "step " + std::to_string(tick + 1) + ": non-finite loss (" + std::to_string(loss) + ")",
          "lower --lr, keep --grad-clip on, or step over rare spikes with "
          "--skip-nonfinite N; the last checkpoint is kept");
    }
    return;
  }
  if (reporter_) reporter_->loss(tick, loss);
}

// Every rank calls it. Processes evaluate through ring 0 (every rank of it runs its modules;
// the middle ones never read the corpus, so a split of the lead's length gives them the
// batches' shapes); otherwise the lead holds the whole model and evaluates params(). The lead's
// result.
std::optional<EvalResult> Run::validate(int64_t at_step, int64_t max_windows) {
  const std::optional<LossSumFn> ring = method_->ring_loss_sum();
  if (!ring && !role_.lead) return std::nullopt;
  EvalResult r;
  if (ring) {
    const int64_t n =
        lead_value("eval-tokens", role_.lead ? static_cast<int64_t>(ds_->valid.size()) : 0);
    const std::vector<int32_t> shapes_only(role_.lead ? 0 : static_cast<size_t>(n));
    r = evaluate(*model_, *ring, role_.lead ? ds_->valid : shapes_only, rows_, max_windows);
  } else {
    r = evaluate(*model_, method_->params(), ds_->valid, rows_, max_windows);
  }
  if (!role_.lead) return std::nullopt;
  r.bytes_per_token = valid_bytes_per_token_;
  reporter_->eval(at_step, "valid", r, ds_->tokenizer.is_character_level());
  return r;
}

// A checkpoint keeps the batches in flight where the method can (resuming continues the very
// same run); the last one, and those of methods that cannot, drain the pipeline first.
void Run::save(int64_t at_step, bool final) {
  if (final || !method_->saves_in_flight()) method_->drain();
  const auto started = Clock::now();
  Checkpoint out;
  int64_t bytes = 0, in_flight = 0, id = 0;
  if (!role_.single_process) {  // every rank its shard, then rank 0 the manifest
    CheckpointShard shard = method_->shard().value();
    id = shard.id = lead_value("checkpoint", fresh_checkpoint_id());
    in_flight = role_.sum_at_lead("in-flight", shard.pipeline ? shard.pipeline->batches() : 0);
    bytes = role_.sum_at_lead("checkpoint", save_shard(ckpt_path_, shard));
    if (!role_.lead) return;
    out.pipeline.start = shard.pipeline_start;
  } else if (!role_.lead) {
    return;
  }
  out.run = run_;
  out.config = cfg_;
  out.tokenizer = ds_->tokenizer;
  out.step = at_step;
  out.sampler_state = batches_.state();
  if (!role_.single_process) {
    bytes += save_manifest(ckpt_path_, out, id, role_.world, params_.names());
  } else {
    const MethodState s = method_->state();
    out.model = method_->params();
    out.optimizer = s.optimizer;
    out.memory = s.memory;
    out.generator_states = s.generators;
    out.pipeline = s.pipeline;
    in_flight = s.pipeline.batches();
    bytes = save_checkpoint(ckpt_path_, out);
  }
  reporter_->checkpoint(at_step, ckpt_path_, static_cast<double>(bytes),
                        std::chrono::duration<double>(Clock::now() - started).count(), in_flight);
}

TrainResult Run::finish(TrainResult result) {
  method_->collect_params();  // the lead holds the whole model from here on
  result.steps = step_;
  result.losses = losses_;
  if (!role_.lead) return result;
  result.checkpoint = ckpt_path_;
  if (talk_) {
    log_ << "checkpoint " << ckpt_path_ << " | " << reporter_->elapsed() << " s | peak memory "
         << std::fixed << std::setprecision(0) << peak_rss_mib() << " MiB" << std::endl;
  }
  result.final_train_loss = reporter_->last_mean();
  for (size_t i = 0; i < method_->params().size(); ++i) {
    result.params.add(method_->params().names()[i],
                      method_->params().tensors()[i].detach().clone());
  }
  return result;
}

}  // namespace

TrainResult train(Config cfg, const TrainOptions& opts) { return Run(std::move(cfg), opts).run(); }

}  // namespace ouroboros
