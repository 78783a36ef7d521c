// The field table behind Config: each field once, with its flag and help line. JSON files, flags
// and checkpoints all read and write through it.
#include "ouroboros/core/config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "ouroboros/core/errors.h"

namespace ouroboros {

template <typename E>
E parse_option(const std::string& name) {
  if (const std::optional<E> v = option_named<E>(name)) return *v;
  const std::string names = option_names<E>(", ");
  const size_t last = names.rfind(", ");
  throw ConfigError(std::string("unknown ") + OptionSet<E>::what() + " '" + name + "'",
                    "use " + (last == std::string::npos
                                  ? names
                                  : names.substr(0, last) + " or " + names.substr(last + 2)));
}

#define OUROBOROS_OPTION_SET(E, WHAT, ...)                                     \
  template <>                                                                  \
  const char* OptionSet<E>::what() {                                           \
    return WHAT;                                                               \
  }                                                                            \
  template <>                                                                  \
  const std::vector<std::pair<E, const char*>>& OptionSet<E>::names() {        \
    static const std::vector<std::pair<E, const char*>> table = {__VA_ARGS__}; \
    return table;                                                              \
  }                                                                            \
  template E parse_option<E>(const std::string& name);

OUROBOROS_OPTION_SET(ModelKind, "model", {ModelKind::kGpt, "gpt"},
                     {ModelKind::kTransformerXl, "transformer-xl"})
OUROBOROS_OPTION_SET(DType, "dtype", {DType::kFloat32, "float32"}, {DType::kBfloat16, "bfloat16"})
OUROBOROS_OPTION_SET(DataFormat, "data format", {DataFormat::kAuto, "auto"},
                     {DataFormat::kText, "text"}, {DataFormat::kEnwik8, "enwik8"},
                     {DataFormat::kText8, "text8"}, {DataFormat::kWikitext103, "wikitext103"},
                     {DataFormat::kFortunes, "fortunes"})
OUROBOROS_OPTION_SET(TokenizerChoice, "tokenizer", {TokenizerChoice::kAuto, "auto"},
                     {TokenizerChoice::kByte, "byte"}, {TokenizerChoice::kChar, "char"},
                     {TokenizerChoice::kWord, "word"}, {TokenizerChoice::kBpe, "bpe"},
                     {TokenizerChoice::kUnigram, "unigram"}, {TokenizerChoice::kGpt2, "gpt2"})
OUROBOROS_OPTION_SET(OptimizerKind, "optimizer", {OptimizerKind::kSgd, "sgd"},
                     {OptimizerKind::kAdam, "adam"}, {OptimizerKind::kAdamW, "adamw"},
                     {OptimizerKind::kQhAdam, "qhadam"}, {OptimizerKind::kNAdam, "nadam"},
                     {OptimizerKind::kMuon, "muon"})
OUROBOROS_OPTION_SET(MuonLrAdjust, "muon_adjust_lr", {MuonLrAdjust::kOriginal, "original"},
                     {MuonLrAdjust::kMatchRmsAdamW, "match_rms_adamw"})
OUROBOROS_OPTION_SET(LrSchedule, "schedule", {LrSchedule::kCosine, "cosine"},
                     {LrSchedule::kConstant, "constant"})
OUROBOROS_OPTION_SET(Mode, "mode", {Mode::kAuto, "auto"}, {Mode::kSequential, "sequential"},
                     {Mode::kOuroboros, "ouroboros"}, {Mode::kGPipe, "gpipe"},
                     {Mode::kDataParallel, "data-parallel"})
OUROBOROS_OPTION_SET(WeightPredict, "weight_predict", {WeightPredict::kAuto, "auto"},
                     {WeightPredict::kNone, "none"}, {WeightPredict::kOptimizer, "optimizer"})
OUROBOROS_OPTION_SET(StaleLr, "stale_lr", {StaleLr::kNone, "none"},
                     {StaleLr::kPipeMare, "pipemare"})
OUROBOROS_OPTION_SET(DelayCorrection, "delay_correction", {DelayCorrection::kNone, "none"},
                     {DelayCorrection::kExtrapolate, "extrapolate"})
OUROBOROS_OPTION_SET(Recompute, "recompute", {Recompute::kNone, "none"},
                     {Recompute::kDelayed, "delayed"})
OUROBOROS_OPTION_SET(Backend, "backend", {Backend::kAuto, "auto"}, {Backend::kGloo, "gloo"},
                     {Backend::kNccl, "nccl"})
#undef OUROBOROS_OPTION_SET

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
  } else if constexpr (std::is_enum_v<T>) {
    if (!v.is_string()) {
      throw ConfigError("config key " + key + " must be a string (" + option_names<T>(", ") +
                        "), got " + v.dump());
    }
    return parse_option<T>(v.get<std::string>());
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

// The help line of a field; an option's names come first, from its set.
template <typename T>
std::string help_of(const std::string& help) {
  if constexpr (std::is_enum_v<T>) {
    return option_names<T>() + (help.empty() ? "" : ": " + help);
  } else {
    return help;
  }
}

// engine.micro_batches: "auto" (stored as 0) or a whole number, as JSON or as the flag's text.
int64_t micro_batches_value(const json& v) {
  const std::string key = "engine.micro_batches";
  if (v.is_number_integer()) {
    const int64_t m = v.get<int64_t>();
    if (m < 1)
      throw ConfigError(key + " must be auto or >= 1, got " + std::to_string(m),
                        "use auto, or a divisor of the batch size");
    return m;
  }
  if (v.is_string()) {
    const std::string text = v.get<std::string>();
    if (text == "auto") return 0;
    json parsed;
    try {
      parsed = json::parse(text);
    } catch (const json::exception&) {
    }
    if (parsed.is_number_integer()) return micro_batches_value(parsed);
  }
  throw ConfigError(key + " must be auto or a whole number, got " + v.dump(),
                    "use auto, or a divisor of the batch size");
}

#define OUROBOROS_FIELD(section, name, help)                                                 \
  Field {                                                                                    \
    ConfigField{#section "." #name, flag_of(#section "." #name),                             \
                help_of<decltype(Config{}.section.name)>(help)},                             \
        [](const Config& c) { return json(c.section.name); }, [](Config& c, const json& v) { \
          c.section.name = convert<decltype(c.section.name)>(#section "." #name, v);         \
        }                                                                                    \
  }

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      OUROBOROS_FIELD(model, model, "model family"),
      OUROBOROS_FIELD(model, n_layer, "Transformer blocks (L)"),
      OUROBOROS_FIELD(model, n_head, "attention heads; n_embd must be divisible by it"),
      OUROBOROS_FIELD(model, n_embd, "residual stream width (C)"),
      OUROBOROS_FIELD(model, block_size, "context length in tokens (T)"),
      OUROBOROS_FIELD(model, vocab_size,
                      "vocabulary size (V); 0 = from the tokenizer; bpe and unigram learn V "
                      "pieces and need it"),
      OUROBOROS_FIELD(model, dropout, "dropout probability"),
      OUROBOROS_FIELD(model, dtype,
                      "matrix products of the forward in bfloat16 (autocast); weights and "
                      "optimizer state stay float32"),
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
      OUROBOROS_FIELD(data, format, "corpus layout; auto = from the path"),
      OUROBOROS_FIELD(data, tokenizer,
                      "bpe and unigram are sentencepiece's and need --vocab-size; gpt2 (byte-level "
                      "BPE) needs --tokenizer-file; auto = gpt2 with a file, else by format"),
      OUROBOROS_FIELD(data, tokenizer_file,
                      "gpt2: tokenizer.json, or a directory with it or vocab.json + merges.txt"),
      OUROBOROS_FIELD(train, steps, "training steps (ticks)"),
      OUROBOROS_FIELD(train, batch_size, "sequences per step (B)"),
      OUROBOROS_FIELD(train, optimizer, "muon: Muon for the block matrices, AdamW for the rest"),
      OUROBOROS_FIELD(train, lr, "peak learning rate"),
      OUROBOROS_FIELD(train, min_lr, "learning rate at the end of the cosine decay"),
      OUROBOROS_FIELD(train, warmup_steps, "linear learning-rate warm-up steps"),
      OUROBOROS_FIELD(train, schedule, "learning-rate schedule after warm-up"),
      OUROBOROS_FIELD(train, momentum, "SGD momentum"),
      OUROBOROS_FIELD(train, beta1, "Adam beta1"),
      OUROBOROS_FIELD(train, beta2, "Adam beta2"),
      OUROBOROS_FIELD(train, eps, "Adam epsilon"),
      OUROBOROS_FIELD(train, qh_nu, "qhadam: weight of the momentum against the raw gradient"),
      OUROBOROS_FIELD(train, momentum_decay, "nadam: momentum schedule decay psi"),
      OUROBOROS_FIELD(train, weight_decay, "weight decay on matrices and embeddings"),
      OUROBOROS_FIELD(train, muon_lr,
                      "muon: learning rate of the block matrices (--lr: the rest); 0 = --lr"),
      OUROBOROS_FIELD(train, muon_momentum, "muon: momentum"),
      OUROBOROS_FIELD(train, muon_nesterov, "muon: 1 = Nesterov momentum, 0 = plain"),
      OUROBOROS_FIELD(train, muon_ns_steps, "muon: Newton-Schulz iterations"),
      OUROBOROS_FIELD(train, muon_adjust_lr,
                      "muon: per-shape learning-rate scale; match_rms_adamw keeps AdamW's lr"),
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
                      "delayed modules forward at weights predicted along the optimizer's "
                      "direction; auto = optimizer in mode ouroboros"),
      OUROBOROS_FIELD(engine, predict_scale,
                      "weight prediction: horizon in updates per tick of delay"),
      OUROBOROS_FIELD(engine, stale_lr, "learning rate scaled down by delay"),
      OUROBOROS_FIELD(engine, stale_lr_ticks, "pipemare: ticks until the delay scaling fades out"),
      OUROBOROS_FIELD(engine, delay_correction,
                      "extrapolate: a delayed module extrapolates its updates over its delay"),
      OUROBOROS_FIELD(engine, correction_scale,
                      "extrapolate: extrapolation per tick of delay, in updates"),
      OUROBOROS_FIELD(dist, replicas, "R rings of K-1 worker processes, gradients averaged"),
      OUROBOROS_FIELD(dist, timeout, "seconds to wait on a silent peer process before exiting"),
      OUROBOROS_FIELD(dist, backend,
                      "what carries messages between processes; auto = nccl on GPUs where built, "
                      "else gloo"),
      OUROBOROS_FIELD(engine, mode,
                      "training method; auto = sequential for --modules 1, else ouroboros"),
      Field{{"engine.micro_batches", "--micro-batches",
             "auto | M: micro-batches per step through the ring (gpipe, ouroboros); M divides "
             "batch_size; auto = 4 for gpipe, the cost model's choice for ouroboros"},
            [](const Config& c) {
              const int64_t m = c.engine.micro_batches;
              return m == 0 ? json("auto") : json(m);
            },
            [](Config& c, const json& v) { c.engine.micro_batches = micro_batches_value(v); }},
      OUROBOROS_FIELD(engine, recompute,
                      "delayed: modules whose backward waits keep their input, not their "
                      "activations, and run the forward again before it (ouroboros)"),
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
  const Mode mode = resolved_mode(e);
  const std::string name = name_of(mode);
  const std::string K = std::to_string(e.modules);
  if ((mode == Mode::kOuroboros || mode == Mode::kGPipe) && e.modules < 2) {
    throw ConfigError("mode " + name + " needs --modules >= 2 (K modules on K-1 workers), got " + K,
                      "use e.g. --modules 3");
  }
  if ((mode == Mode::kSequential || mode == Mode::kDataParallel) && e.modules != 1) {
    throw ConfigError("mode " + name + " trains the whole model per worker, but --modules is " + K,
                      "use --modules 1, or --mode ouroboros / gpipe");
  }
  if ((mode == Mode::kGPipe || mode == Mode::kOuroboros) && e.micro_batches != 0 &&
      (e.micro_batches < 1 || t.batch_size % e.micro_batches != 0)) {
    throw ConfigError(name + ": --micro-batches " + std::to_string(e.micro_batches) +
                          " must be >= 1 and divide --batch-size " + std::to_string(t.batch_size),
                      "choose a divisor of the batch size, or auto");
  }
  if ((mode == Mode::kSequential || mode == Mode::kDataParallel) && e.micro_batches != 0) {
    throw ConfigError("--micro-batches applies to modes gpipe and ouroboros, not " + name,
                      "drop --micro-batches, or use --mode ouroboros / gpipe");
  }
  // Message tags tell 4095 micro-batches apart (engine/transport.h).
  if (mode == Mode::kOuroboros && e.micro_batches > 4095) {
    throw ConfigError("ouroboros: --micro-batches " + std::to_string(e.micro_batches) +
                          " is more than 4095, the most the message tags tell apart",
                      "use fewer micro-batches");
  }
  if (mode == Mode::kGPipe) {
    if (e.sync_warmup != 0) {
      throw ConfigError("--sync-warmup applies to mode ouroboros only (gpipe is synchronous)",
                        "drop --sync-warmup");
    }
  }
  if (mode == Mode::kDataParallel) {
    if (e.workers < 1 || t.batch_size % e.workers != 0) {
      throw ConfigError("data-parallel: --workers " + std::to_string(e.workers) +
                            " must be >= 1 and divide --batch-size " + std::to_string(t.batch_size),
                        "choose a divisor of the batch size");
    }
  }
  if ((mode == Mode::kGPipe || mode == Mode::kDataParallel) && m.model != ModelKind::kGpt) {
    const std::string model = name_of(m.model);
    throw ConfigError("mode " + name + " runs the gpt model only, not " + model,
                      "train " + model + " with --mode sequential or ouroboros");
  }
  if (mode == Mode::kDataParallel && e.sync_warmup != 0) {
    throw ConfigError("--sync-warmup applies to mode ouroboros only", "drop --sync-warmup");
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
  if (e.stale_lr_ticks < 1) {
    throw ConfigError("stale_lr_ticks must be >= 1, got " + std::to_string(e.stale_lr_ticks));
  }
  // Both act on delayed gradients, which only mode ouroboros has.
  const auto needs_delays = [&](bool set, const std::string& flag, const std::string& value) {
    if (!set || mode == Mode::kOuroboros) return;
    throw ConfigError(
        flag + " " + value + " acts on delayed gradients, which mode " + name + " does not have",
        "use --mode ouroboros (--modules K >= 2) or drop " + flag);
  };
  needs_delays(e.weight_predict == WeightPredict::kOptimizer, "--weight-predict",
               name_of(e.weight_predict));
  needs_delays(e.stale_lr != StaleLr::kNone, "--stale-lr", name_of(e.stale_lr));
  needs_delays(e.delay_correction != DelayCorrection::kNone, "--delay-correction",
               name_of(e.delay_correction));
  needs_delays(e.recompute != Recompute::kNone, "--recompute", name_of(e.recompute));
  if (!(e.correction_scale > 0.0 && e.correction_scale <= 16.0)) {
    throw ConfigError("correction_scale must be in (0, 16], got " + num(e.correction_scale),
                      "use a few updates per tick of delay, e.g. --correction-scale 1");
  }
  if (e.correction_scale != EngineConfig{}.correction_scale &&
      e.delay_correction == DelayCorrection::kNone) {
    throw ConfigError("--correction-scale sets the delay correction, which this run does not use",
                      "add --delay-correction extrapolate, or drop --correction-scale");
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
    // A number field that also takes a word (--micro-batches auto) takes it as a string.
    try {
      f.set(*this, json(value));
      return;
    } catch (const ConfigError&) {
    }
    throw ConfigError(f.info.flag + " expects a number, got '" + value + "'");
  }
  f.set(*this, parsed);
}

namespace {

void require(bool ok, const std::string& what, const std::string& hint = "") {
  if (!ok) throw ConfigError(what, hint);
}

// Upper bounds of the sizes, far above any model this code can train, so that a mistyped value
// is refused before it is allocated or overflows (a plan of 2e9 layers, a 1e300-second timeout).
constexpr int64_t kMaxLayers = 1 << 20, kMaxHeads = 4096, kMaxWidth = 1 << 17, kMaxTokens = 1 << 20,
                  kMaxVocab = 1 << 24, kMaxModules = 256, kMaxReplicas = 4096;
constexpr double kMaxTimeoutSeconds = 1e6;

void require_at_most(const char* key, int64_t value, int64_t most) {
  require(value <= most,
          std::string(key) + " " + std::to_string(value) + " is more than " + std::to_string(most) +
              ", the most this build accepts",
          "check the value of " + std::string(key));
}

// Intra-op threads per worker: a small multiple of the cores is the most that can help.
int64_t max_threads() {
  return std::max<int64_t>(4, 4 * static_cast<int64_t>(std::thread::hardware_concurrency()));
}

void validate_model(const ModelConfig& m) {
  require(m.n_layer >= 1, "n_layer must be >= 1, got " + std::to_string(m.n_layer));
  require(m.n_head >= 1, "n_head must be >= 1, got " + std::to_string(m.n_head));
  require(m.n_embd >= 1, "n_embd must be >= 1, got " + std::to_string(m.n_embd));
  require(m.n_embd % m.n_head == 0,
          "n_embd " + std::to_string(m.n_embd) + " is not divisible by n_head " +
              std::to_string(m.n_head),
          "choose n_embd a multiple of n_head");
  require_at_most("n_layer", m.n_layer, kMaxLayers);
  require_at_most("n_head", m.n_head, kMaxHeads);
  require_at_most("n_embd", m.n_embd, kMaxWidth);
  require(m.block_size >= 1, "block_size must be >= 1, got " + std::to_string(m.block_size));
  require_at_most("block_size", m.block_size, kMaxTokens);
  require_at_most("vocab_size", m.vocab_size, kMaxVocab);
  require_at_most("d_inner", m.d_inner, kMaxWidth * 8);
  for (const auto& [key, v] : {std::pair<const char*, int64_t>{"mem_len", m.mem_len},
                               {"clamp_len", m.clamp_len},
                               {"eval_tgt_len", m.eval_tgt_len},
                               {"eval_mem_len", m.eval_mem_len},
                               {"eval_clamp_len", m.eval_clamp_len},
                               {"div_val", m.div_val}}) {
    require_at_most(key, v, kMaxTokens);
  }
  require(m.vocab_size >= 0, "vocab_size must be >= 0, got " + std::to_string(m.vocab_size));
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
  // A subword vocabulary is learned to a size, which nothing else gives.
  require(!(d.tokenizer == TokenizerChoice::kBpe || d.tokenizer == TokenizerChoice::kUnigram) ||
              m.vocab_size > 0,
          std::string("tokenizer ") + name_of(d.tokenizer) + " needs a vocabulary size",
          "pass --vocab-size N, e.g. --vocab-size 4000");
  // gpt2's vocabulary and merges come from a file, and no other tokenizer reads one.
  const bool gpt2 = d.tokenizer == TokenizerChoice::kGpt2;
  require(
      !gpt2 || !d.tokenizer_file.empty(), "tokenizer gpt2 needs a tokenizer file",
      "pass --tokenizer-file PATH (tokenizer.json, or a directory with vocab.json + merges.txt)");
  require(d.tokenizer_file.empty() || gpt2 || d.tokenizer == TokenizerChoice::kAuto,
          std::string("--tokenizer-file is set but the tokenizer is ") + name_of(d.tokenizer),
          "drop --tokenizer-file, or use --tokenizer gpt2 (or auto)");
}

// Muon's options: in range, and refused with another optimizer (they could not take effect).
void validate_muon(const TrainConfig& t) {
  require(t.muon_lr >= 0.0 && std::isfinite(t.muon_lr),
          "muon_lr must be >= 0, got " + num(t.muon_lr), "set --muon-lr, or 0 for --lr");
  require(t.muon_momentum >= 0.0 && t.muon_momentum < 1.0,
          "muon_momentum must be in [0, 1), got " + num(t.muon_momentum),
          "set --muon-momentum, e.g. 0.95");
  require(t.muon_nesterov == 0 || t.muon_nesterov == 1,
          "muon_nesterov must be 0 or 1, got " + std::to_string(t.muon_nesterov));
  require(t.muon_ns_steps >= 1 && t.muon_ns_steps < 100,
          "muon_ns_steps must be in [1, 99], got " + std::to_string(t.muon_ns_steps),
          "set --muon-ns-steps, e.g. 5");
  if (t.optimizer == OptimizerKind::kMuon) return;
  const TrainConfig d;
  const bool set = t.muon_lr != d.muon_lr || t.muon_momentum != d.muon_momentum ||
                   t.muon_nesterov != d.muon_nesterov || t.muon_ns_steps != d.muon_ns_steps ||
                   t.muon_adjust_lr != d.muon_adjust_lr;
  require(!set,
          std::string("a --muon-* option is set but the optimizer is ") + name_of(t.optimizer),
          "add --optimizer muon, or drop the --muon-* options");
}

void validate_train(const TrainConfig& t) {
  require(t.steps >= 0, "steps must be >= 0, got " + std::to_string(t.steps));
  require(t.batch_size >= 1, "batch_size must be >= 1, got " + std::to_string(t.batch_size));
  require_at_most("batch_size", t.batch_size, kMaxTokens);
  require(t.qh_nu >= 0.0 && t.qh_nu <= 1.0, "qh_nu must be in [0, 1], got " + num(t.qh_nu),
          "set --qh-nu, e.g. 0.7");
  require(t.momentum_decay >= 0.0, "momentum_decay must be >= 0, got " + num(t.momentum_decay),
          "set --momentum-decay, e.g. 0.004");
  require(t.diagnostics_interval >= 0,
          "diagnostics_interval must be >= 0, got " + std::to_string(t.diagnostics_interval));
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
  validate_muon(t);
  require(t.threads >= 1, "threads must be >= 1, got " + std::to_string(t.threads));
  require(t.threads <= max_threads(),
          "threads " + std::to_string(t.threads) + " is more than this machine can use (" +
              std::to_string(std::thread::hardware_concurrency()) + " cores)",
          "use at most " + std::to_string(max_threads()) + " (--threads is per worker)");
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
  require_at_most("modules", e.modules, kMaxModules);
  require_at_most("micro_batches", e.micro_batches, kMaxTokens);
  require_at_most("workers", e.workers, kMaxReplicas);
  require_at_most("sync_warmup", e.sync_warmup, int64_t{1} << 40);
  require_at_most("stale_lr_ticks", e.stale_lr_ticks, int64_t{1} << 40);
  require(e.sync_warmup >= 0, "sync_warmup must be >= 0");
  // Explicit cut boundaries mean nothing to one module: refused rather than ignored.
  require(e.modules > 1 || e.partition == "auto" || e.partition == "even" || e.partition.empty(),
          "partition '" + e.partition + "' needs modules >= 2, got modules 1",
          "add --modules K or drop --partition");
  require(dist.replicas >= 1, "replicas must be >= 1, got " + std::to_string(dist.replicas));
  require_at_most("replicas", dist.replicas, kMaxReplicas);
  require(dist.timeout > 0.0 && dist.timeout <= kMaxTimeoutSeconds,
          "timeout must be > 0 and at most " + num(kMaxTimeoutSeconds) + " seconds, got " +
              num(dist.timeout),
          "set --timeout in seconds, e.g. 60");
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
  return e.weight_predict == WeightPredict::kOptimizer ||
         (e.weight_predict == WeightPredict::kAuto && resolved_mode(e) == Mode::kOuroboros);
}

bool is_device_name(const std::string& s) {
  return s == "auto" || s == "cpu" || s == "cuda" ||
         (s.rfind("cuda:", 0) == 0 && s.size() > 5 &&
          s.find_first_not_of("0123456789", 5) == std::string::npos && s.size() < 10);
}

Mode resolved_mode(const EngineConfig& e) {
  if (e.mode == Mode::kAuto) return e.modules == 1 ? Mode::kSequential : Mode::kOuroboros;
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
