// Progress lines, the JSONL metrics file and the TensorBoard event files of a run.
#include "reporter.h"

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iterator>
#include <set>
#include <sstream>
#include <vector>

#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"

namespace ouroboros {

namespace {

// Rewrites a JSONL metrics file without the records whose step is past `step`.
void keep_records_up_to(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::vector<std::string> kept;
  for (std::string line; std::getline(in, line);) {
    try {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.contains("step") && j["step"].get<int64_t>() > step) continue;
    } catch (const std::exception&) {
      continue;  // a line cut by a crash
    }
    kept.push_back(line);
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  for (const auto& line : kept) out << line << "\n";
}

// A record's TensorBoard scalars: "<group>/<field>" for every number in it but its step and
// module, which say where it belongs. Null (a NaN or a figure not known) is left out.
std::vector<Scalar> scalars_of(const nlohmann::json& record, const std::string& group) {
  std::vector<Scalar> scalars;
  for (const auto& [field, value] : record.items()) {
    if (field == "step" || field == "module" || !value.is_number()) continue;
    scalars.push_back({group + "/" + field, value.get<float>()});
  }
  return scalars;
}

}  // namespace

void check_is_metrics(const std::string& path) {
  std::ifstream in(path);
  if (!in) return;
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream lines(text);
  size_t read = 0;
  for (std::string line; std::getline(lines, line);) {
    read += line.size() + 1;
    if (line.empty()) continue;
    const bool last_and_cut = read > text.size();
    bool object = false;
    try {
      object = nlohmann::json::parse(line).is_object();
    } catch (const std::exception&) {
    }
    if (!object && !last_and_cut) {
      throw ConfigError("metrics file " + path + " holds something other than a run's metrics",
                        "give --metrics a new file, or the metrics.jsonl of this run");
    }
  }
}

std::string metrics_path(const Config& cfg) {
  return cfg.train.metrics.empty()
             ? (std::filesystem::path(cfg.train.out_dir) / "metrics.jsonl").string()
             : cfg.train.metrics;
}

std::set<std::string> metrics_runs(const std::string& path) {
  std::set<std::string> runs;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    try {
      const nlohmann::json j = nlohmann::json::parse(line);
      runs.insert(j.contains("run") ? j["run"].get<std::string>() : "");
    } catch (const std::exception&) {  // a line cut by a crash
    }
  }
  return runs;
}

Reporter::Reporter(const Config& cfg, const std::string& run, std::ostream& log, bool quiet,
                   bool replace, int64_t first_step)
    : cfg_(cfg), run_(run), log_(log), quiet_(quiet), last_step_(first_step) {
  const std::string path = metrics_path(cfg);
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  if (!replace) keep_records_up_to(path, first_step);
  metrics_.open(path, replace ? std::ios::trunc : std::ios::app);
  if (!metrics_) throw Error("cannot write metrics file " + path, "check --out-dir / --metrics");
  // The curves follow the metrics: they replace those of the run the out-dir held, or a resumed
  // run's drop the stopped run's points past first_step (and a TensorBoard that has read them
  // already drops them at the SessionLog START).
  if (replace) {
    remove_event_files(cfg.train.out_dir);
  } else {
    keep_events_up_to(cfg.train.out_dir, first_step);
  }
  events_.emplace(cfg.train.out_dir, run);
  if (first_step > 0) events_->session_start(first_step + 1);  // a resumed run's
  start_ = last_time_ = Clock::now();
}

void Reporter::record(nlohmann::json j, const std::string& group) {
  j["run"] = run_;  // a string: no scalar of its own
  metrics_ << j.dump() << std::endl;
  events_->scalars(j["step"].get<int64_t>(), scalars_of(j, group));
}

void Reporter::loss(int64_t tick, double value) {
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
  const double eta =
      tps > 0 ? static_cast<double>((cfg_.train.steps - done) * rows * cfg_.model.block_size) / tps
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
  record({{"step", done},
          {"loss", mean},
          {"lr", learning_rate(cfg_.train, tick)},
          {"tokens_per_s", tps},
          {"elapsed_s", elapsed()}},
         "train");
  window_sum_ = 0.0;
  window_count_ = 0;
  last_step_ = done;
  last_time_ = now;
}

void Reporter::eval(int64_t step, const std::string& split, const EvalResult& r, bool chars) {
  if (!quiet_)
    log_ << "eval " << split << " @ step " << step << " | " << r.summary(chars) << std::endl;
  nlohmann::json j = r.to_json(chars);
  j["step"] = step;
  j["split"] = split;
  j["elapsed_s"] = elapsed();
  record(j, split);
}

void Reporter::module_stats(const ModuleStats& m) {
  nlohmann::json j{{"step", m.step},
                   {"module", m.module},
                   {"grad_norm", m.grad_norm},
                   {"update_rms", m.update_rms}};
  j["update_cos"] = m.has_cos ? nlohmann::json(m.update_cos) : nlohmann::json(nullptr);
  record(j, "module" + std::to_string(m.module));
}

void Reporter::checkpoint(int64_t step, const std::string& path, double bytes, double seconds,
                          int64_t in_flight) {
  const double mib = bytes / (1024.0 * 1024.0);
  if (!quiet_) {
    std::ostringstream s;
    s << "checkpoint @ step " << step << " | " << path << " | " << std::fixed
      << std::setprecision(1) << mib << " MiB in " << std::setprecision(2) << seconds << " s";
    if (in_flight > 0) s << " | " << in_flight << " batches in flight kept";
    log_ << s.str() << std::endl;
  }
  record({{"step", step},
          {"checkpoint_mib", mib},
          {"checkpoint_s", seconds},
          {"in_flight", in_flight}},
         "checkpoint");
}

}  // namespace ouroboros
