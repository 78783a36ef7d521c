// gnuplot charts: the runner shared with `ouroboros bench`, and training curves from metrics JSONL.
#include "plot/plot.h"

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"

namespace ouroboros {
namespace {

namespace fs = std::filesystem;

// A path inside gnuplot's single quotes (which know no escapes but a doubled quote).
std::string gp_string(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

// Paul Tol's bright scheme: distinct in colour and in grey.
const std::vector<std::string> kColours = {"#4477aa", "#ee6677", "#228833", "#ccbb44",
                                           "#66ccee", "#aa3377", "#bbbbbb"};

}  // namespace

std::string run_gnuplot(const std::string& body, const std::string& png_path, int width,
                        int height) {
  const fs::path png(png_path);
  const fs::path dir = png.has_parent_path() ? png.parent_path() : fs::path(".");
  const fs::path script = dir / (png.stem().string() + ".gp");
  std::string err;
  for (const std::string terminal : {"pngcairo", "png"}) {
    {
      std::ofstream g(script);
      g << "set terminal " << terminal << " size " << width << "," << height << "\n"
        << "set output " << gp_string(png_path) << "\n"
        << body;
    }
    const std::string cmd = "gnuplot " + shell_quote(script.string()) + " 2>&1";
    FILE* pipe = popen(cmd.c_str(), "r");
    if (!pipe) {
      err = "cannot start gnuplot";
      break;
    }
    std::string out;
    char buf[512];
    while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
    const int status = pclose(pipe);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && fs::exists(png) &&
        fs::file_size(png) > 0) {
      fs::remove(script);
      return "";
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
      err = "gnuplot not found (install it: apt-get install gnuplot-nox)";
      break;
    }
    err = "gnuplot failed: " + out.substr(0, out.find('\n'));
  }
  fs::remove(script);
  return err;
}

RunCurves read_run_curves(const std::string& path) {
  const fs::path p(path);
  const fs::path file = fs::is_directory(p) ? p / "metrics.jsonl" : p;
  std::ifstream in(file);
  if (!in) {
    throw Error("plot: " + path + " has no metrics (" + file.string() + " not found)",
                "give the --out-dir of a training run or its metrics.jsonl");
  }
  RunCurves c;
  fs::path dir = fs::is_directory(p) ? p : p.parent_path();
  c.label = fs::weakly_canonical(dir).filename().string();
  // A resumed run restarts its clock: later records continue from the last time seen.
  double offset = 0.0, last = 0.0;
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception&) {
      continue;  // a line cut by a crash
    }
    if (!j.is_object() || !j.contains("loss") || !j.contains("step") || j.contains("module"))
      continue;
    double t = j.value("elapsed_s", 0.0);
    if (t + offset < last) offset = last;
    t += offset;
    last = t;
    const double step = j["step"].get<double>(), loss = j["loss"].get<double>();
    if (!j.contains("split")) {
      c.train_step.push_back(step);
      c.train_loss.push_back(loss);
      c.train_time.push_back(t);
    } else if (j["split"] == "valid") {
      c.valid_step.push_back(step);
      c.valid_loss.push_back(loss);
      c.valid_time.push_back(t);
    }
  }
  if (c.train_step.empty() && c.valid_step.empty()) {
    throw Error("plot: " + file.string() + " holds no loss records",
                "give the metrics of a run that logged at least one step");
  }
  return c;
}

void plot_runs(const std::vector<std::string>& paths, const std::string& png_path,
               std::ostream& log) {
  if (paths.empty()) throw Error("plot: no runs given", "name one or more run directories");
  std::vector<RunCurves> runs;
  std::map<std::string, int> seen;
  for (const auto& p : paths) {
    runs.push_back(read_run_curves(p));
    ++seen[runs.back().label];
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    if (seen[runs[i].label] > 1) runs[i].label = paths[i];  // two runs named alike: their paths
  }
  const fs::path png(png_path);
  if (png.has_parent_path()) fs::create_directories(png.parent_path());
  const fs::path dir = png.has_parent_path() ? png.parent_path() : fs::path(".");
  // One data file per run: blocks 0 (training) and 1 (validation), columns step, loss, seconds.
  std::vector<fs::path> data;
  for (size_t i = 0; i < runs.size(); ++i) {
    data.push_back(dir / (png.stem().string() + "." + std::to_string(i) + ".dat"));
    std::ofstream d(data.back());
    const RunCurves& r = runs[i];
    for (size_t k = 0; k < r.train_step.size(); ++k)
      d << r.train_step[k] << " " << r.train_loss[k] << " " << r.train_time[k] << "\n";
    if (r.train_step.empty()) d << "nan nan nan\n";  // keeps the block numbering
    d << "\n\n";
    for (size_t k = 0; k < r.valid_step.size(); ++k)
      d << r.valid_step[k] << " " << r.valid_loss[k] << " " << r.valid_time[k] << "\n";
    if (r.valid_step.empty()) d << "nan nan nan\n";
  }
  auto panel = [&](const std::string& xlabel, int column) {
    std::string s = "set xlabel '" + xlabel + "'\nplot ";
    for (size_t i = 0; i < runs.size(); ++i) {
      const std::string colour = kColours[i % kColours.size()];
      const std::string file = gp_string(data[i].string());
      s += std::string(i ? ", \\\n     " : "") + file + " index 0 using " + std::to_string(column) +
           ":2 with lines lw 1.5 lc rgb '" + colour + "' title " +
           gp_string(runs[i].label + " train") + ", \\\n     " + file + " index 1 using " +
           std::to_string(column) + ":2 with linespoints pt 7 ps 0.8 dt 2 lw 1.5 lc rgb '" +
           colour + "' title " + gp_string(runs[i].label + " valid");
    }
    return s + "\n";
  };
  const std::string body =
      "set multiplot layout 1,2 title 'Loss (nats per token)' noenhanced\n"
      "set grid\nset key top right noenhanced font ',9'\nset ylabel 'loss'\n" +
      panel("step", 1) + panel("seconds", 3) + "unset multiplot\n";
  const std::string err = run_gnuplot(body, png_path, 1280, 520);
  for (const auto& f : data) fs::remove(f);
  if (!err.empty()) throw Error("plot: " + err, "install gnuplot-nox (scripts/install-deps.sh)");
  log << "wrote " << png_path << " (" << runs.size() << " run" << (runs.size() == 1 ? "" : "s")
      << ")" << std::endl;
}

}  // namespace ouroboros
