// Charts through gnuplot: the one place that starts it, and the training curves of runs
// (`ouroboros plot`).
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace ouroboros {

// Runs a gnuplot script that draws into png_path (the terminal and output lines are added, pngcairo
// tried first, then png). Returns "" when the PNG was written, else the problem in one line.
std::string run_gnuplot(const std::string& body, const std::string& png_path, int width = 960,
                        int height = 540);

// One run's curves from its metrics JSONL: training loss and validation loss against the step and
// against the seconds since the run started.
struct RunCurves {
  std::string label;
  std::vector<double> train_step, train_loss, train_time;
  std::vector<double> valid_step, valid_loss, valid_time;
};

// Reads a run directory (its metrics.jsonl) or a metrics file. Throws Error (one line) for a path
// without metrics or a file with no loss record.
RunCurves read_run_curves(const std::string& path);

// Draws training and validation loss of the runs, against steps and against wall-clock time,
// into one PNG, one colour per run. Throws Error when gnuplot cannot draw it.
void plot_runs(const std::vector<std::string>& paths, const std::string& png_path,
               std::ostream& log);

}  // namespace ouroboros
