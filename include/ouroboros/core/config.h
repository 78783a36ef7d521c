// The one typed configuration of a run: defaults, JSON loading, flag overrides and validation.
// Every field is declared once in config.cpp's field table; the CLI, JSON files and checkpoints
// all go through that table, so unknown keys and wrong types are errors everywhere alike.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ouroboros {

// The closed option sets. Each value has one name, the one a config file, a flag and a
// checkpoint use; the field table (config.cpp) parses a name once, refusing any other, and lists
// the names in --help.
enum class ModelKind { kGpt, kTransformerXl };
enum class DType { kFloat32, kBfloat16 };
enum class DataFormat { kAuto, kText, kEnwik8, kText8, kWikitext103, kFortunes };
enum class TokenizerChoice { kAuto, kByte, kChar, kWord, kBpe, kUnigram, kGpt2 };
enum class OptimizerKind { kSgd, kAdam, kAdamW, kQhAdam, kNAdam, kMuon };
enum class MuonLrAdjust { kOriginal, kMatchRmsAdamW };
enum class LrSchedule { kCosine, kConstant };
enum class Mode { kAuto, kSequential, kOuroboros, kGPipe, kDataParallel };
enum class WeightPredict { kAuto, kNone, kOptimizer };
enum class StaleLr { kNone, kPipeMare };
enum class DelayCorrection { kNone, kExtrapolate };
enum class Recompute { kNone, kDelayed };
enum class Backend { kAuto, kGloo, kNccl };

// Each set's values with their names, in the order --help lists them, and what the set is called
// in an error ("mode", "data format").
template <typename E>
struct OptionSet {
  static const char* what();
  static const std::vector<std::pair<E, const char*>>& names();
};

template <typename E>
const char* name_of(E value) {
  for (const auto& [v, name] : OptionSet<E>::names()) {
    if (v == value) return name;
  }
  return "?";
}
// The value of a name; nothing for a name that is not in the set.
template <typename E>
std::optional<E> option_named(const std::string& name) {
  for (const auto& [v, n] : OptionSet<E>::names()) {
    if (name == n) return v;
  }
  return std::nullopt;
}
// "a | b | c" for help lines, or with a separator of choice.
template <typename E>
std::string option_names(const std::string& separator = " | ") {
  std::string out;
  for (const auto& [v, n] : OptionSet<E>::names()) out += (out.empty() ? "" : separator) + n;
  return out;
}
// The value of a name, or a ConfigError "unknown <what> '<name>'" listing the names.
template <typename E>
E parse_option(const std::string& name);

// In JSON (config files, checkpoints, bench reports) an option is its name, never a number.
#define OUROBOROS_OPTION_JSON(E)                                  \
  inline void to_json(nlohmann::json& j, E v) { j = name_of(v); } \
  inline void from_json(const nlohmann::json& j, E& v) {          \
    v = parse_option<E>(j.get<std::string>());                    \
  }
OUROBOROS_OPTION_JSON(ModelKind)
OUROBOROS_OPTION_JSON(DType)
OUROBOROS_OPTION_JSON(DataFormat)
OUROBOROS_OPTION_JSON(TokenizerChoice)
OUROBOROS_OPTION_JSON(OptimizerKind)
OUROBOROS_OPTION_JSON(MuonLrAdjust)
OUROBOROS_OPTION_JSON(LrSchedule)
OUROBOROS_OPTION_JSON(Mode)
OUROBOROS_OPTION_JSON(WeightPredict)
OUROBOROS_OPTION_JSON(StaleLr)
OUROBOROS_OPTION_JSON(DelayCorrection)
OUROBOROS_OPTION_JSON(Recompute)
OUROBOROS_OPTION_JSON(Backend)
#undef OUROBOROS_OPTION_JSON

// Shape letters used across the code base:
//   B batch, T time (block_size), C channels (n_embd), V vocabulary, L layers, K modules, W
//   workers.
struct ModelConfig {
  ModelKind model = ModelKind::kGpt;  // model family: gpt (GPT-2 style) | transformer-xl
  int64_t n_layer = 4;                // L, Transformer blocks
  int64_t n_head = 4;                 // attention heads; n_embd must be divisible by it
  int64_t n_embd = 128;               // C, residual stream width
  int64_t block_size = 128;           // T, context length in tokens
  int64_t vocab_size = 0;             // V; 0 = taken from the tokenizer
  double dropout = 0.0;               // dropout probability on attention/residual paths
  // float32 | bfloat16: the forward's matrix products under autocast; weights, gradients and
  // optimizer state stay float32 (model/precision.h).
  DType dtype = DType::kFloat32;
  // Transformer-XL only (docs/TRANSFORMER_XL.md); block_size is its training segment (tgt_len).
  int64_t d_inner = 0;            // feed-forward width; 0 = 4 n_embd
  double attn_dropout = 0.0;      // dropout on attention probabilities
  int64_t pre_lnorm = 0;          // 1 = pre-LayerNorm blocks; 0 = post-LayerNorm as in the paper
  int64_t mem_len = 128;          // hidden states of previous segments kept per layer
  int64_t clamp_len = 0;          // relative distances above it share its encoding; 0 = no clamp
  int64_t same_length = 0;        // 1 = every query attends over the same number of positions
  int64_t eval_tgt_len = 0;       // evaluation segment length; 0 = block_size
  int64_t eval_mem_len = -1;      // evaluation memory length; -1 = mem_len
  int64_t eval_clamp_len = -1;    // evaluation clamp_len; -1 = clamp_len
  int64_t eval_same_length = -1;  // evaluation same_length; -1 = same_length
  std::string adaptive_cutoffs = "";  // "20000,40000,200000": adaptive softmax; "" = full softmax
  int64_t div_val = 1;                // adaptive: cluster i embeds in n_embd / div_val^i dimensions
};

struct DataConfig {
  std::string data = "fortunes";  // path of a file or directory; ignored by format "fortunes"
  DataFormat format = DataFormat::kAuto;  // auto | text | enwik8 | text8 | ...
  // auto | byte | char | word | bpe | unigram | gpt2; auto = gpt2 with a tokenizer_file, else by
  // format.
  TokenizerChoice tokenizer = TokenizerChoice::kAuto;
  // gpt2: a Hugging Face tokenizer.json, or a directory holding it or vocab.json + merges.txt.
  std::string tokenizer_file = "";
};

struct TrainConfig {
  int64_t steps = 600;                             // training iterations (ticks)
  int64_t batch_size = 8;                          // B, sequences per step
  OptimizerKind optimizer = OptimizerKind::kMuon;  // sgd | adam | adamw | qhadam | nadam | muon
  double lr = 1e-3;                                // peak learning rate
  double min_lr = 1e-4;                            // learning rate at the end of the cosine decay
  int64_t warmup_steps = 200;  // linear learning-rate warm-up, in steps (docs/BENCHMARKS.md)
  LrSchedule schedule = LrSchedule::kCosine;  // after the warm-up: cosine | constant
  double momentum = 0.9;                      // SGD momentum
  double beta1 = 0.9;                         // Adam beta1
  double beta2 = 0.999;                       // Adam beta2
  double eps = 1e-8;                          // Adam epsilon
  double qh_nu = 0.7;             // QHAdam: weight of the momentum against the raw gradient
  double momentum_decay = 0.004;  // NAdam: psi of the momentum schedule mu_t
  double weight_decay = 0.0;      // on matrices and embeddings only (not biases, LayerNorm)
  // Muon (torch.optim.Muon's names; docs/DELAY.md): the blocks' weight matrices take Muon's
  // orthogonalized momentum; embeddings, LayerNorm and biases take AdamW with lr, beta1, beta2,
  // eps and weight_decay (decoupled for both).
  double muon_lr = 8e-3;        // Muon's peak learning rate, on lr's schedule; 0 = lr
  double muon_momentum = 0.95;  // Muon's momentum mu
  int64_t muon_nesterov = 1;    // 1 = Nesterov update (1 - mu) g + mu B; 0 = B
  int64_t muon_ns_steps = 5;    // Newton-Schulz iterations
  // original: lr sqrt(max(1, rows / cols)); match_rms_adamw: lr 0.2 sqrt(max(rows, cols)), the
  // update RMS of AdamW (Moonshot 2025).
  MuonLrAdjust muon_adjust_lr = MuonLrAdjust::kMatchRmsAdamW;
  double grad_clip = 1.0;      // max global gradient norm per update; 0 disables
  int64_t skip_nonfinite = 0;  // updates with an inf/nan gradient to skip before stopping
  int64_t seed = 1337;         // seeds initialisation, batches and dropout
  int64_t threads = 1;         // libtorch intra-op threads (per worker)
  // auto | cpu | cuda | cuda:N: where a process trains (auto = cuda when a GPU is visible).
  // Processes take cuda:LOCAL_RANK. Ouroboros worker threads spread over the GPUs (worker w on
  // cuda:(w mod n)) with cuda or auto; an explicit cuda:N keeps every worker on it.
  std::string device = "auto";
  // 1 = float32 matrix products on CUDA in TF32 (cuBLAS and cuDNN; 10-bit mantissa inputs,
  // several times faster); 0 = full float32. Refused on the CPU, which has no TF32.
  int64_t tf32 = 0;
  int64_t eval_interval = 200;           // evaluate every N steps; 0 = only at the end
  int64_t eval_batches = 0;              // limit periodic evaluation to N batches; 0 = whole split
  int64_t log_interval = 10;             // progress line every N steps
  std::string out_dir = "runs/default";  // checkpoints and metrics go here
  int64_t checkpoint_interval = 0;       // also checkpoint every N steps; 0 = only at the end
  std::string metrics = "";              // JSONL metrics file; "" = <out_dir>/metrics.jsonl
  int64_t diagnostics_interval = 0;      // per-module update statistics every N steps; 0 = off
};

struct EngineConfig {
  int64_t modules = 1;             // K; 1 = plain backprop, >= 2 = Ouroboros on K-1 workers
  std::string partition = "auto";  // even | auto | a1,a2,... (block boundaries)
  int64_t sync_warmup = 0;         // first M ticks run synchronously (no delay)
  // Delay tolerance (docs/DESIGN.md). weight_predict: none | optimizer (a delayed module
  // forwards at its weights extrapolated delay ticks along the optimizer's update direction) |
  // auto (optimizer in mode ouroboros; the other methods have no delay).
  WeightPredict weight_predict = WeightPredict::kAuto;
  // The prediction's horizon in updates per tick of delay: a module with delay d forwards at its
  // weights moved predict_scale * d updates ahead (bench/delay_study.sh: 1.5 beat 1, 2 and 3).
  double predict_scale = 1.5;
  StaleLr stale_lr = StaleLr::kNone;  // none | pipemare: lr / delay^(1 - min(u / T, 1))
  int64_t stale_lr_ticks = 500;       // pipemare: T, ticks after the delays start
  // none | extrapolate: a module with delay d applies u_t + correction_scale d (u_t - u_(t-1)),
  // u its optimizer's update, extrapolating the update sequence over the delay (docs/DELAY.md).
  DelayCorrection delay_correction = DelayCorrection::kNone;
  double correction_scale = 1.0;
  // Training method: auto (sequential for modules = 1, else ouroboros) | sequential | ouroboros |
  // gpipe | data-parallel. docs/BENCHMARKS.md compares them.
  Mode mode = Mode::kAuto;
  // gpipe and ouroboros: M micro-batches per step (must divide batch_size); 0 = auto: GPipe's 4,
  // Ouroboros' from the cost model (make_plan). Flag and config key take "auto" for 0.
  int64_t micro_batches = 0;
  // ouroboros: none | delayed: a module whose backward waits for a later tick keeps only its
  // input and runs its forward again just before that backward (the same gradient, bit for bit),
  // instead of keeping the forward's activations in between.
  Recompute recompute = Recompute::kNone;
  int64_t workers = 2;  // data-parallel: replicas, one thread each (divide batch_size)
};

// Several processes (docs/DISTRIBUTED.md): one per worker, R rings of K-1 workers.
struct DistConfig {
  int64_t replicas = 1;   // R rings; gradients averaged across rings (data parallelism)
  double timeout = 60.0;  // seconds a process waits on a silent peer before giving up
  // auto | gloo | nccl: what carries the messages and the all-reduce between processes. auto =
  // nccl for processes on GPUs when the build has it, else gloo (host memory).
  Backend backend = Backend::kAuto;
};
// Whether s names a device train.device accepts: auto, cpu, cuda or cuda:N.
bool is_device_name(const std::string& s);
// The method a config runs after resolving mode "auto": sequential, ouroboros, gpipe or
// data-parallel.
Mode resolved_mode(const EngineConfig& e);
// Whether delayed modules forward at predicted weights (weight_predict after resolving "auto").
bool predicts_weights(const EngineConfig& e);
// How many of its updates ahead a module with `delay` forwards when predicting weights.
double prediction_horizon(const EngineConfig& e, int64_t delay);

struct Config {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  EngineConfig engine;
  DistConfig dist;

  nlohmann::json to_json() const;
  // Applies a JSON object over this config; throws ConfigError on unknown keys or wrong types.
  void merge_json(const nlohmann::json& j);
  // Sets one field from its textual form (a command-line value); key is "section.name".
  void set_from_string(const std::string& key, const std::string& value);
  // Throws ConfigError naming the offending value when the config is impossible.
  void validate() const;
};

// The config a checkpoint holds: a field added after the checkpoint was written takes the value
// its run used where that differs from today's default (engine.predict_scale: 1 for a run that
// predicted weights), so the run resumes exactly.
Config checkpoint_config(const nlohmann::json& j);

// One entry of the field table: what the CLI and docs show.
struct ConfigField {
  std::string key;   // "model.n_layer"
  std::string flag;  // "--n-layer"
  std::string help;  // one line
};
const std::vector<ConfigField>& config_fields();

// The JSON object in a config file; throws ConfigError for a missing file or invalid JSON.
nlohmann::json read_config_json(const std::string& path);
Config load_config_file(const std::string& path);

}  // namespace ouroboros
