// The reference trainer, evaluation, and the training loop shared by every method: progress lines,
// JSONL metrics, periodic evaluation, atomic checkpoints and exact resume.
#include "ouroboros/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "ouroboros/baselines.h"
#include "ouroboros/checkpoint.h"
#include "ouroboros/engine.h"
#include "ouroboros/errors.h"
#include "ouroboros/stream.h"
#include "ouroboros/transformer_xl.h"
#include "ouroboros/system.h"

namespace ouroboros {

uint64_t dropout_seed(uint64_t seed, int64_t module) {
  return seed * 1000003ULL + static_cast<uint64_t>(module) * 7919ULL;
}

ReferenceTrainer::ReferenceTrainer(const LanguageModel& model, ParamSet params, const TrainConfig& cfg)
    : model_(model), params_(std::move(params)), cfg_(cfg), optimizer_(cfg, params_) {
  ctx_.training = true;
  ctx_.generator = make_generator(dropout_seed(static_cast<uint64_t>(cfg.seed), 1));
}

void ReferenceTrainer::run(int64_t first, int64_t count, const BatchFn& batch,
                           const LossFn& on_loss) {
  for (int64_t t = first; t < first + count; ++t) {
    auto [x, y] = batch(t);
    Tensor loss = model_.loss(params_, x, y, ctx_);
    loss.backward();
    optimizer_.apply(learning_rate(cfg_, t), cfg_.grad_clip);
    on_loss(t, loss.item<double>());
  }
}

std::vector<Tensor> ReferenceTrainer::generator_states() const {
  return {ctx_.generator->get_state()};
}

void ReferenceTrainer::set_generator_states(const std::vector<Tensor>& s) {
  if (s.size() != 1) {
    throw CheckpointError("checkpoint holds " + std::to_string(s.size()) +
                          " dropout generators, the reference trainer needs 1",
                          "resume with the --modules the checkpoint was written with");
  }
  ctx_.generator->set_state(s[0]);
}


std::unique_ptr<Method> make_method(const Config& cfg, const LanguageModel& model, ParamSet params) {
  keep_freed_memory();
  const std::string mode = resolved_mode(cfg.engine);
  if (mode == "gpipe") return std::make_unique<GPipeTrainer>(model, std::move(params), cfg);
  if (mode == "data-parallel") {
    return std::make_unique<DataParallelTrainer>(model, std::move(params), cfg);
  }
  if (mode == "sequential") {
    return std::make_unique<ReferenceTrainer>(model, std::move(params), cfg.train);
  }
  return std::make_unique<OuroborosEngine>(model, std::move(params), cfg);
}

namespace {

EvalResult evaluate_recurrent(const LanguageModel& model, const ParamSet& params,
                              const std::vector<int32_t>& tokens, int64_t batch_size,
                              int64_t max_windows) {
  const auto& xl = dynamic_cast<const TransformerXL&>(model);
  const int64_t segments = max_windows > 0 ? std::max<int64_t>(1, max_windows / batch_size) : 0;
  auto [total, count] = evaluate_streams(model, params, tokens, batch_size, xl.eval_tgt_len(),
                                         xl.eval_lengths(), segments);
  EvalResult r;
  r.tokens = count;
  r.loss = total / static_cast<double>(count);
  return r;
}

}  // namespace

double EvalResult::bpc() const { return loss / std::log(2.0); }
double EvalResult::perplexity() const { return std::exp(loss); }

EvalResult evaluate(const LanguageModel& model, const ParamSet& params, const std::vector<int32_t>& tokens,
                    int64_t batch_size, int64_t max_windows) {
  torch::NoGradGuard no_grad;
  if (model.recurrent()) return evaluate_recurrent(model, params, tokens, batch_size, max_windows);
  const int64_t T = model.config().block_size;
  int64_t windows = num_eval_windows(static_cast<int64_t>(tokens.size()), T);
  if (windows == 0) {
    throw DataError("evaluation split has " + std::to_string(tokens.size()) +
                        " tokens, fewer than one window of block_size+1 = " +
                        std::to_string(T + 1),
                    "use more text or a smaller --block-size");
  }
  if (max_windows > 0) windows = std::min(windows, max_windows);
  ForwardContext ctx;  // evaluation: no dropout
  double total = 0.0;
  for (int64_t first = 0; first < windows; first += batch_size) {
    const int64_t n = std::min(batch_size, windows - first);
    auto [x, y] = eval_windows(tokens, T, first, n);
    total += model.loss_sum(params, x, y, ctx).item<double>();
  }
  EvalResult r;
  r.tokens = windows * T;
  r.loss = total / static_cast<double>(r.tokens);
  return r;
}

namespace {

using Clock = std::chrono::steady_clock;

std::string eval_line(const EvalResult& r, bool chars) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(4) << "loss " << r.loss;
  if (chars) {
    s << " | bpc " << r.bpc();
  } else {
    s << " | ppl " << std::setprecision(2) << r.perplexity();
  }
  return s.str();
}

nlohmann::json eval_json(const EvalResult& r, bool chars) {
  nlohmann::json j = {{"loss", r.loss}, {"tokens", r.tokens}};
  if (chars) {
    j["bpc"] = r.bpc();
  } else {
    j["perplexity"] = r.perplexity();
  }
  return j;
}

// Progress lines and the JSONL metrics file.
class Reporter {
 public:
  Reporter(const Config& cfg, std::ostream& log, bool quiet, bool fresh, int64_t first_step)
      : cfg_(cfg), log_(log), quiet_(quiet), last_step_(first_step) {
    std::string path = cfg.train.metrics.empty()
                           ? (std::filesystem::path(cfg.train.out_dir) / "metrics.jsonl").string()
                           : cfg.train.metrics;
    auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    metrics_.open(path, fresh ? std::ios::trunc : std::ios::app);
    if (!metrics_) throw Error("cannot write metrics file " + path, "check --out-dir / --metrics");
    start_ = last_time_ = Clock::now();
  }

  void loss(int64_t tick, double value) {
    losses_.push_back(value);
    window_sum_ += value;
    ++window_count_;
    const int64_t done = tick + 1;
    if (done % cfg_.train.log_interval != 0 && done != cfg_.train.steps) return;
    const auto now = Clock::now();
    const double dt = std::chrono::duration<double>(now - last_time_).count();
    const int64_t rows = cfg_.train.batch_size * cfg_.dist.replicas;  // all rings
    const double tokens = static_cast<double>((done - last_step_) * rows * cfg_.model.block_size);
    const double tps = dt > 0 ? tokens / dt : 0.0;
    const double mean = window_sum_ / static_cast<double>(window_count_);
    const double eta = tps > 0 ? static_cast<double>((cfg_.train.steps - done) * rows *
                                                     cfg_.model.block_size) / tps
                               : 0.0;
    last_mean_ = mean;
    if (!quiet_) {
      std::ostringstream s;
      s << "step " << std::setw(6) << done << "/" << cfg_.train.steps << " | loss " << std::fixed
        << std::setprecision(4) << mean << " | lr " << std::scientific << std::setprecision(2)
        << learning_rate(cfg_.train, tick) << " | " << std::fixed << std::setprecision(0) << tps
        << " tok/s | ETA " << format_duration(eta);
      log_ << s.str() << std::endl;
    }
    metrics_ << nlohmann::json{{"step", done},
                               {"loss", mean},
                               {"lr", learning_rate(cfg_.train, tick)},
                               {"tokens_per_s", tps},
                               {"elapsed_s", elapsed()}}
                    .dump()
             << std::endl;
    window_sum_ = 0.0;
    window_count_ = 0;
    last_step_ = done;
    last_time_ = now;
  }

  void eval(int64_t step, const std::string& split, const EvalResult& r, bool chars) {
    if (!quiet_) log_ << "eval " << split << " @ step " << step << " | " << eval_line(r, chars) << std::endl;
    nlohmann::json j = eval_json(r, chars);
    j["step"] = step;
    j["split"] = split;
    j["elapsed_s"] = elapsed();
    metrics_ << j.dump() << std::endl;
  }

  // Time spent evaluating or checkpointing does not count as training speed.
  void pause_clock() { paused_at_ = Clock::now(); }
  void resume_clock() { last_time_ += Clock::now() - paused_at_; }

  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  double last_mean() const { return last_mean_; }
  const std::vector<double>& losses() const { return losses_; }

 private:
  const Config& cfg_;
  std::ostream& log_;
  bool quiet_;
  std::ofstream metrics_;
  Clock::time_point start_, last_time_, paused_at_;
  int64_t last_step_;
  double window_sum_ = 0.0, last_mean_ = 0.0;
  int64_t window_count_ = 0;
  std::vector<double> losses_;
};

ParamSet trainable_copy(const ParamSet& p) {
  ParamSet out;
  for (size_t i = 0; i < p.size(); ++i) {
    out.add(p.names()[i], p.tensors()[i].detach().clone().requires_grad_(true));
  }
  return out;
}

int64_t next_boundary(int64_t step, int64_t interval, int64_t end) {
  if (interval <= 0) return end;
  return std::min(end, (step / interval + 1) * interval);
}

}  // namespace

TrainResult train(Config cfg, const TrainOptions& opts) {
  std::ostream& log = opts.log ? *opts.log : std::cout;
  cfg.validate();

  if (cfg.dist.replicas > 1 && !opts.method_factory) {
    throw ConfigError("replicas " + std::to_string(cfg.dist.replicas) +
                          " needs one process per worker of every ring",
                      "start R*(K-1) processes, e.g. ouroboros launch --nproc N -- train ...");
  }
  std::optional<Checkpoint> ck;
  if (!opts.resume.empty()) ck = load_checkpoint(opts.resume);
  Dataset ds = load_dataset(cfg.data.data, cfg.data.format, cfg.data.tokenizer);
  const int64_t V = ds.tokenizer.vocab_size();
  if (cfg.model.vocab_size == 0) cfg.model.vocab_size = V;
  // Before the vocab_size check, so a resume on other data reports the vocabulary that differs.
  if (ck) check_compatible(*ck, cfg.model, ds.tokenizer, opts.resume);
  if (cfg.model.vocab_size != V) {
    throw ConfigError("vocab_size " + std::to_string(cfg.model.vocab_size) +
                          " does not match the tokenizer's " + std::to_string(V),
                      "leave --vocab-size at 0 to take it from the tokenizer");
  }
  // The run ends with an evaluation: a too short valid split must fail before out_dir is touched.
  if (num_eval_windows(static_cast<int64_t>(ds.valid.size()), cfg.model.block_size) == 0) {
    throw DataError("valid split has " + std::to_string(ds.valid.size()) +
                        " tokens, fewer than one window of block_size+1 = " +
                        std::to_string(cfg.model.block_size + 1),
                    "use more text or a smaller --block-size");
  }

  at::set_num_threads(static_cast<int>(cfg.train.threads));
  if (!opts.quiet) {
    const std::string warning = blas_warning(check_blas());
    if (!warning.empty()) log << warning << std::endl;
    log << "config " << cfg.to_json().dump() << std::endl;
    log << "data " << ds.description << std::endl;
  }

  std::unique_ptr<LanguageModel> model_ptr = make_model(cfg.model);
  const LanguageModel& model = *model_ptr;
  ParamSet params = ck ? trainable_copy(ck->model) : model.init_params(cfg.train.seed);
  if (!opts.quiet) {
    log << "model " << cfg.model.model << ": " << cfg.model.n_layer << " layers, "
        << cfg.model.n_embd << " wide, " << params.numel() << " parameters" << std::endl;
  }
  std::unique_ptr<Method> method = opts.method_factory
                                       ? opts.method_factory(cfg, model, params)
                                       : make_method(cfg, model, params);
  if (!opts.quiet) {
    if (auto* engine = dynamic_cast<OuroborosEngine*>(method.get())) log << engine->plan_summary();
    if (auto* gpipe = dynamic_cast<GPipeTrainer*>(method.get())) {
      log << "gpipe: " << cfg.engine.micro_batches << " micro-batches per step\n"
          << gpipe->plan().partition.describe(gpipe->plan().cost);
    }
    if (resolved_mode(cfg.engine) == "data-parallel") {
      log << "data-parallel: " << cfg.engine.workers << " replicas x "
          << cfg.train.batch_size / cfg.engine.workers << " sequences" << std::endl;
    }
  }

  // With R replicas a tick draws one batch of R*B rows; ring r trains on rows [rB, (r+1)B).
  const int64_t rows = cfg.train.batch_size * cfg.dist.replicas;
  BatchSampler sampler(ds.train, cfg.model.block_size, rows, static_cast<uint64_t>(cfg.train.seed));
  // A recurrent model reads the training text as parallel streams, segment after segment.
  std::optional<StreamSampler> streams;
  if (model.recurrent()) streams.emplace(ds.train, cfg.model.block_size, rows);
  int64_t step = 0;
  if (ck) {
    method->load_optimizer_state(ck->optimizer);
    method->set_generator_states(ck->generator_states);
    sampler.set_state(ck->sampler_state);
    if (streams) streams->set_state(ck->sampler_state);
    method->set_memory(ck->memory);
    step = ck->step;
    method->resume_at(step);
    if (!opts.quiet) log << "resumed from " << opts.resume << " at step " << step << std::endl;
  }
  const int64_t end = opts.stop_after >= 0 ? std::min(opts.stop_after, cfg.train.steps)
                                           : cfg.train.steps;
  const bool chars = ds.tokenizer.is_character_level();
  const std::string ckpt_path = (std::filesystem::path(cfg.train.out_dir) / "ckpt.pt").string();
  Reporter reporter(cfg, log, opts.quiet, !ck, step);

  auto save = [&](int64_t at_step) {
    method->drain();
    Checkpoint out;
    out.config = cfg;
    out.tokenizer = ds.tokenizer;
    out.model = method->params();
    out.optimizer = method->optimizer_state();
    out.step = at_step;
    out.sampler_state = streams ? streams->state() : sampler.state();
    out.memory = method->memory();
    out.generator_states = method->generator_states();
    save_checkpoint(ckpt_path, out);
  };

  const BatchFn next_batch = [&](int64_t) { return streams ? streams->next() : sampler.next(); };
  const LossFn on_loss = [&](int64_t tick, double loss) { reporter.loss(tick, loss); };
  while (step < end) {
    const int64_t stop = std::min(next_boundary(step, cfg.train.eval_interval, end),
                                  next_boundary(step, cfg.train.checkpoint_interval, end));
    method->run(step, stop - step, next_batch, on_loss);
    step = stop;
    reporter.pause_clock();
    if (cfg.train.eval_interval > 0 && step % cfg.train.eval_interval == 0 &&
        step < cfg.train.steps) {
      EvalResult r = evaluate(model, method->params(), ds.valid, cfg.train.batch_size,
                              cfg.train.eval_batches * cfg.train.batch_size);
      reporter.eval(step, "valid", r, chars);
    }
    if (cfg.train.checkpoint_interval > 0 && step % cfg.train.checkpoint_interval == 0 &&
        step < end) {
      save(step);
    }
    reporter.resume_clock();
  }

  TrainResult result;
  save(step);
  result.checkpoint = ckpt_path;
  result.steps = step;
  if (step == cfg.train.steps) {
    result.valid = evaluate(model, method->params(), ds.valid, cfg.train.batch_size);
    reporter.eval(step, "valid", result.valid, chars);
  }
  if (!opts.quiet) {
    log << "checkpoint " << ckpt_path << " | " << reporter.elapsed() << " s | peak memory "
        << std::fixed << std::setprecision(0) << peak_rss_mib() << " MiB" << std::endl;
  }
  result.final_train_loss = reporter.last_mean();
  result.losses = reporter.losses();
  for (size_t i = 0; i < method->params().size(); ++i) {
    result.params.add(method->params().names()[i], method->params().tensors()[i].detach().clone());
  }
  return result;
}

}  // namespace ouroboros
