// TorchScript loading with lumen's checks (regular file, damaged records): any bytes load as a model or
// fail with lumen::Error.
#include <lumen/error.h>
#include <lumen/model.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("lumen-fuzz-" + std::to_string(::getpid()) + ".pt")).string();
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    lumen::Model::load(path);
  } catch (const lumen::Error&) {
  }
  return 0;
}
