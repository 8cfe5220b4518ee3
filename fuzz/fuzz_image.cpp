// Image decoding behind the header check: any bytes either decode to an image under the pixel limit
// or fail with lumen::Error.
#include <lumen/error.h>
#include <lumen/image.h>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lumen::set_image_limits({4'000'000, false});  // the fuzzer's memory limit, not lumen's default
    const cv::Mat img = lumen::decode_image(std::string(reinterpret_cast<const char*>(data), size), "fuzz-input");
    if (img.empty() || static_cast<long long>(img.rows) * img.cols > 4'000'000) __builtin_trap();
  } catch (const lumen::Error&) {
  }
  return 0;
}
