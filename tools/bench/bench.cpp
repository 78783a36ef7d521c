// `ouroboros bench`: every method in a child process, one after another, then a table, JSON and a
// gnuplot bar chart.
#include "bench/bench.h"

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "bench/timing.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"
#include "ouroboros/dist/context.h"
#include "plot/plot.h"

namespace ouroboros {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return buf;
}

// Parallel modes occupy their workers' intra-op threads.
int64_t cores_of(const Config& c) {
  const Mode mode = resolved_mode(c.engine);
  if (mode == Mode::kOuroboros || mode == Mode::kGPipe) {
    return (c.engine.modules - 1) * c.train.threads;
  }
  if (mode == Mode::kDataParallel) return c.engine.workers * c.train.threads;
  return c.train.threads;
}

std::string plural(int64_t n, const std::string& word) {
  if (n == 1) return "1 " + word;
  return std::to_string(n) + " " + word + (word.back() == 's' ? "es" : "s");
}

// A parallel method as one process per worker: a pipeline's K-1 workers, or data parallelism's W
// replicas of batch B/W each (--modules 1 --replicas W), the rows per step of the threaded form.
void as_processes(BenchEntry& e) {
  Config& c = e.cfg;
  if (resolved_mode(c.engine) == Mode::kDataParallel) {
    const int64_t w = c.engine.workers;
    c.engine.mode = Mode::kSequential;
    c.engine.workers = 1;
    c.dist.replicas = w;
    c.train.batch_size /= w;  // validate() has checked that W divides B
    e.processes = w;
  } else {
    e.processes = c.engine.modules - 1;
  }
  e.name += ", " + plural(e.processes, "process");
}

}  // namespace

double matmul_peak_per_core(double seconds) {
  double best = 0.0;
  for (int64_t n : {256, 512, 1024}) best = std::max(best, measure_matmul_gflops(n, 1, seconds));
  return best;
}

std::vector<BenchEntry> bench_entries(const BenchOptions& opts) {
  if (opts.modes.empty())
    throw ConfigError("bench: no modes given", "use e.g. --modes sequential,ouroboros");
  std::vector<BenchEntry> parallel;
  bool with_sequential = false;
  for (const auto& m : opts.modes) {
    const std::optional<Mode> mode = option_named<Mode>(m);
    if (!mode || *mode == Mode::kAuto) {
      throw ConfigError("bench: unknown mode '" + m + "'",
                        "use sequential, ouroboros, gpipe or data-parallel");
    }
    if (*mode == Mode::kSequential) {
      with_sequential = true;
      continue;
    }
    BenchEntry e;
    e.cfg = opts.base;
    e.cfg.engine.mode = *mode;
    if (*mode == Mode::kDataParallel) {
      e.cfg.engine.modules = 1;
      e.cfg.engine.micro_batches = 0;  // the pipelines' option
      e.name = "data-parallel W=" + std::to_string(e.cfg.engine.workers);
    } else {
      e.name = m + " K=" + std::to_string(e.cfg.engine.modules);
      const int64_t M = e.cfg.engine.micro_batches;
      if (*mode == Mode::kGPipe || M > 0) e.name += " M=" + (M > 0 ? std::to_string(M) : "auto");
    }
    e.cfg.engine.sync_warmup = 0;
    e.cfg.validate();  // the threaded form first: its errors name the flags the user gave
    e.cores = cores_of(e.cfg);
    if (opts.processes) as_processes(e);
    parallel.push_back(e);
  }
  if (opts.processes && parallel.empty()) {
    throw ConfigError(
        "bench: --processes applies to ouroboros, gpipe and data-parallel, and --modes "
        "names none of them",
        "add a parallel mode to --modes, or drop --processes");
  }
  std::vector<BenchEntry> out;
  if (with_sequential) {
    std::vector<int64_t> threads = opts.sequential_threads;
    if (threads.empty()) {
      threads.push_back(1);
      for (const auto& e : parallel) threads.push_back(e.cores);
    }
    std::sort(threads.begin(), threads.end());
    threads.erase(std::unique(threads.begin(), threads.end()), threads.end());
    for (int64_t t : threads) {
      if (t < 1) throw ConfigError("bench: --threads must be >= 1, got " + std::to_string(t));
      BenchEntry e;
      e.cfg = opts.base;
      e.cfg.engine.mode = Mode::kSequential;
      e.cfg.engine.modules = 1;
      e.cfg.engine.micro_batches = 0;
      e.cfg.engine.sync_warmup = 0;
      e.cfg.train.threads = t;
      e.cores = t;
      e.name = "sequential " + plural(t, "thread");
      out.push_back(e);
    }
  }
  out.insert(out.end(), parallel.begin(), parallel.end());
  for (auto& e : out) {
    e.cfg.train.steps = opts.warmup + opts.steps;
    e.cfg.validate();
  }
  return out;
}

json bench_measure(const Config& cfg, int64_t warmup, int64_t steps, std::ostream* progress,
                   DistContext* ctx) {
  TimingOptions o;
  o.warmup = warmup;
  o.steps = steps;
  o.progress = progress;
  o.ctx = ctx;
  const Timing t = time_method(cfg, o);
  json r = {{"tokens_per_s", t.tokens_per_s},
            {"ms_per_step", t.ms_per_step},
            {"flop_per_step", t.flop_per_step},
            {"final_loss", t.final_loss},
            {"peak_rss_mib", t.peak_rss_mib}};
  if (ctx) {  // every rank's peak memory, summed at rank 0
    ctx->set_text("bench/rss/" + std::to_string(ctx->rank()), std::to_string(t.peak_rss_mib));
    if (ctx->is_lead()) {
      json each = json::array();
      double sum = 0.0;
      for (int64_t rank = 0; rank < ctx->world_size(); ++rank) {
        each.push_back(
            std::stod(ctx->get_text("bench/rss/" + std::to_string(rank), ctx->timeout(), rank)));
        sum += each.back().get<double>();
      }
      r["peak_rss_mib"] = sum;
      r["peak_rss_mib_per_process"] = each;
    }
  }
  return r;
}

std::string bench_table(const json& report) {
  std::ostringstream s;
  s << "| method | cores | tokens/s | vs sequential, same cores | vs sequential, 1 thread | "
       "GFLOP/s | share of matmul peak | peak RSS MiB |\n"
    << "|---|---|---|---|---|---|---|---|\n";
  auto ratio = [](const json& v) {
    if (v.is_null()) return std::string("-");
    std::ostringstream r;
    r << std::fixed << std::setprecision(2) << v.get<double>() << "x";
    return r.str();
  };
  for (const auto& r : report["runs"]) {
    s << std::fixed << "| " << r["name"].get<std::string>() << " | " << r["cores"].get<int64_t>()
      << " | " << std::setprecision(0) << r["tokens_per_s"].get<double>() << " | "
      << ratio(r["ratio_to_sequential_same_cores"]) << " | "
      << ratio(r["ratio_to_sequential_1_thread"]) << " | " << std::setprecision(1)
      << r["gflops"].get<double>() << " | " << std::setprecision(0)
      << 100.0 * r["peak_share"].get<double>() << "% | " << r["peak_rss_mib"].get<double>()
      << " |\n";
  }
  return s.str();
}

std::string plot_bench(const json& report, const std::string& png_path) {
  namespace fs = std::filesystem;
  const fs::path data = fs::path(png_path).parent_path() / "bench_plot.dat";
  {
    std::ofstream d(data);
    for (const auto& r : report["runs"]) {
      d << '"' << r["name"].get<std::string>() << "\" " << r["tokens_per_s"].get<double>() << "\n";
    }
  }
  double top = 0.0;  // room above the tallest bar for its label
  for (const auto& r : report["runs"]) top = std::max(top, r["tokens_per_s"].get<double>());
  std::ostringstream g;
  g << "set title 'Training speed, " << report["model"]["description"].get<std::string>()
    << "' noenhanced\n"
    << "set ylabel 'tokens/s'\nset yrange [0:" << 1.15 * top + 1.0 << "]\nset grid ytics\n"
    << "set style fill solid 0.8 border -1\nset boxwidth 0.6\nset bmargin 6\n"
    << "set xtics noenhanced rotate by -20 font ',10'\n"
    << "plot '" << data.string() << "' using 0:2:xtic(1) with boxes lc rgb '#4477aa' notitle, "
    << "'' using 0:2:(sprintf('%.0f', $2)) with labels offset 0,1 notitle\n";
  const std::string err = run_gnuplot(g.str(), png_path);
  fs::remove(data);
  return err;
}

namespace {

std::string model_description(const Config& shown) {
  const ModelConfig& m = shown.model;
  std::ostringstream desc;
  desc << (m.model == ModelKind::kGpt ? "GPT" : name_of(m.model)) << " L=" << m.n_layer
       << " H=" << m.n_head << " C=" << m.n_embd << " T=" << m.block_size
       << " B=" << shown.train.batch_size << " V=" << m.vocab_size;
  return desc.str();
}

// Runs entry i in a child process of its own (through `launch` when it takes several) and returns
// the result it printed, with the entry's description and its speed against the matmul peak.
json run_entry(const BenchOptions& opts, const BenchEntry& e, size_t i, double peak) {
  namespace fs = std::filesystem;
  const fs::path cfg_file = fs::path(opts.out_dir) / ("bench_child_" + std::to_string(i) + ".json");
  std::ofstream(cfg_file) << e.cfg.to_json().dump();
  std::string cmd = shell_quote(opts.executable);
  if (e.processes > 1) {
    cmd += " launch --nproc " + std::to_string(e.processes) + " --master-port " +
           std::to_string(unused_tcp_port()) + " --";
  }
  cmd += " bench-child --config " + shell_quote(cfg_file.string()) + " --warmup " +
         std::to_string(opts.warmup) + " --steps " + std::to_string(opts.steps);
  FILE* pipe = popen(cmd.c_str(), "r");  // the child's progress goes to our stderr
  if (!pipe) throw Error("bench: cannot start " + opts.executable);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  fs::remove(cfg_file);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error("bench: " + e.name + " failed (exit status " + std::to_string(status) + ")",
                "its error is printed above");
  }
  json r;
  try {
    r = json::parse(out.substr(out.rfind('{')));
  } catch (const std::exception&) {
    throw Error("bench: " + e.name + " printed no result");
  }
  r["name"] = e.name;
  // Data parallelism on processes runs as --modules 1 --replicas W.
  const Mode mode = e.cfg.dist.replicas > 1 ? Mode::kDataParallel : resolved_mode(e.cfg.engine);
  r["mode"] = mode;
  r["cores"] = e.cores;
  r["threads_per_worker"] = e.cfg.train.threads;
  r["processes"] = e.processes;
  r["modules"] = e.cfg.engine.modules;
  if (mode == Mode::kGPipe || mode == Mode::kOuroboros) {
    r["micro_batches"] =
        e.cfg.engine.micro_batches > 0 ? json(e.cfg.engine.micro_batches) : json("auto");
  }
  if (mode == Mode::kDataParallel) {
    r["workers"] = std::max(e.cfg.engine.workers, e.cfg.dist.replicas);
  }
  const double flops = r["flop_per_step"].get<double>();
  r["gflops"] = flops / (r["ms_per_step"].get<double>() / 1e3) / 1e9;
  r["peak_share"] = r["gflops"].get<double>() / (peak * static_cast<double>(e.cores));
  return r;
}

// Ratios to sequential at the same core count and at one thread, where those were run.
void add_ratios_to_sequential(json& runs) {
  auto sequential_at = [&](int64_t cores) -> json {
    for (const auto& r : runs) {
      if (r["mode"] == "sequential" && r["cores"] == cores) return r["tokens_per_s"];
    }
    return nullptr;
  };
  for (auto& r : runs) {
    const json same = sequential_at(r["cores"].get<int64_t>()), one = sequential_at(1);
    r["ratio_to_sequential_same_cores"] =
        same.is_null() ? json(nullptr) : json(r["tokens_per_s"].get<double>() / same.get<double>());
    r["ratio_to_sequential_1_thread"] =
        one.is_null() ? json(nullptr) : json(r["tokens_per_s"].get<double>() / one.get<double>());
  }
}

json bench_report(const BenchOptions& opts, const Config& shown, double peak, json runs) {
  const ModelConfig& m = shown.model;
  return {{"date", utc_now()},
          {"machine",
           {{"cpu", cpu_model()},
            {"cores", static_cast<int64_t>(std::thread::hardware_concurrency())},
            {"blas", check_blas().library}}},
          {"model",
           {{"description", model_description(shown)},
            {"n_layer", m.n_layer},
            {"n_head", m.n_head},
            {"n_embd", m.n_embd},
            {"block_size", m.block_size},
            {"vocab_size", m.vocab_size},
            {"batch_size", shown.train.batch_size},
            {"optimizer", shown.train.optimizer}}},
          {"steps", opts.steps},
          {"warmup", opts.warmup},
          {"flop_per_step", runs.empty() ? json(nullptr) : runs.front()["flop_per_step"]},
          {"matmul_peak_gflops_per_core", peak},
          {"peak_rss_note",
           opts.processes
               ? "peak resident set size of the processes that ran only this method, summed over "
                 "its processes (libtorch included in each)"
               : "peak resident set size of a separate process that ran only this method "
                 "(libtorch included)"},
          {"processes", opts.processes},
          {"runs", std::move(runs)}};
}

}  // namespace

json run_bench(const BenchOptions& opts, std::ostream& log) {
  namespace fs = std::filesystem;
  std::vector<BenchEntry> entries = bench_entries(opts);
  fs::create_directories(opts.out_dir);
  Config shown = entries.front().cfg;
  if (shown.model.vocab_size == 0) shown.model.vocab_size = 256;

  log << "bench: " << model_description(shown) << ", " << opts.warmup << " warm-up + " << opts.steps
      << " timed steps per method, each method in its own process"
      << (opts.processes ? " (the parallel ones in one process per worker)" : "") << std::endl;
  log << "measuring the matmul peak (1 thread) ..." << std::endl;
  const double peak = matmul_peak_per_core(opts.peak_seconds);
  log << "matmul peak: " << std::fixed << std::setprecision(1) << peak << " GFLOP/s per core"
      << std::endl;

  json runs = json::array();
  for (size_t i = 0; i < entries.size(); ++i) {
    const BenchEntry& e = entries[i];
    log << "[" << (i + 1) << "/" << entries.size() << "] " << e.name << " on "
        << plural(e.cores, "core") << std::endl;
    const json r = run_entry(opts, e, i, peak);
    log << "  " << std::fixed << std::setprecision(0) << r["tokens_per_s"].get<double>()
        << " tokens/s, " << std::setprecision(1) << r["ms_per_step"].get<double>()
        << " ms/step, peak RSS " << std::setprecision(0) << r["peak_rss_mib"].get<double>()
        << " MiB" << std::endl;
    runs.push_back(r);
  }
  add_ratios_to_sequential(runs);
  const json report = bench_report(opts, shown, peak, std::move(runs));
  const fs::path json_path = fs::path(opts.out_dir) / "bench.json";
  std::ofstream(json_path) << report.dump(2) << std::endl;
  const std::string png = (fs::path(opts.out_dir) / "bench.png").string();
  log << "\n" << bench_table(report) << "\n";
  log << "wrote " << json_path.string() << std::endl;
  const std::string plot_error = plot_bench(report, png);
  if (plot_error.empty()) {
    log << "wrote " << png << std::endl;
  } else {
    log << "warning: no chart: " << plot_error << std::endl;
  }
  return report;
}

}  // namespace ouroboros
