// lumen serve's request readers, on bytes from the network: the params part (JSON -> ExplainOptions,
// checked against a small in-memory model) and the image part (header checks, then decoding). Any
// bytes give options, an image, or an HttpError; never a crash, a hang or another exception.
#include "serve/request.h"

#include <lumen/demo.h>
#include <lumen/error.h>

#include <cstdint>
#include <string>

namespace {

const lumen::serve::ServedModel& served() {
  static const lumen::serve::ServedModel model = [] {
    lumen::Model m = lumen::Model::from_module(lumen::demo::make_network(4), "demo");
    return lumen::serve::ServedModel{"demo", "demo", "", lumen::Explainer(m, lumen::demo::preprocess(), lumen::demo::class_names()), "", {}, {}};
  }();
  return model;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto params = lumen::serve::read_params(lumen::serve::parse_params_json(bytes), served());
    if (!params.options || params.key.empty()) __builtin_trap();
  } catch (const lumen::serve::HttpError& e) {
    if (e.status < 400 || e.status > 415) __builtin_trap();
  }
  try {
    const cv::Mat image = lumen::serve::decode_upload(bytes, "fuzz", 1 << 20);
    if (image.empty()) __builtin_trap();
  } catch (const lumen::serve::HttpError& e) {
    if (e.status != 400 && e.status != 413 && e.status != 415) __builtin_trap();
  }
  return 0;
}
