// The command-line program: thin wrappers over library calls. Errors become one line on stderr and
// a non-zero exit.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "bench/bench.h"
#include "cli/flags.h"
#include "ouroboros/core/config.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/core/presets.h"
#include "ouroboros/core/system.h"
#include "ouroboros/data/dataset.h"
#include "ouroboros/dist/context.h"
#include "ouroboros/dist/env.h"
#include "ouroboros/dist/launcher.h"
#include "ouroboros/model/generate.h"
#include "ouroboros/plan/planner.h"
#include "ouroboros/run/train.h"
#include "ouroboros/train/checkpoint.h"
#include "ouroboros/train/evaluate.h"
#include "ouroboros/train/export.h"
#include "plot/plot.h"

using namespace ouroboros;

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// Ctrl-C or SIGTERM: the first asks the run to stop (it drains, writes a checkpoint and says
// where); a second ends the process at once.
void on_stop_signal(int sig) {
  if (stop_requested() != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  request_stop(sig);
  const char msg[] =
      "\nstopping after the current steps with a checkpoint (again to quit at once)\n";
  if (::write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
  }
}

// Seconds between two looks at a stop request: Ctrl-C is answered within about this long, and
// the cut in the pipeline at each look (about one tick) stays near 1% of the time.
constexpr double kStopCheckSeconds = 10.0;

// The config a resumed run starts from: the checkpoint's, but never its paths. A checkpoint is
// data from anywhere, so the run writes next to it (the folder holding ckpt.pt or ckpt/) unless
// --out-dir or --metrics say otherwise.
Config resumable_config(const std::string& resume) {
  Config cfg = load_checkpoint(resume).config;
  cfg.train.out_dir = checkpoint_dir(resume);
  cfg.train.metrics = Config{}.train.metrics;
  return cfg;
}

int cmd_train(const ConfigFlags& flags, const std::string& resume, bool overwrite,
              const DistEnv& env_flags) {
  const Config cfg =
      resume.empty() ? flags.apply(Config{}) : flags.apply_to_resumed(resumable_config(resume));
  TrainOptions opts;
  opts.resume = resume;
  opts.overwrite = overwrite;
  opts.stop_check_seconds = kStopCheckSeconds;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  // One process of a group (torchrun, mpirun, `ouroboros launch` or by hand).
  const DistEnv env = discover_env(env_flags);
  if (env.active()) {
    opts.quiet = env.rank != 0;
    int code = 0;
    try {
      if (train_distributed(cfg, opts, env).stopped) code = 128 + stop_requested();
    } catch (const std::exception& e) {
      // Exit at once: process-group threads may still wait on a lost peer.
      const std::string what = first_line(e.what());
      std::cerr << "error: "
                << (what.rfind("rank ", 0) == 0 ? "" : "rank " + std::to_string(env.rank) + ": ")
                << what << std::endl;
      std::cout.flush();
      std::_Exit(1);
    }
    std::cout.flush();
    std::cerr.flush();
    std::_Exit(code);
  }
  const TrainResult r = train(cfg, opts);
  return r.stopped ? 128 + stop_requested() : 0;
}

// What `ouroboros eval` may change: the forward's precision and the Transformer-XL evaluation
// lengths. The rest of the model section is the checkpoint's architecture.
const std::vector<std::string> kEvalModelKeys = {"model.dtype", "model.eval_tgt_len",
                                                 "model.eval_mem_len", "model.eval_clamp_len",
                                                 "model.eval_same_length"};

// The checkpoint's model with the evaluation settings of flags and --config applied; a setting
// that cannot take effect (an architecture change, evaluation lengths of a GPT) is refused.
ModelConfig eval_model(const Config& ck, const Config& asked) {
  const nlohmann::json a = asked.to_json()["model"], c = ck.to_json()["model"];
  for (const auto& [name, value] : a.items()) {
    if (value == c[name]) continue;
    const std::string key = "model." + name;
    std::string flag = name;
    for (const auto& f : config_fields()) {
      if (f.key == key) flag = f.flag;
    }
    const bool eval_key =
        std::find(kEvalModelKeys.begin(), kEvalModelKeys.end(), key) != kEvalModelKeys.end();
    if (!eval_key) {
      throw ConfigError("eval: " + flag + " " + value.dump() +
                            " would change the model the "
                            "checkpoint holds (" +
                            name + " " + c[name].dump() + ")",
                        "drop it (from --config too); eval takes --dtype, --eval-tgt-len, "
                        "--eval-mem-len, --eval-clamp-len and --eval-same-length");
    }
    if (key.rfind("model.eval_", 0) == 0 && ck.model.model != ModelKind::kTransformerXl) {
      throw ConfigError("eval: " + flag +
                            " applies to transformer-xl checkpoints; this one "
                            "holds a " +
                            name_of(ck.model.model) + " model",
                        "drop " + flag);
    }
  }
  asked.validate();
  return asked.model;
}

int cmd_eval(const std::string& path, const ConfigFlags& flags, const std::string& split,
             bool json_out, int64_t batch, const std::string& device) {
  Checkpoint ck = load_checkpoint(path);
  Config cfg = flags.apply(ck.config);
  const ModelConfig model_cfg = eval_model(ck.config, cfg);
  // The model's ids are the saved tokenizer's: another one could not take effect.
  if (cfg.data.tokenizer != ck.config.data.tokenizer ||
      cfg.data.tokenizer_file != ck.config.data.tokenizer_file) {
    throw ConfigError("eval reads text with the checkpoint's " + ck.tokenizer.kind() +
                          " tokenizer; --tokenizer and --tokenizer-file cannot change it",
                      "drop --tokenizer and --tokenizer-file (from --config too)");
  }
  at::set_num_threads(static_cast<int>(cfg.train.threads));
  Dataset ds = load_dataset(cfg.data.data, name_of(cfg.data.format), ck.tokenizer);
  std::unique_ptr<LanguageModel> model = make_model(model_cfg);
  const ParamSet params = ck.model.to(run_device(device));
  std::vector<std::string> splits = split == "all"
                                        ? std::vector<std::string>{"train", "valid", "test"}
                                        : std::vector<std::string>{split};
  nlohmann::json out = nlohmann::json::object();
  const bool chars = ck.tokenizer.is_character_level();
  for (const auto& name : splits) {
    const std::vector<int32_t>& tokens = ds.split(name);
    const int64_t unknown = ck.tokenizer.count_unknown(tokens);
    if (unknown > 0) {
      std::cerr << "note: " << unknown << " of " << tokens.size() << " tokens of the " << name
                << " split are not in the checkpoint's vocabulary (read as <unk>)" << std::endl;
    }
    EvalResult r = evaluate(*model, params, tokens, batch);
    r.bytes_per_token = bytes_per_token(ck.tokenizer, tokens);
    nlohmann::json j = r.to_json(chars);
    j["split"] = name;
    if (json_out) {
      out[name] = j;
    } else {
      std::cout << name << ": " << r.summary(chars) << " | " << r.tokens << " tokens" << std::endl;
    }
  }
  if (json_out) std::cout << (splits.size() == 1 ? out[splits[0]] : out).dump() << std::endl;
  return 0;
}

int cmd_generate(const std::string& path, const SampleOptions& opts, const std::string& device) {
  Checkpoint ck = load_checkpoint(path);
  std::unique_ptr<LanguageModel> model = make_model(ck.config.model);
  const int64_t unknown = ck.tokenizer.count_unknown(ck.tokenizer.encode(opts.prompt));
  if (unknown > 0) {
    std::cerr << "warning: " << unknown << " prompt symbol" << (unknown == 1 ? " is" : "s are")
              << " not in the checkpoint's vocabulary and read as <unk>" << std::endl;
  }
  std::cout << generate(*model, ck.model.to(run_device(device)), ck.tokenizer, opts) << std::endl;
  return 0;
}

int cmd_export(const std::string& path, const std::string& format, const std::string& out,
               bool overwrite) {
  if (format != "hf" && format != "torch") {
    throw ConfigError("export: unknown --format '" + format + "'", "use --format hf or torch");
  }
  const Checkpoint ck = load_checkpoint(path);
  if (format == "torch") {  // one file for torch.load, e.g. from a multi-process run's shards
    if (std::filesystem::exists(out) && !overwrite) {
      throw ConfigError("export: " + out + " exists", "choose another --out or add --overwrite");
    }
    const int64_t bytes = save_checkpoint(out, ck);
    std::cout << "wrote " << out << " (" << bytes / (1024 * 1024) << " MiB, step " << ck.step
              << "): load it with torch.load('" << out << "'), resume or evaluate it" << std::endl;
    return 0;
  }
  const ExportResult r = export_huggingface(ck, out, overwrite);
  std::cout << "wrote " << out << ": ";
  for (size_t i = 0; i < r.files.size(); ++i) std::cout << (i ? ", " : "") << r.files[i];
  std::cout << "\n"
            << r.tokenizer_note << "\nload it with transformers.GPT2LMHeadModel.from_pretrained('"
            << out << "')" << std::endl;
  return 0;
}

int cmd_plan(const ConfigFlags& flags, int64_t ticks, const Link& link) {
  Config cfg = flags.apply(Config{});
  if (cfg.model.vocab_size == 0) cfg.model.vocab_size = 256;
  cfg.validate();
  const std::unique_ptr<LanguageModel> model = make_model(cfg.model);
  Plan plan = make_plan(cfg, model->cost_model(cfg.train.batch_size));
  std::cout << plan.summary();
  // The estimate that train checks against the machine's memory (all workers in one process).
  const auto mib = [&](const Config& c) {
    return std::to_string(
        std::llround(estimated_memory_bytes(c, *model, plan) / (1024.0 * 1024.0)));
  };
  std::cout << "memory estimate: " << mib(cfg) << " MiB (all workers in one process)";
  if (resolved_mode(cfg.engine) == Mode::kOuroboros && cfg.engine.recompute == Recompute::kNone) {
    Config recomputed = cfg;
    recomputed.engine.recompute = Recompute::kDelayed;
    std::cout << "; " << mib(recomputed) << " MiB with --recompute delayed on this cut";
  }
  std::cout << "\n";
  if (ticks > 0) std::cout << "\nfirst " << ticks << " ticks:\n" << plan.delayed.grid(ticks);
  if (link.gbit_per_s > 0) std::cout << "\n" << link_summary(cfg, model->param_count(), link);
  return 0;
}

int cmd_bench(const ConfigFlags& flags, BenchOptions opts, const std::string& modes,
              const std::string& threads) {
  const int64_t worker_threads = opts.base.train.threads;  // --worker-threads
  opts.base = flags.apply(benchmark_config());
  opts.base.train.threads = worker_threads;
  std::stringstream ms(modes);
  for (std::string m; std::getline(ms, m, ',');) {
    if (!m.empty()) opts.modes.push_back(m);
  }
  std::stringstream ts(threads);
  for (std::string t; std::getline(ts, t, ',');) {
    try {
      if (!t.empty()) opts.sequential_threads.push_back(std::stoll(t));
    } catch (const std::exception&) {
      throw ConfigError("bench: --threads expects numbers like 1,2, got '" + threads + "'");
    }
  }
  opts.executable = std::filesystem::read_symlink("/proc/self/exe").string();
  run_bench(opts, std::cout);
  return 0;
}

// One method of bench, in this process or (started by launch) as one rank of a process group, of
// which rank 0 prints the result.
int cmd_bench_child(const std::string& config, int64_t warmup, int64_t steps) {
  Config cfg = load_config_file(config);
  const DistEnv env = discover_env(no_env_overrides());
  if (!env.active()) {
    std::cout << bench_measure(cfg, warmup, steps, &std::cerr).dump() << std::endl;
    return 0;
  }
  DistContext ctx(env, cfg);
  const nlohmann::json r =
      bench_measure(cfg, warmup, steps, ctx.is_lead() ? &std::cerr : nullptr, &ctx);
  if (ctx.is_lead()) std::cout << r.dump() << std::endl;
  ctx.finish();
  return 0;
}

const char kDeviceHelp[] =
    "auto | cpu | cuda | cuda:N: where to run; the checkpoint loads on any [auto: a GPU if one is "
    "visible]";

// A subcommand: its flags, registered on the app when it is made, and what it runs once they are
// parsed. The subcommands are listed in `--help` in the order they are made.
struct Command {
  CLI::App* app = nullptr;
  virtual ~Command() = default;
  virtual int run() = 0;
};

struct TrainCommand : Command {
  ConfigFlags flags;
  std::string resume;
  bool overwrite = false;
  DistEnv env = no_env_overrides();
  explicit TrainCommand(CLI::App& parent) {
    app = parent.add_subcommand(
        "train", "train a model (--mode: sequential, ouroboros, gpipe or data-parallel)");
    flags.add_to(*app, {"model", "data", "train", "engine", "dist"});
    flags.add_presets_to(*app);
    app->add_option("--resume", resume,
                    "continue from this checkpoint (a ckpt.pt file, or the ckpt/ directory of "
                    "processes); under another --mode, --modules, --partition or --replicas "
                    "the weights and optimizer moments carry over by name");
    app->add_flag("--overwrite", overwrite,
                  "replace the run already in --out-dir (else an out-dir holding a run is "
                  "refused, and on --resume one holding another run)");
    app->add_option("--rank", env.rank, "this process's rank [RANK]");
    app->add_option("--world-size", env.world_size, "number of processes [WORLD_SIZE]");
    app->add_option("--local-rank", env.local_rank, "rank on this machine [LOCAL_RANK]");
    app->add_option("--master-addr", env.master_addr,
                    "address of rank 0's store [MASTER_ADDR, 127.0.0.1]");
    app->add_option("--master-port", env.master_port,
                    "port of rank 0's store [MASTER_PORT, 29500]");
  }
  int run() override { return cmd_train(flags, resume, overwrite, env); }
};

struct LaunchCommand : Command {
  LaunchOptions opts;
  explicit LaunchCommand(CLI::App& parent) {
    app = parent.add_subcommand(
        "launch", "start and supervise one process per worker: launch --nproc N -- train ...");
    app->add_option("--nproc", opts.nproc, "processes on this machine")->required();
    app->add_option("--nnodes", opts.nnodes, "machines [1]");
    app->add_option("--node-rank", opts.node_rank, "this machine's index [0]");
    app->add_option("--master-addr", opts.master_addr,
                    "address of the machine of rank 0 [127.0.0.1]");
    app->add_option("--master-port", opts.master_port, "free TCP port there [29500]");
    app->add_option("command", opts.args, "the subcommand and its flags, after --");
  }
  int run() override { return launch(opts); }
};

struct EvalCommand : Command {
  std::string checkpoint, split = "test", device = "auto";
  bool json_out = false;
  int64_t batch = 16;
  ConfigFlags flags;
  explicit EvalCommand(CLI::App& parent) {
    app = parent.add_subcommand("eval", "evaluate a checkpoint: loss, bpc or perplexity");
    app->add_option("--checkpoint", checkpoint, "checkpoint file or sharded directory")->required();
    flags.add_to(*app, {"data", "model"}, "the checkpoint's");
    // The model's other flags are accepted only to be refused by name (eval_model).
    for (const auto& [key, opt] : flags.options) {
      if (key.rfind("model.", 0) == 0 &&
          std::find(kEvalModelKeys.begin(), kEvalModelKeys.end(), key) == kEvalModelKeys.end()) {
        opt->group("");
      }
    }
    app->add_option("--split", split, "train | valid | test | all [test]")
        ->check(CLI::IsMember({"train", "valid", "test", "all"}));
    app->add_flag("--json", json_out, "print one JSON object");
    app->add_option("--device", device, kDeviceHelp);
    app->add_option("--batch", batch,
                    "windows per forward pass; transformer-xl: parallel streams [16]")
        ->check(at_least(1));
  }
  int run() override { return cmd_eval(checkpoint, flags, split, json_out, batch, device); }
};

struct GenerateCommand : Command {
  std::string checkpoint, device = "auto";
  SampleOptions sample;
  explicit GenerateCommand(CLI::App& parent) {
    app = parent.add_subcommand("generate", "sample text from a checkpoint");
    app->add_option("--checkpoint", checkpoint, "checkpoint file or sharded directory")->required();
    app->add_option("--prompt", sample.prompt, "text to continue");
    app->add_option("--device", device, kDeviceHelp);
    app->add_option("--tokens", sample.tokens, "tokens to generate [200]")->check(at_least(0));
    app->add_option("--temperature", sample.temperature, "sampling temperature [0.8]");
    app->add_option("--top-k", sample.top_k, "sample among the k likeliest tokens; 0 = all [0]")
        ->check(at_least(0));
    app->add_option("--seed", sample.seed, "sampling seed [1]");
  }
  int run() override {
    validate(sample);  // before the checkpoint is read
    return cmd_generate(checkpoint, sample, device);
  }
};

struct ExportCommand : Command {
  std::string checkpoint, format = "hf", out;
  bool overwrite = false;
  explicit ExportCommand(CLI::App& parent) {
    app = parent.add_subcommand("export",
                                "write a checkpoint in another format: --format hf (a Hugging Face "
                                "GPT-2 directory) or torch (one file, e.g. of a multi-process "
                                "run's shards)");
    app->add_option("--checkpoint", checkpoint, "checkpoint file or sharded directory")->required();
    app->add_option(
        "--format", format,
        "hf: config.json, model.safetensors, tokenizer.json; torch: one checkpoint file [hf]");
    app->add_option("--out", out, "hf: directory to write (new or empty); torch: the file")
        ->required();
    app->add_flag("--overwrite", overwrite, "replace the files of a non-empty --out");
  }
  int run() override { return cmd_export(checkpoint, format, out, overwrite); }
};

struct PlotCommand : Command {
  std::vector<std::string> runs;
  std::string out = "curves.png";
  explicit PlotCommand(CLI::App& parent) {
    app = parent.add_subcommand(
        "plot", "draw training and validation loss of runs, against steps and time, into one PNG");
    app->add_option("runs", runs, "run directories (their --out-dir) or metrics.jsonl files")
        ->required();
    app->add_option("--out", out, "PNG to write [curves.png]");
  }
  int run() override {
    plot_runs(runs, out, std::cout);
    return 0;
  }
};

struct PlanCommand : Command {
  static constexpr int64_t kMaxTicks = 10000;
  ConfigFlags flags;
  int64_t ticks = 6;
  Link link;
  double link_ms = 0.0;
  explicit PlanCommand(CLI::App& parent) {
    app = parent.add_subcommand("plan", "print the partition, schedule and cost estimate");
    flags.add_to(*app, {"model", "train", "engine"});
    flags.add_presets_to(*app);
    app->add_option("--ticks", ticks, "ticks shown in the grid [6]")->check(at_least(0));
    link.gbit_per_s = 0.0;
    app->add_option("--link-gbps", link.gbit_per_s,
                    "also estimate what Ouroboros, GPipe and data parallelism send per step over a "
                    "link of this many Gbit/s, one rank per machine")
        ->check(positive());
    app->add_option("--link-latency-ms", link_ms, "the link's one-way latency [0]")
        ->check(positive(true));
  }
  int run() override {
    if (ticks > kMaxTicks) {
      throw ConfigError(
          "plan: --ticks " + std::to_string(ticks) + " is more than " + std::to_string(kMaxTicks),
          "the grid has a line per tick; show at most " + std::to_string(kMaxTicks));
    }
    if (link_ms > 0 && link.gbit_per_s == 0) {
      throw ConfigError("--link-latency-ms needs --link-gbps", "add --link-gbps, e.g. 1");
    }
    link.latency_s = link_ms / 1e3;
    return cmd_plan(flags, ticks, link);
  }
};

struct BenchCommand : Command {
  BenchOptions bench;
  std::string modes = "sequential,ouroboros,gpipe,data-parallel", threads;
  ConfigFlags flags;
  explicit BenchCommand(CLI::App& parent) {
    app = parent.add_subcommand(
        "bench", "time the training methods side by side: table, bench.json and bench.png");
    app->add_option("--modes", modes,
                    "comma-separated: sequential, ouroboros, gpipe, data-parallel [all four]");
    app->add_option("--steps", bench.steps, "timed steps per method [20]")
        ->check(CLI::PositiveNumber);
    app->add_option("--warmup", bench.warmup, "untimed steps first [3]")
        ->check(CLI::NonNegativeNumber);
    app->add_option("--threads", threads,
                    "intra-op threads of the sequential runs, e.g. 1,2 [1 and the core count "
                    "of each parallel method]");
    app->add_option("--worker-threads", bench.base.train.threads,
                    "intra-op threads per worker of the parallel methods [1]")
        ->check(CLI::PositiveNumber);
    app->add_option("--out-dir", bench.out_dir,
                    "where bench.json and bench.png go [bench/results]");
    app->add_flag("--processes", bench.processes,
                  "run each parallel method as one process per worker (data parallelism: per "
                  "replica) over c10d/Gloo on loopback, as `launch` would");
    app->add_option("--peak-seconds", bench.peak_seconds,
                    "seconds per matmul size when measuring the peak [0.5]");
    flags.add_to(*app, {"model", "train", "engine"}, "", benchmark_config(),
                 {"train.steps", "train.threads", "train.out_dir", "train.metrics",
                  "train.eval_interval", "train.eval_batches", "train.log_interval",
                  "train.checkpoint_interval", "engine.mode", "engine.sync_warmup"});
  }
  int run() override { return cmd_bench(flags, bench, modes, threads); }
};

// One method of bench, for bench itself to start; not listed in --help.
struct BenchChildCommand : Command {
  std::string config;
  int64_t warmup = 0, steps = 1;
  explicit BenchChildCommand(CLI::App& parent) {
    app = parent.add_subcommand("bench-child", "")->group("");
    app->add_option("--config", config)->required();
    app->add_option("--warmup", warmup);
    app->add_option("--steps", steps);
  }
  int run() override { return cmd_bench_child(config, warmup, steps); }
};

// "ouroboros help" is --help; a word that names no subcommand is said to be one. Returns the exit
// code when the arguments are answered here.
std::optional<int> answer_before_parsing(const CLI::App& app, int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "help") {
    std::cout << app.help() << std::flush;
    return 0;
  }
  if (argc < 2 || argv[1][0] == '-') return std::nullopt;
  std::string names;
  bool known = false;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    known = known || sub->get_name() == argv[1];
    if (!sub->get_group().empty()) names += (names.empty() ? "" : ", ") + sub->get_name();
  }
  if (known) return std::nullopt;
  std::cerr << "error: unknown subcommand '" << argv[1] << "' (hint: use one of " << names
            << "; run with --help)" << std::endl;
  return 1;
}

// Runs the chosen subcommand; an error becomes one line on stderr and exit code 1.
int run_reporting_errors(Command& command) {
  try {
    return command.run();
  } catch (const ouroboros::Error& e) {
    std::cerr << "error: " << first_line(e.what()) << std::endl;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << first_line(e.what_without_backtrace()) << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "error: " << first_line(e.what()) << std::endl;
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ouroboros: Transformer language models trained with the Ouroboros model-parallel "
      "algorithm (delayed gradients, K modules on K-1 workers)",
      "ouroboros"};
  app.require_subcommand(1);
  // Flag errors too are one line (CLI11's default adds a second "Run with --help" line).
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "error: " + first_line(e.what()) + " (hint: run with --help)\n";
  });
  app.set_version_flag("--version", std::string(OUROBOROS_VERSION));

  std::vector<std::unique_ptr<Command>> commands;
  commands.push_back(std::make_unique<TrainCommand>(app));
  commands.push_back(std::make_unique<LaunchCommand>(app));
  commands.push_back(std::make_unique<EvalCommand>(app));
  commands.push_back(std::make_unique<GenerateCommand>(app));
  commands.push_back(std::make_unique<ExportCommand>(app));
  commands.push_back(std::make_unique<PlotCommand>(app));
  commands.push_back(std::make_unique<PlanCommand>(app));
  commands.push_back(std::make_unique<BenchCommand>(app));
  commands.push_back(std::make_unique<BenchChildCommand>(app));

  if (const std::optional<int> code = answer_before_parsing(app, argc, argv)) return *code;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (const auto& command : commands) {
    if (*command->app) return run_reporting_errors(*command);
  }
  return 0;
}
