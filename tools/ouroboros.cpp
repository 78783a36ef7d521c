// The command-line program: thin wrappers over library calls. Errors become one line on stderr and
// a non-zero exit.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <iomanip>
#include <iostream>
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

int cmd_train(const ConfigFlags& flags, const std::string& resume, bool overwrite,
              const DistEnv& env_flags) {
  if (overwrite && !resume.empty()) {
    throw ConfigError("--overwrite has no effect with --resume (a resumed run continues its files)",
                      "drop --overwrite");
  }
  const Config cfg = resume.empty() ? flags.apply(Config{})
                                    : flags.apply_to_resumed(load_checkpoint(resume).config);
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
    if (key.rfind("model.eval_", 0) == 0 && ck.model.model != "transformer-xl") {
      throw ConfigError("eval: " + flag +
                            " applies to transformer-xl checkpoints; this one "
                            "holds a " +
                            ck.model.model + " model",
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
  at::set_num_threads(static_cast<int>(cfg.train.threads));
  Dataset ds = load_dataset(cfg.data.data, cfg.data.format, ck.tokenizer);
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
  if (ticks > 0) std::cout << "\nfirst " << ticks << " ticks:\n" << plan.delayed.grid(ticks);
  if (link.gbit_per_s > 0) std::cout << "\n" << link_summary(cfg, model->param_count(), link);
  return 0;
}

// The engine benchmark model, the default of `ouroboros bench`.
Config bench_defaults() {
  Config c;
  c.model.n_layer = 6;
  c.model.n_head = 4;
  c.model.n_embd = 256;
  c.model.block_size = 128;
  c.model.vocab_size = 256;
  c.train.batch_size = 8;
  c.engine.modules = 3;
  return c;
}

int cmd_bench(const ConfigFlags& flags, BenchOptions opts, const std::string& modes,
              const std::string& threads) {
  const int64_t worker_threads = opts.base.train.threads;  // --worker-threads
  opts.base = flags.apply(bench_defaults());
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ouroboros: Transformer language models trained with the Ouroboros model-parallel "
      "algorithm (delayed gradients, K modules on K-1 workers)"};
  app.require_subcommand(1);
  // Flag errors too are one line (CLI11's default adds a second "Run with --help" line).
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "error: " + first_line(e.what()) + " (hint: run with --help)\n";
  });
  app.set_version_flag("--version", std::string(OUROBOROS_VERSION));

  auto* train_cmd = app.add_subcommand(
      "train", "train a model (--mode: sequential, ouroboros, gpipe or data-parallel)");
  ConfigFlags train_flags;
  train_flags.add_to(*train_cmd, {"model", "data", "train", "engine", "dist"});
  train_flags.add_presets_to(*train_cmd);
  std::string resume;
  train_cmd->add_option("--resume", resume,
                        "continue from this checkpoint (a ckpt.pt file, or the ckpt/ directory of "
                        "processes); under another --mode, --modules, --partition or --replicas "
                        "the weights and optimizer moments carry over by name");
  bool overwrite = false;
  train_cmd->add_flag("--overwrite", overwrite,
                      "replace the run already in --out-dir (else a non-empty out-dir is refused)");
  DistEnv env_flags = no_env_overrides();
  train_cmd->add_option("--rank", env_flags.rank, "this process's rank [RANK]");
  train_cmd->add_option("--world-size", env_flags.world_size, "number of processes [WORLD_SIZE]");
  train_cmd->add_option("--local-rank", env_flags.local_rank, "rank on this machine [LOCAL_RANK]");
  train_cmd->add_option("--master-addr", env_flags.master_addr,
                        "address of rank 0's store [MASTER_ADDR, 127.0.0.1]");
  train_cmd->add_option("--master-port", env_flags.master_port,
                        "port of rank 0's store [MASTER_PORT, 29500]");

  auto* launch_cmd = app.add_subcommand(
      "launch", "start and supervise one process per worker: launch --nproc N -- train ...");
  LaunchOptions launch_opts;
  launch_cmd->add_option("--nproc", launch_opts.nproc, "processes on this machine")->required();
  launch_cmd->add_option("--nnodes", launch_opts.nnodes, "machines [1]");
  launch_cmd->add_option("--node-rank", launch_opts.node_rank, "this machine's index [0]");
  launch_cmd->add_option("--master-addr", launch_opts.master_addr,
                         "address of the machine of rank 0 [127.0.0.1]");
  launch_cmd->add_option("--master-port", launch_opts.master_port, "free TCP port there [29500]");
  launch_cmd->add_option("command", launch_opts.args, "the subcommand and its flags, after --");

  auto* eval_cmd = app.add_subcommand("eval", "evaluate a checkpoint: loss, bpc or perplexity");
  std::string eval_ckpt, split = "test";
  bool json_out = false;
  int64_t eval_batch = 16;
  eval_cmd->add_option("--checkpoint", eval_ckpt, "checkpoint file or sharded directory")
      ->required();
  ConfigFlags eval_flags;
  eval_flags.add_to(*eval_cmd, {"data", "model"}, "the checkpoint's");
  // The model's other flags are accepted only to be refused by name (eval_model).
  for (const auto& [key, opt] : eval_flags.options) {
    if (key.rfind("model.", 0) == 0 &&
        std::find(kEvalModelKeys.begin(), kEvalModelKeys.end(), key) == kEvalModelKeys.end()) {
      opt->group("");
    }
  }
  eval_cmd->add_option("--split", split, "train | valid | test | all [test]")
      ->check(CLI::IsMember({"train", "valid", "test", "all"}));
  eval_cmd->add_flag("--json", json_out, "print one JSON object");
  std::string eval_device = "auto", gen_device = "auto";
  const std::string device_help =
      "auto | cpu | cuda | cuda:N: where to run; the checkpoint loads on any [auto: a GPU if one "
      "is visible]";
  eval_cmd->add_option("--device", eval_device, device_help);
  eval_cmd
      ->add_option("--batch", eval_batch,
                   "windows per forward pass; transformer-xl: parallel streams [16]")
      ->check(at_least(1));

  auto* gen_cmd = app.add_subcommand("generate", "sample text from a checkpoint");
  std::string gen_ckpt;
  SampleOptions sample;
  gen_cmd->add_option("--checkpoint", gen_ckpt, "checkpoint file or sharded directory")->required();
  gen_cmd->add_option("--prompt", sample.prompt, "text to continue");
  gen_cmd->add_option("--device", gen_device, device_help);
  gen_cmd->add_option("--tokens", sample.tokens, "tokens to generate [200]")->check(at_least(0));
  gen_cmd->add_option("--temperature", sample.temperature, "sampling temperature [0.8]");
  gen_cmd->add_option("--top-k", sample.top_k, "sample among the k likeliest tokens; 0 = all [0]")
      ->check(at_least(0));
  gen_cmd->add_option("--seed", sample.seed, "sampling seed [1]");

  auto* export_cmd =
      app.add_subcommand("export",
                         "write a checkpoint in another format: --format hf (a Hugging Face GPT-2 "
                         "directory) or torch (one file, e.g. of a multi-process run's shards)");
  std::string export_ckpt, export_format = "hf", export_out;
  bool export_overwrite = false;
  export_cmd->add_option("--checkpoint", export_ckpt, "checkpoint file or sharded directory")
      ->required();
  export_cmd->add_option(
      "--format", export_format,
      "hf: config.json, model.safetensors, tokenizer.json; torch: one checkpoint file [hf]");
  export_cmd
      ->add_option("--out", export_out, "hf: directory to write (new or empty); torch: the file")
      ->required();
  export_cmd->add_flag("--overwrite", export_overwrite, "replace the files of a non-empty --out");

  auto* plot_cmd = app.add_subcommand(
      "plot", "draw training and validation loss of runs, against steps and time, into one PNG");
  std::vector<std::string> plot_runs_given;
  std::string plot_out = "curves.png";
  plot_cmd
      ->add_option("runs", plot_runs_given,
                   "run directories (their --out-dir) or metrics.jsonl files")
      ->required();
  plot_cmd->add_option("--out", plot_out, "PNG to write [curves.png]");

  auto* plan_cmd = app.add_subcommand("plan", "print the partition, schedule and cost estimate");
  ConfigFlags plan_flags;
  plan_flags.add_to(*plan_cmd, {"model", "train", "engine"});
  plan_flags.add_presets_to(*plan_cmd);
  int64_t ticks = 6;
  plan_cmd->add_option("--ticks", ticks, "ticks shown in the grid [6]")->check(at_least(0));
  Link link;
  link.gbit_per_s = 0.0;
  double link_ms = 0.0;
  plan_cmd
      ->add_option("--link-gbps", link.gbit_per_s,
                   "also estimate what Ouroboros, GPipe and data parallelism send per step over a "
                   "link of this many Gbit/s, one rank per machine")
      ->check(positive());
  plan_cmd->add_option("--link-latency-ms", link_ms, "the link's one-way latency [0]")
      ->check(positive(true));

  auto* bench_cmd = app.add_subcommand(
      "bench", "time the training methods side by side: table, bench.json and bench.png");
  BenchOptions bench;
  std::string bench_modes = "sequential,ouroboros,gpipe,data-parallel", bench_threads;
  bench_cmd->add_option("--modes", bench_modes,
                        "comma-separated: sequential, ouroboros, gpipe, data-parallel [all four]");
  bench_cmd->add_option("--steps", bench.steps, "timed steps per method [20]")
      ->check(CLI::PositiveNumber);
  bench_cmd->add_option("--warmup", bench.warmup, "untimed steps first [3]")
      ->check(CLI::NonNegativeNumber);
  bench_cmd->add_option("--threads", bench_threads,
                        "intra-op threads of the sequential runs, e.g. 1,2 [1 and the core count "
                        "of each parallel method]");
  bench_cmd
      ->add_option("--worker-threads", bench.base.train.threads,
                   "intra-op threads per worker of the parallel methods [1]")
      ->check(CLI::PositiveNumber);
  bench_cmd->add_option("--out-dir", bench.out_dir,
                        "where bench.json and bench.png go [bench/results]");
  bench_cmd->add_flag("--processes", bench.processes,
                      "run each parallel method as one process per worker (data parallelism: per "
                      "replica) over c10d/Gloo on loopback, as `launch` would");
  bench_cmd->add_option("--peak-seconds", bench.peak_seconds,
                        "seconds per matmul size when measuring the peak [0.5]");
  ConfigFlags bench_flags;
  bench_flags.add_to(*bench_cmd, {"model", "train", "engine"}, "", bench_defaults(),
                     {"train.steps", "train.threads", "train.out_dir", "train.metrics",
                      "train.eval_interval", "train.eval_batches", "train.log_interval",
                      "train.checkpoint_interval", "engine.mode", "engine.sync_warmup"});
  auto* child_cmd = app.add_subcommand("bench-child", "")->group("");  // one method of bench
  std::string child_config;
  int64_t child_warmup = 0, child_steps = 1;
  child_cmd->add_option("--config", child_config)->required();
  child_cmd->add_option("--warmup", child_warmup);
  child_cmd->add_option("--steps", child_steps);

  // "ouroboros help" is --help; a word that names no subcommand is said to be one.
  if (argc >= 2 && std::string(argv[1]) == "help") {
    std::cout << app.help() << std::flush;
    return 0;
  }
  if (argc >= 2 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
      known = known || sub->get_name() == argv[1];
      if (!sub->get_group().empty()) names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::cerr << "error: unknown subcommand '" << argv[1] << "' (hint: use one of " << names
                << "; run with --help)" << std::endl;
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*train_cmd) return cmd_train(train_flags, resume, overwrite, env_flags);
    if (*launch_cmd) return launch(launch_opts);
    if (*eval_cmd) return cmd_eval(eval_ckpt, eval_flags, split, json_out, eval_batch, eval_device);
    if (*gen_cmd) return cmd_generate(gen_ckpt, sample, gen_device);
    if (*export_cmd) return cmd_export(export_ckpt, export_format, export_out, export_overwrite);
    if (*plot_cmd) {
      plot_runs(plot_runs_given, plot_out, std::cout);
      return 0;
    }
    if (*plan_cmd) {
      if (link_ms > 0 && link.gbit_per_s == 0) {
        throw ConfigError("--link-latency-ms needs --link-gbps", "add --link-gbps, e.g. 1");
      }
      link.latency_s = link_ms / 1e3;
      return cmd_plan(plan_flags, ticks, link);
    }
    if (*bench_cmd) return cmd_bench(bench_flags, bench, bench_modes, bench_threads);
    if (*child_cmd) return cmd_bench_child(child_config, child_warmup, child_steps);
  } catch (const ouroboros::Error& e) {
    std::cerr << "error: " << first_line(e.what()) << std::endl;
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << first_line(e.what_without_backtrace()) << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << first_line(e.what()) << std::endl;
    return 1;
  }
  return 0;
}
