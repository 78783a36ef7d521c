// BLAS detection (a reference BLAS makes libtorch about 17x slower), peak memory, and durations.
#include "ouroboros/core/system.h"

#include <fcntl.h>
#include <link.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <torch/torch.h>

#include "ouroboros/core/config.h"
#include "ouroboros/core/errors.h"

using torch::Tensor;

namespace ouroboros {
namespace {

int find_blas(struct dl_phdr_info* info, size_t, void* data) {
  std::string name = info->dlpi_name ? info->dlpi_name : "";
  auto* out = static_cast<std::string*>(data);
  if (name.find("openblas") != std::string::npos || name.find("libmkl") != std::string::npos ||
      name.find("libblis") != std::string::npos) {
    *out = name;
    return 1;
  }
  if (name.find("libblas") != std::string::npos && out->empty()) *out = name;
  return 0;
}

}  // namespace

double measure_matmul_gflops(int64_t n, int threads, double seconds) {
  const int previous = at::get_num_threads();
  at::set_num_threads(threads);
  torch::NoGradGuard no_grad;
  Tensor a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
  at::mm_out(c, a, b);  // warm-up
  int64_t reps = 0;
  auto start = std::chrono::steady_clock::now();
  double elapsed = 0.0;
  while (elapsed < seconds) {
    at::mm_out(c, a, b);
    ++reps;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  at::set_num_threads(previous);
  return 2.0 * static_cast<double>(n * n * n) * static_cast<double>(reps) / elapsed / 1e9;
}

BlasReport check_blas() {
  BlasReport r;
  r.gflops = measure_matmul_gflops(256, 1, 0.05);
  std::string lib;
  dl_iterate_phdr(find_blas, &lib);
  r.library = lib.empty() ? "unknown" : lib;
  return r;
}

std::string blas_warning(const BlasReport& r) {
  if (!r.slow()) return "";
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "warning: slow BLAS (%.1f GFLOP/s, %s): libtorch runs about 17x slower; "
                "install libopenblas0-openmp (apt-get install libopenblas0-openmp)",
                r.gflops, r.library.c_str());
  return buf;
}

double peak_rss_mib() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

std::string format_duration(double seconds) {
  if (seconds < 0 || seconds != seconds) return "?";
  long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%lds", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  }
  return buf;
}

// A training step allocates and frees the same activation and gradient buffers every tick. With
// glibc's defaults, buffers over the (dynamic) mmap threshold come from fresh mmaps and freed heap
// tops are trimmed, so every step page-faults its memory anew: that made the reference trainer
// ~15% slower than the same ops driven from Python. Keep freed memory for reuse instead (the
// process then holds its peak footprint). MALLOC_* environment settings take precedence.
void keep_freed_memory() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const char* v : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"}) {
      if (std::getenv(v)) return;
    }
    const char* tunables = std::getenv("GLIBC_TUNABLES");
    if (tunables && std::strstr(tunables, "glibc.malloc.")) return;
    // Blocks past the mmap threshold (32 MiB at most) would be mapped on every allocation and
    // unmapped on every free, so each step pays page faults on fresh pages again: a 2 x 8 x 512 x
    // 1024 attention tensor is 32 MiB. Serve every block from the heap and keep freed memory.
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, -1);  // never trim the heap
  });
}

void fault_point(const char* phase) {
  static const char* spec = std::getenv("OUROBOROS_FAULT");
  if (!spec) return;
  const char* rank = std::getenv("RANK");
  const std::string at = std::string(phase) + ":" + (rank ? rank : "0");
  if (spec == "stop:" + at) ::raise(SIGSTOP);
  if (spec == "kill:" + at) ::raise(SIGKILL);
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

c10::Device run_device(const std::string& device, int64_t local_rank) {
  if (!is_device_name(device)) {
    throw ConfigError("unknown device '" + device + "'", "use --device auto, cpu, cuda or cuda:N");
  }
  if (device == "cpu") return c10::Device(c10::kCPU);
  const bool cuda = torch::cuda::is_available();
  if (device == "auto" && !cuda) return c10::Device(c10::kCPU);
  if (!cuda) {
    throw ConfigError("--device " + device + ": no CUDA device is visible to this process" +
                          (at::globalContext().hasCUDART() ? "" : " (this libtorch has no CUDA)"),
                      "use --device cpu, or auto to take a GPU where there is one");
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  const int64_t index =
      device.rfind("cuda:", 0) == 0 ? std::stoll(device.substr(5)) : local_rank % count;
  if (index >= count) {
    throw ConfigError(
        "--device " + device + ": this process sees " + std::to_string(count) + " CUDA device(s)",
        "use cuda:0 to cuda:" + std::to_string(count - 1) + ", or cuda");
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::string describe_device(const c10::Device& device) {
  if (device.is_cpu()) return "cpu";
  return device.str() + " (" + std::to_string(device.index() + 1) + " of " +
         std::to_string(torch::cuda::device_count()) + " visible)";
}

c10::Device worker_device(const std::string& device, const c10::Device& base, int64_t w) {
  if (!base.is_cuda() || (device != "cuda" && device != "auto")) return base;
  const int64_t n = static_cast<int64_t>(torch::cuda::device_count());
  if (n < 2) return base;
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(w % n));
}

void set_tf32(bool on, const c10::Device& device) {
  if (on && device.is_cpu()) {
    throw ConfigError("--tf32 1: this run trains on the CPU, which has no TF32",
                      "drop --tf32, or train on a GPU (--device cuda)");
  }
  at::globalContext().setAllowTF32CuBLAS(on);
  at::globalContext().setAllowTF32CuDNN(on);
}

int unused_tcp_port() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  const bool ok = s >= 0 && bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  if (s >= 0) close(s);
  if (!ok) throw Error(std::string("cannot bind a loopback TCP socket: ") + std::strerror(errno));
  return ntohs(a.sin_port);
}

double physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && size > 0 ? static_cast<double>(pages) * static_cast<double>(size) : 0.0;
}

DirLock::DirLock(const std::string& dir) {
  fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ < 0) {
    throw Error("cannot open out-dir " + dir + ": " + std::strerror(errno),
                "check --out-dir and its permissions");
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    fd_ = -1;
    throw Error("out-dir " + dir + " is in use by another training run",
                "wait for it to finish or choose another --out-dir");
  }
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock
}

}  // namespace ouroboros
