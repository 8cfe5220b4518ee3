// libFuzzer target for the ONNX loader and what it builds: any byte string must either import and run a
// forward on a small input, or fail with lumen::Error (or LibTorch's own error from that forward).
#include "model/onnx/import.h"

#include <lumen/error.h>

#include <torch/script.h>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lumen::detail::OnnxImport imported;
  try {
    // No folder: external data is refused, so the fuzzer cannot read files.
    imported = lumen::detail::import_onnx_bytes(std::string(reinterpret_cast<const char*>(data), size), "", "fuzz-input");
  } catch (const lumen::Error&) {
    return 0;
  }
  try {
    torch::NoGradGuard no_grad;
    imported.module.forward({torch::rand({1, 3, 16, 16})});
  } catch (const std::exception&) {
    // LibTorch's interpreter reports shapes the graph does not take, and the importer's run-time asserts,
    // as c10::Error or std::runtime_error; lumen::Model turns both into lumen::Error with the node named.
  }
  return 0;
}
