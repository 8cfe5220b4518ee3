// libFuzzer target for the ONNX loader: any byte string must either import or fail with lumen::Error.
// Build and run: see docs/onnx.md ("Fuzzing the loader").
#include "model/onnx/import.h"

#include <lumen/error.h>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    // No folder: external data is refused, so the fuzzer cannot read files.
    lumen::detail::import_onnx_bytes(std::string(reinterpret_cast<const char*>(data), size), "", "fuzz-input");
  } catch (const lumen::Error&) {
  }
  return 0;
}
