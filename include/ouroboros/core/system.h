// Facts about the machine a run needs to report: BLAS speed, memory, threads.
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/Device.h>

namespace ouroboros {

// Measures a 256x256 single-precision matrix multiply at one thread and names the loaded BLAS.
struct BlasReport {
  double gflops = 0.0;
  std::string library;  // path of the loaded libblas / libopenblas / libmkl, or "unknown"
  bool slow() const { return gflops < 10.0; }
};
BlasReport check_blas();
// One line if BLAS is slow (reference BLAS), else "". The fix: install libopenblas0-openmp.
std::string blas_warning(const BlasReport& r);
// Peak single-thread float matrix-multiply rate (GFLOP/s) on n x n matrices: the bench's peak.
double measure_matmul_gflops(int64_t n, int threads, double seconds = 0.5);

// Peak resident set size of this process in MiB.
double peak_rss_mib();
// glibc serves every block from its heap and keeps freed memory for reuse, instead of mapping big
// blocks afresh and returning memory to the system after every step (15% faster steps on small
// models, 2-3.6x on the Transformer-XL base shapes); called once by every training method.
// MALLOC_* environment settings or glibc.malloc tunables in GLIBC_TUNABLES win.
void keep_freed_memory();
// "1m32s", "45s", "2h03m".
std::string format_duration(double seconds);
// Fault injection for the process tests: with OUROBOROS_FAULT=stop:<phase>:<rank> in the
// environment, the process of that RANK stops itself (SIGSTOP, as a frozen machine would) when it
// reaches the named phase; with kill:<phase>:<rank> it dies there (SIGKILL, as a crash or an
// out-of-memory kill would). Without the variable it does nothing.
void fault_point(const char* phase);

// Physical memory of the machine in bytes (0 if unknown).
double physical_memory_bytes();

// The device a process trains on (train.device): "cpu"; "cuda:N"; "cuda" = cuda:local_rank
// (processes) or cuda:0; "auto" = the same when a CUDA device is visible, else cpu. Throws
// ConfigError when CUDA is asked for and none is visible (or N is out of range).
c10::Device run_device(const std::string& device, int64_t local_rank = 0);
// "cpu", or "cuda:0 (1 of 1 visible)", for the run's log.
std::string describe_device(const c10::Device& device);
// The device of worker thread w of a process on `base`: with --device cuda or auto and several
// GPUs visible, cuda:(w mod n); otherwise (the CPU, one GPU, or an explicit cuda:N) base.
c10::Device worker_device(const std::string& device, const c10::Device& base, int64_t w);
// Sets float32 matrix products on CUDA to TF32 (cuBLAS and cuDNN) or to full float32, for the
// whole process. Throws ConfigError for TF32 on a CPU device (--device auto without a GPU).
void set_tf32(bool on, const c10::Device& device);

// s inside single quotes for /bin/sh, each ' written as '\''.
std::string shell_quote(const std::string& s);

// A TCP port on the loopback interface that nobody listens on now (the kernel's pick), for a
// rendezvous this program starts itself. Throws Error when no socket can be bound.
int unused_tcp_port();

// An exclusive lock on a directory for as long as it lives (flock on the directory itself, so
// nothing is written into it), so that two runs cannot share an out-dir. Throws Error naming the
// directory when another process holds it.
class DirLock {
 public:
  explicit DirLock(const std::string& dir);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace ouroboros
