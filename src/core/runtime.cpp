#include <lumen/error.h>
#include <lumen/runtime.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <opencv2/core.hpp>

#include <algorithm>
#include <cstdlib>
#include <dlfcn.h>
#include <malloc.h>
#include <thread>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace lumen {

void ensure_passive_openmp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("LUMEN_NO_REEXEC")) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);  // returns only on failure; then carry on as we are
}

void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest allowed value on 64-bit
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
#endif
}

void set_deterministic(bool on) { at::globalContext().setUserEnabledMkldnn(!on); }

void set_threads(int threads) {
  if (threads < 1) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  cv::setNumThreads(threads);
}

void set_this_thread_threads(int threads) {
  threads = std::max(1, threads);
  if (at::get_num_threads() == threads) return;  // the first call also sets up this thread for LibTorch
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
}

namespace {
// A "Field:  N kB" line of a /proc file such as /proc/self/status, in MiB.
double proc_mib(const char* file, const std::string& field) {
  std::ifstream status(file);
  for (std::string line; std::getline(status, line);)
    if (line.rfind(field, 0) == 0) return std::stod(line.substr(field.size())) / 1024.0;
  return 0.0;
}
}  // namespace

double resident_mib() { return proc_mib("/proc/self/status", "VmRSS:"); }
double peak_resident_mib() { return proc_mib("/proc/self/status", "VmHWM:"); }
double available_mib() { return proc_mib("/proc/meminfo", "MemAvailable:"); }

void load_ops_library(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw Error("ops library not found: " + path);
  // RTLD_GLOBAL, as torch.ops.load_library: the library's static initialisers register its operators
  // with LibTorch's dispatcher; it stays loaded for the life of the process.
  if (!dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
    const char* why = dlerror();
    throw Error("cannot load ops library " + path + ": " + (why ? why : "unknown reason"));
  }
}

}  // namespace lumen
