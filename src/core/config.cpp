// The field table behind Config: each field once, with its flag and help line. JSON files, flags
// and checkpoints all read and write through it.
#include "ouroboros/core/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <sstream>
#include <utility>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

// A number as the user would write it: 1.5, 1e-08.
std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

using json = nlohmann::json;

struct Field {
  ConfigField info;
  std::function<json(const Config&)> get;
  std::function<void(Config&, const json&)> set;
};

std::string flag_of(const std::string& key) {
  std::string leaf = key.substr(key.find('.') + 1);
  for (char& c : leaf) {
    if (c == '_') c = '-';
  }
  return "--" + leaf;
}

// Converts a JSON value to the member's type, refusing silent conversions (a string for an int,
// a fraction for an int).
template <typename T>
T convert(const std::string& key, const json& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string())
      throw ConfigError("config key " + key + " must be a string, got " + v.dump());
    return v.get<std::string>();
  } else if constexpr (std::is_same_v<T, int64_t>) {
    if (!v.is_number_integer())
      throw ConfigError("config key " + key + " must be an integer, got " + v.dump());
    return v.get<int64_t>();
  } else {
    if (!v.is_number())
      throw ConfigError("config key " + key + " must be a number, got " + v.dump());
    return v.get<double>();
  }
}

#define OUROBOROS_FIELD(section, name, help)                                                 \
  Field {                                                                                    \
    ConfigField{#section "." #name, flag_of(#section "." #name), help},                      \
        [](const Config& c) { return json(c.section.name); }, [](Config& c, const json& v) { \
          c.section.name = convert<decltype(c.section.name)>(#section "." #name, v);         \
        }                                                                                    \
  }

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      OUROBOROS_FIELD(model, model, "model family: gpt | transformer-xl"),
      OUROBOROS_FIELD(model, n_layer, "Transformer blocks (L)"),
      OUROBOROS_FIELD(model, n_head, "attention heads; n_embd must be divisible by it"),
      OUROBOROS_FIELD(model, n_embd, "residual stream width (C)"),
      OUROBOROS_FIELD(model, block_size, "context length in tokens (T)"),
      OUROBOROS_FIELD(model, vocab_size,
                      "vocabulary size (V); 0 = from the tokenizer; bpe and unigram learn V "
                      "pieces and need it"),
      OUROBOROS_FIELD(model, dropout, "dropout probability"),
      OUROBOROS_FIELD(model, dtype,
                      "float32 | bfloat16: matrix products of the forward in bfloat16 (autocast); "
                      "weights and optimizer state stay float32"),
      OUROBOROS_FIELD(model, d_inner, "transformer-xl: feed-forward width; 0 = 4 n_embd"),
      OUROBOROS_FIELD(model, attn_dropout, "transformer-xl: dropout on attention probabilities"),
      OUROBOROS_FIELD(model, pre_lnorm, "transformer-xl: 1 = pre-LayerNorm, 0 = post-LayerNorm"),
      OUROBOROS_FIELD(model, mem_len,
                      "transformer-xl: memory length per layer (segment = block_size)"),
      OUROBOROS_FIELD(model, clamp_len, "transformer-xl: clamp relative distances; 0 = no clamp"),
      OUROBOROS_FIELD(model, same_length,
                      "transformer-xl: 1 = same attention length for all queries"),
      OUROBOROS_FIELD(model, eval_tgt_len, "transformer-xl: evaluation segment; 0 = block_size"),
      OUROBOROS_FIELD(model, eval_mem_len, "transformer-xl: evaluation memory; -1 = mem_len"),
      OUROBOROS_FIELD(model, eval_clamp_len,
                      "transformer-xl: evaluation clamp_len; -1 = clamp_len"),
      OUROBOROS_FIELD(model, eval_same_length,
                      "transformer-xl: evaluation same_length; -1 = same_length"),
      OUROBOROS_FIELD(model, adaptive_cutoffs,
                      "transformer-xl: adaptive softmax cutoffs a,b,...; empty = full softmax"),
      OUROBOROS_FIELD(model, div_val,
                      "transformer-xl: adaptive embedding width divisor per cluster"),
      OUROBOROS_FIELD(data, data, "corpus file or directory (ignored for --format fortunes)"),
      OUROBOROS_FIELD(data, format, "auto | text | enwik8 | text8 | wikitext103 | fortunes"),
      OUROBOROS_FIELD(data, tokenizer,
                      "auto | byte | char | word | bpe | unigram (bpe, unigram: sentencepiece, "
                      "need --vocab-size)"),
      OUROBOROS_FIELD(train, steps, "training steps (ticks)"),
      OUROBOROS_FIELD(train, batch_size, "sequences per step (B)"),
      OUROBOROS_FIELD(train, optimizer, "sgd | adam | adamw | qhadam | nadam"),
      OUROBOROS_FIELD(train, lr, "peak learning rate"),
      OUROBOROS_FIELD(train, min_lr, "learning rate at the end of the cosine decay"),
      OUROBOROS_FIELD(train, warmup_steps, "linear learning-rate warm-up steps"),
      OUROBOROS_FIELD(train, schedule, "learning-rate schedule after warm-up: cosine | constant"),
      OUROBOROS_FIELD(train, momentum, "SGD momentum"),
      OUROBOROS_FIELD(train, beta1, "Adam beta1"),
      OUROBOROS_FIELD(train, beta2, "Adam beta2"),
      OUROBOROS_FIELD(train, eps, "Adam epsilon"),
      OUROBOROS_FIELD(train, qh_nu, "qhadam: weight of the momentum against the raw gradient"),
      OUROBOROS_FIELD(train, momentum_decay, "nadam: momentum schedule decay psi"),
      OUROBOROS_FIELD(train, weight_decay, "weight decay on matrices and embeddings"),
      OUROBOROS_FIELD(train, grad_clip, "max gradient norm per update; 0 disables"),
      OUROBOROS_FIELD(train, skip_nonfinite,
                      "updates with an inf/nan gradient to skip (per worker); more stop the run"),
      OUROBOROS_FIELD(train, seed, "seed for initialisation, batches and dropout"),
      OUROBOROS_FIELD(train, threads, "libtorch intra-op threads per worker"),
      OUROBOROS_FIELD(train, device,
                      "auto | cpu | cuda | cuda:N; auto = cuda when a GPU is visible; processes on "
                      "cuda:LOCAL_RANK, Ouroboros threads on cuda:(worker mod GPUs)"),
      OUROBOROS_FIELD(train, tf32, "1 = float32 matrix products on CUDA in TF32; 0 = full float32"),
      OUROBOROS_FIELD(train, eval_interval, "evaluate every N steps; 0 = only at the end"),
      OUROBOROS_FIELD(train, eval_batches, "batches per periodic evaluation; 0 = whole split"),
      OUROBOROS_FIELD(train, log_interval, "progress line every N steps"),
      OUROBOROS_FIELD(train, out_dir, "directory for checkpoints and metrics"),
      OUROBOROS_FIELD(train, checkpoint_interval, "checkpoint every N steps; 0 = only at the end"),
      OUROBOROS_FIELD(train, metrics, "JSONL metrics file; empty = <out_dir>/metrics.jsonl"),
      OUROBOROS_FIELD(
          train, diagnostics_interval,
          "per-module gradient norm, update RMS and update cosine every N steps; 0 = off"),
      OUROBOROS_FIELD(engine, modules,
                      "K modules; 1 = plain backprop, >= 2 = Ouroboros on K-1 workers"),
      OUROBOROS_FIELD(engine, partition, "even | auto | a1,a2,... block boundaries"),
      OUROBOROS_FIELD(engine, sync_warmup, "first M ticks without delay (synchronous)"),
      OUROBOROS_FIELD(engine, weight_predict,
                      "auto | none | optimizer: delayed modules forward at weights predicted along "
                      "the optimizer's direction; auto = optimizer in mode ouroboros"),
      OUROBOROS_FIELD(engine, predict_scale,
                      "weight prediction: horizon in updates per tick of delay"),
      OUROBOROS_FIELD(engine, stale_lr, "none | pipemare: learning rate scaled down by delay"),
      OUROBOROS_FIELD(engine, stale_lr_ticks, "pipemare: ticks until the delay scaling fades out"),
      OUROBOROS_FIELD(dist, replicas, "R rings of K-1 worker processes, gradients averaged"),
      OUROBOROS_FIELD(dist, timeout, "seconds to wait on a silent peer process before exiting"),
      OUROBOROS_FIELD(dist, backend,
                      "auto | gloo | nccl between processes; auto = nccl on GPUs where built, "
                      "else gloo"),
      OUROBOROS_FIELD(engine, mode,
                      "auto | sequential | ouroboros | gpipe | data-parallel; auto = sequential "
                      "for --modules 1, else ouroboros"),
      OUROBOROS_FIELD(engine, micro_batches, "gpipe: micro-batches per step; divides batch_size"),
      OUROBOROS_FIELD(engine, workers, "data-parallel: replicas (threads); divides batch_size"),
  };
  return table;
}
#undef OUROBOROS_FIELD

const Field& find_field(const std::string& key) {
  for (const auto& f : fields()) {
    if (f.info.key == key) return f;
  }
  throw ConfigError("unknown config key: " + key, "run `ouroboros train --help` for the keys");
}

// The method and its shape options must agree: pipelines cut the model into --modules >= 2,
// sequential and data-parallel keep it whole (--modules 1).
void validate_mode(const EngineConfig& e, const TrainConfig& t, const ModelConfig& m) {
  static const std::set<std::string> modes = {"auto", "sequential", "ouroboros", "gpipe",
                                              "data-parallel"};
  if (!modes.count(e.mode)) {
    throw ConfigError("unknown mode '" + e.mode + "'",
                      "use auto, sequential, ouroboros, gpipe or data-parallel");
  }
  const std::string mode = resolved_mode(e);
  const std::string K = std::to_string(e.modules);
  if ((mode == "ouroboros" || mode == "gpipe") && e.modules < 2) {
    throw ConfigError("mode " + mode + " needs --modules >= 2 (K modules on K-1 workers), got " + K,
                      "use e.g. --modules 3");
  }
  if ((mode == "sequential" || mode == "data-parallel") && e.modules != 1) {
    throw ConfigError("mode " + mode + " trains the whole model per worker, but --modules is " + K,
                      "use --modules 1, or --mode ouroboros / gpipe");
  }
  if (mode == "gpipe") {
    if (e.micro_batches < 1 || t.batch_size % e.micro_batches != 0) {
      throw ConfigError("gpipe: --micro-batches " + std::to_string(e.micro_batches) +
                            " must be >= 1 and divide --batch-size " + std::to_string(t.batch_size),
                        "choose a divisor of the batch size");
    }
    if (e.sync_warmup != 0) {
      throw ConfigError("--sync-warmup applies to mode ouroboros only (gpipe is synchronous)",
                        "drop --sync-warmup");
    }
  }
  if (mode == "data-parallel") {
    if (e.workers < 1 || t.batch_size % e.workers != 0) {
      throw ConfigError("data-parallel: --workers " + std::to_string(e.workers) +
                            " must be >= 1 and divide --batch-size " + std::to_string(t.batch_size),
                        "choose a divisor of the batch size");
    }
  }
  if ((mode == "gpipe" || mode == "data-parallel") && m.model != "gpt") {
    throw ConfigError("mode " + mode + " runs the gpt model only, not " + m.model,
                      "train " + m.model + " with --mode sequential or ouroboros");
  }
  if (mode == "data-parallel" && e.sync_warmup != 0) {
    throw ConfigError("--sync-warmup applies to mode ouroboros only", "drop --sync-warmup");
  }
  if (e.weight_predict != "none" && e.weight_predict != "optimizer" && e.weight_predict != "auto") {
    throw ConfigError("unknown weight_predict '" + e.weight_predict + "'",
                      "use auto, none or optimizer");
  }
  if (!(e.predict_scale > 0.0) || !std::isfinite(e.predict_scale)) {
    throw ConfigError("predict_scale must be > 0, got " + num(e.predict_scale),
                      "use a positive number of updates per tick of delay, e.g. --predict-scale 2");
  }
  if (e.predict_scale != EngineConfig{}.predict_scale && !predicts_weights(e)) {
    throw ConfigError(
        "--predict-scale sets the horizon of weight prediction, which this run does "
        "not use",
        "use --weight-predict optimizer in mode ouroboros, or drop --predict-scale");
  }
  if (e.stale_lr != "none" && e.stale_lr != "pipemare") {
    throw ConfigError("unknown stale_lr '" + e.stale_lr + "'", "use none or pipemare");
  }
  if (e.stale_lr_ticks < 1) {
    throw ConfigError("stale_lr_ticks must be >= 1, got " + std::to_string(e.stale_lr_ticks));
  }
  // Both act on delayed gradients, which only mode ouroboros has.
  for (const auto& [flag, value] :
       {std::pair<std::string, std::string>{"--weight-predict", e.weight_predict},
        {"--stale-lr", e.stale_lr}}) {
    if (value != "none" && value != "auto" && mode != "ouroboros") {
      throw ConfigError(
          flag + " " + value + " acts on delayed gradients, which mode " + mode + " does not have",
          "use --mode ouroboros (--modules K >= 2) or drop " + flag);
    }
  }
}

}  // namespace

const std::vector<ConfigField>& config_fields() {
  static const std::vector<ConfigField> infos = [] {
    std::vector<ConfigField> v;
    for (const auto& f : fields()) v.push_back(f.info);
    return v;
  }();
  return infos;
}

json Config::to_json() const {
  json j = json::object();
  for (const auto& f : fields()) {
    auto dot = f.info.key.find('.');
    j[f.info.key.substr(0, dot)][f.info.key.substr(dot + 1)] = f.get(*this);
  }
  return j;
}

void Config::merge_json(const json& j) {
  if (!j.is_object()) throw ConfigError("config must be a JSON object, got " + j.dump());
  for (const auto& [section, body] : j.items()) {
    if (!body.is_object()) {
      throw ConfigError("config section " + section + " must be an object, got " + body.dump(),
                        "sections are model, data, train, engine, dist");
    }
    for (const auto& [name, value] : body.items()) {
      find_field(section + "." + name).set(*this, value);
    }
  }
}

void Config::set_from_string(const std::string& key, const std::string& value) {
  const Field& f = find_field(key);
  json current = f.get(*this);
  if (current.is_string()) {
    f.set(*this, json(value));
    return;
  }
  json parsed;
  try {
    parsed = json::parse(value);
  } catch (const json::exception&) {
    throw ConfigError(f.info.flag + " expects a number, got '" + value + "'");
  }
  f.set(*this, parsed);
}

namespace {

void require(bool ok, const std::string& what, const std::string& hint = "") {
  if (!ok) throw ConfigError(what, hint);
}

void validate_model(const ModelConfig& m) {
  require(m.model == "gpt" || m.model == "transformer-xl", "unknown model '" + m.model + "'",
          "use --model gpt or --model transformer-xl");
  require(m.n_layer >= 1, "n_layer must be >= 1, got " + std::to_string(m.n_layer));
  require(m.n_head >= 1, "n_head must be >= 1, got " + std::to_string(m.n_head));
  require(m.n_embd >= 1, "n_embd must be >= 1, got " + std::to_string(m.n_embd));
  require(m.n_embd % m.n_head == 0,
          "n_embd " + std::to_string(m.n_embd) + " is not divisible by n_head " +
              std::to_string(m.n_head),
          "choose n_embd a multiple of n_head");
  require(m.block_size >= 1, "block_size must be >= 1, got " + std::to_string(m.block_size));
  require(m.vocab_size >= 0, "vocab_size must be >= 0, got " + std::to_string(m.vocab_size));
  require(m.dtype == "float32" || m.dtype == "bfloat16", "unknown dtype '" + m.dtype + "'",
          "use --dtype float32 or --dtype bfloat16");
  require(m.dropout >= 0.0 && m.dropout < 1.0,
          "dropout must be in [0, 1), got " + std::to_string(m.dropout));
  require(m.attn_dropout >= 0.0 && m.attn_dropout < 1.0,
          "attn_dropout must be in [0, 1), got " + std::to_string(m.attn_dropout));
  require(m.d_inner >= 0, "d_inner must be >= 0, got " + std::to_string(m.d_inner));
  require(m.mem_len >= 0, "mem_len must be >= 0, got " + std::to_string(m.mem_len));
  require(m.clamp_len >= 0, "clamp_len must be >= 0, got " + std::to_string(m.clamp_len));
  require(m.eval_tgt_len >= 0 && m.eval_mem_len >= -1 && m.eval_clamp_len >= -1,
          "eval_tgt_len must be >= 0, eval_mem_len and eval_clamp_len >= -1");
  require((m.pre_lnorm == 0 || m.pre_lnorm == 1) && (m.same_length == 0 || m.same_length == 1) &&
              m.eval_same_length >= -1 && m.eval_same_length <= 1,
          "pre_lnorm and same_length must be 0 or 1, eval_same_length -1, 0 or 1");
  require(m.div_val >= 1, "div_val must be >= 1, got " + std::to_string(m.div_val));
}

void validate_data(const DataConfig& d, const ModelConfig& m) {
  static const std::set<std::string> formats = {"auto",  "text",        "enwik8",
                                                "text8", "wikitext103", "fortunes"};
  require(formats.count(d.format) > 0, "unknown data format '" + d.format + "'",
          "use auto, text, enwik8, text8, wikitext103 or fortunes");
  static const std::set<std::string> tokenizers = {"auto", "byte", "char",
                                                   "word", "bpe",  "unigram"};
  require(tokenizers.count(d.tokenizer) > 0, "unknown tokenizer '" + d.tokenizer + "'",
          "use auto, byte, char, word, bpe or unigram");
  // A subword vocabulary is learned to a size, which nothing else gives.
  require(!(d.tokenizer == "bpe" || d.tokenizer == "unigram") || m.vocab_size > 0,
          "tokenizer " + d.tokenizer + " needs a vocabulary size",
          "pass --vocab-size N, e.g. --vocab-size 4000");
}

void validate_train(const TrainConfig& t) {
  require(t.steps >= 0, "steps must be >= 0, got " + std::to_string(t.steps));
  require(t.batch_size >= 1, "batch_size must be >= 1, got " + std::to_string(t.batch_size));
  static const std::set<std::string> optimizers = {"sgd", "adam", "adamw", "qhadam", "nadam"};
  require(optimizers.count(t.optimizer) > 0, "unknown optimizer '" + t.optimizer + "'",
          "use sgd, adam, adamw, qhadam or nadam");
  require(t.qh_nu >= 0.0 && t.qh_nu <= 1.0, "qh_nu must be in [0, 1], got " + num(t.qh_nu),
          "set --qh-nu, e.g. 0.7");
  require(t.momentum_decay >= 0.0, "momentum_decay must be >= 0, got " + num(t.momentum_decay),
          "set --momentum-decay, e.g. 0.004");
  require(t.diagnostics_interval >= 0,
          "diagnostics_interval must be >= 0, got " + std::to_string(t.diagnostics_interval));
  require(t.schedule == "cosine" || t.schedule == "constant",
          "unknown schedule '" + t.schedule + "'", "use cosine or constant");
  require(t.lr > 0.0, "lr must be > 0, got " + std::to_string(t.lr));
  require(t.min_lr >= 0.0 && t.min_lr <= t.lr,
          "min_lr must be in [0, lr], got " + std::to_string(t.min_lr));
  require(t.warmup_steps >= 0, "warmup_steps must be >= 0");
  require(t.grad_clip >= 0.0, "grad_clip must be >= 0, got " + std::to_string(t.grad_clip));
  require(t.skip_nonfinite >= 0,
          "skip_nonfinite must be >= 0, got " + std::to_string(t.skip_nonfinite));
  require(t.momentum >= 0.0 && t.momentum < 1.0,
          "momentum must be in [0, 1), got " + num(t.momentum), "set --momentum, e.g. 0.9");
  require(t.beta1 >= 0.0 && t.beta1 < 1.0, "beta1 must be in [0, 1), got " + num(t.beta1),
          "set --beta1, e.g. 0.9");
  require(t.beta2 >= 0.0 && t.beta2 < 1.0, "beta2 must be in [0, 1), got " + num(t.beta2),
          "set --beta2, e.g. 0.999");
  require(t.eps > 0.0, "eps must be > 0, got " + num(t.eps), "set --eps, e.g. 1e-8");
  require(t.weight_decay >= 0.0, "weight_decay must be >= 0, got " + num(t.weight_decay),
          "set --weight-decay to 0 or a small positive value");
  require(t.threads >= 1, "threads must be >= 1, got " + std::to_string(t.threads));
  require(is_device_name(t.device), "unknown device '" + t.device + "'",
          "use --device auto, cpu, cuda or cuda:N");
  require(t.tf32 == 0 || t.tf32 == 1, "tf32 must be 0 or 1, got " + std::to_string(t.tf32));
  require(t.tf32 == 0 || t.device != "cpu",
          "--tf32 1 with --device cpu: TF32 is a mode of "
          "NVIDIA GPUs' matrix units",
          "drop --tf32, or train on --device cuda");
  require(t.eval_interval >= 0 && t.log_interval >= 1 && t.checkpoint_interval >= 0 &&
              t.eval_batches >= 0,
          "eval_interval, eval_batches and checkpoint_interval must be >= 0, log_interval >= 1");
}

void validate_layout(const EngineConfig& e, const DistConfig& dist) {
  require(e.modules >= 1, "modules must be >= 1, got " + std::to_string(e.modules));
  require(e.sync_warmup >= 0, "sync_warmup must be >= 0");
  // Explicit cut boundaries mean nothing to one module: refused rather than ignored.
  require(e.modules > 1 || e.partition == "auto" || e.partition == "even" || e.partition.empty(),
          "partition '" + e.partition + "' needs modules >= 2, got modules 1",
          "add --modules K or drop --partition");
  require(dist.replicas >= 1, "replicas must be >= 1, got " + std::to_string(dist.replicas));
  require(dist.timeout > 0.0, "timeout must be > 0 seconds, got " + std::to_string(dist.timeout));
  require(dist.backend == "auto" || dist.backend == "gloo" || dist.backend == "nccl",
          "unknown backend '" + dist.backend + "'", "use --backend auto, gloo or nccl");
}

}  // namespace

void Config::validate() const {
  validate_model(model);
  validate_data(data, model);
  validate_train(train);
  validate_layout(engine, dist);
  validate_mode(engine, train, model);
}

Config checkpoint_config(const nlohmann::json& j) {
  Config c;
  c.merge_json(j);
  const bool has_scale = j.contains("engine") && j["engine"].contains("predict_scale");
  if (!has_scale && predicts_weights(c.engine)) c.engine.predict_scale = 1.0;
  return c;
}

double prediction_horizon(const EngineConfig& e, int64_t delay) {
  return e.predict_scale * static_cast<double>(delay);
}

bool predicts_weights(const EngineConfig& e) {
  return e.weight_predict == "optimizer" ||
         (e.weight_predict == "auto" && resolved_mode(e) == "ouroboros");
}

bool is_device_name(const std::string& s) {
  return s == "auto" || s == "cpu" || s == "cuda" ||
         (s.rfind("cuda:", 0) == 0 && s.size() > 5 &&
          s.find_first_not_of("0123456789", 5) == std::string::npos && s.size() < 10);
}

std::string resolved_mode(const EngineConfig& e) {
  if (e.mode == "auto") return e.modules == 1 ? "sequential" : "ouroboros";
  return e.mode;
}

json read_config_json(const std::string& path) {
  if (std::filesystem::is_directory(path)) {
    throw ConfigError("config file " + path + " is a directory", "give a JSON file");
  }
  std::ifstream in(path);
  if (!in) throw ConfigError("config file not found: " + path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json j;
  try {
    // parse() reads the whole text, so content after the first value is an error, not ignored.
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw ConfigError("config file " + path + " is not valid JSON: " + e.what(),
                      "one JSON object, nothing after it");
  }
  if (!j.is_object()) {
    throw ConfigError(
        "config file " + path + " holds a " + std::string(j.type_name()) + ", not a JSON object",
        "write {\"train\": {\"steps\": 100}, ...}");
  }
  return j;
}

Config load_config_file(const std::string& path) {
  Config c;
  c.merge_json(read_config_json(path));
  return c;
}

}  // namespace ouroboros
