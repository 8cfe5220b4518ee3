// The text inputs a user names: a model card, a labels file, a dataset folder's CSVs and an eval's
// records file. Each must load or fail with lumen::Error. The bytes go to files in a private folder,
// since these readers take paths (as users give them); LUMEN_FUZZ_TEXT picks the reader.
#include <lumen/dataset.h>
#include <lumen/error.h>
#include <lumen/image.h>

#include "eval/eval_run.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace fs = std::filesystem;

namespace {
const fs::path& folder() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("lumen-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d / "images");
    std::ofstream(d / "images" / "a.png") << "";  // a dataset only checks that its images exist
    return d;
  }();
  return dir;
}

void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const fs::path dir = folder();
  try {
#if LUMEN_FUZZ_TEXT == 1
    write(dir / "card.json", bytes);
    lumen::load_card((dir / "card.json").string());
#elif LUMEN_FUZZ_TEXT == 2
    write(dir / "labels.txt", bytes);
    lumen::load_labels((dir / "labels.txt").string());
#elif LUMEN_FUZZ_TEXT == 3
    // labels.csv, then boxes.csv after the first NUL byte (if any).
    const auto cut = bytes.find('\0');
    write(dir / "labels.csv", bytes.substr(0, cut));
    fs::remove(dir / "boxes.csv");
    if (cut != std::string::npos) write(dir / "boxes.csv", bytes.substr(cut + 1));
    lumen::load_dataset(dir.string());
#elif LUMEN_FUZZ_TEXT == 4
    write(dir / "records.jsonl", bytes);
    const nlohmann::json config = {{"model", "m.pt"}, {"methods", {"gradcam"}}};
    lumen::detail::RecordsFile records((dir / "records.jsonl").string(), config, false, [](const nlohmann::json& r) { (void)r.dump(); });
#endif
  } catch (const lumen::Error&) {
  }
  return 0;
}
