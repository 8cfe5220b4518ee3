// The .npy reader (maps, baselines, volumes): any bytes decode to a float map, or to an array whose
// values fill its shape, or fail with lumen::Error.
#include <lumen/error.h>
#include <lumen/output.h>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const cv::Mat m = lumen::decode_npy(bytes);
    if (m.empty() || m.depth() != CV_32F) __builtin_trap();
  } catch (const lumen::Error&) {
  }
  try {
    const lumen::NpyArray a = lumen::decode_npy_array(bytes);
    size_t count = 1;
    for (long long d : a.shape) count *= static_cast<size_t>(d);
    if (a.shape.empty() || count != a.data.size()) __builtin_trap();
  } catch (const lumen::Error&) {
  }
  return 0;
}
