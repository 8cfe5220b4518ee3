#include <lumen/error.h>

#include "eval/eval_run.h"

#include <filesystem>
#include <fstream>

namespace lumen::detail {

RecordsFile::RecordsFile(const std::string& path, const nlohmann::json& config, bool fresh,
                         const std::function<void(const nlohmann::json&)>& earlier)
    : path_(path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fresh) fs::remove(path, ec);
  if (fs::exists(path)) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    const nlohmann::json head = nlohmann::json::parse(line, nullptr, false);
    if (head.is_discarded() || head.value("config", nlohmann::json()) != config)
      throw Error(path + " belongs to a different run (model, data, layer, metrics or steps differ); use --fresh to start over");
    while (std::getline(in, line)) {
      const auto record = nlohmann::json::parse(line, nullptr, false);
      if (!record.is_discarded()) earlier(record);  // else a line cut short by an interrupted run
    }
  } else {
    std::ofstream(path) << nlohmann::json{{"config", config}}.dump() << "\n";
  }
  out_.open(path, std::ios::app);
  if (!out_) throw Error("cannot append to " + path);
}

void RecordsFile::append(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
  if (!out_) throw Error("cannot append to " + path_);
}

}  // namespace lumen::detail
