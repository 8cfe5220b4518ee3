// The .npy reader (maps, baselines): any bytes decode to a float map whose size matches its header, or
// fail with lumen::Error.
#include <lumen/error.h>
#include <lumen/output.h>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const cv::Mat m = lumen::decode_npy(std::string(reinterpret_cast<const char*>(data), size));
    if (m.empty() || m.depth() != CV_32F) __builtin_trap();
  } catch (const lumen::Error&) {
  }
  return 0;
}
