#include <lumen/runtime.h>

#include <fstream>
#include <string>

#include <ATen/Parallel.h>
#include <opencv2/core.hpp>

#include <algorithm>
#include <cstdlib>
#include <thread>
#include <unistd.h>

namespace lumen {

void ensure_passive_openmp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("LUMEN_NO_REEXEC")) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);  // returns only on failure; then carry on as we are
}

void set_threads(int threads) {
  if (threads < 1) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  cv::setNumThreads(threads);
}

namespace {
// A "Field:  N kB" line of /proc/self/status, in MiB.
double status_mib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind(field, 0) == 0) return std::stod(line.substr(field.size())) / 1024.0;
  return 0.0;
}
}  // namespace

double resident_mib() { return status_mib("VmRSS:"); }
double peak_resident_mib() { return status_mib("VmHWM:"); }

}  // namespace lumen
