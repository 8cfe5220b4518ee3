#include <lumen/error.h>
#include <lumen/files.h>

#include "eval/eval_run.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sys/file.h>
#include <unistd.h>
#include <fstream>
#include <sstream>

namespace lumen::detail {

RecordsFile::RecordsFile(const std::string& path, const nlohmann::json& config, bool fresh,
                         const std::function<void(const nlohmann::json&)>& earlier)
    : path_(path) {
  namespace fs = std::filesystem;
  lock_ = ::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_ < 0) throw Error("cannot create " + path + ".lock: " + std::strerror(errno));
  if (::flock(lock_, LOCK_EX | LOCK_NB) != 0) {
    char holder[32] = {0};
    const ssize_t n = ::pread(lock_, holder, sizeof holder - 1, 0);
    ::close(lock_);
    lock_ = -1;
    throw Error("another lumen run (process " + std::string(holder, n > 0 ? static_cast<size_t>(n) : 0) + ") is writing " + path +
                "; wait for it to finish or give another --out");
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(lock_, 0) != 0 || ::pwrite(lock_, pid.data(), pid.size(), 0) < 0) {
    // The pid is only for the message above; the lock holds without it.
  }
  std::error_code ec;
  if (fresh) fs::remove(path, ec);
  if (path_exists(path)) {
    std::istringstream in(read_text_file(path, "records file"));
    std::string line;
    std::getline(in, line);
    const nlohmann::json head = nlohmann::json::parse(line, nullptr, false);
    if (head.is_discarded() || head.value("config", nlohmann::json()) != config)
      throw Error(path + " belongs to a different run (model, data, layer, metrics or steps differ); use --fresh to start over");
    while (std::getline(in, line)) {
      const auto record = nlohmann::json::parse(line, nullptr, false);
      if (!record.is_discarded()) {  // else a line cut short by an interrupted run
        earlier(record);
        ++count_;
      }
    }
  } else {
    std::ofstream(path) << nlohmann::json{{"config", config}}.dump() << "\n";
  }
  out_.open(path, std::ios::app);
  if (!out_) throw Error("cannot append to " + path);
}

RecordsFile::~RecordsFile() {
  if (lock_ >= 0) {
    // The lock file stays: removing it could let a waiting process lock a file no one else sees.
    ::close(lock_);
  }
}

void RecordsFile::append(const nlohmann::json& record) {
  ++count_;
  out_ << record.dump() << "\n";
  out_.flush();
  if (!out_) throw Error("cannot append to " + path_);
}

}  // namespace lumen::detail

namespace lumen::detail {

nlohmann::json read_records(const std::string& path, const std::function<void(const nlohmann::json&)>& each) {
  require_regular_file(path, "records file");
  // Streamed line by line: a merged 10,000-image run is hundreds of MiB of records.
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) throw Error("cannot read records file " + path);
  const nlohmann::json head = nlohmann::json::parse(line, nullptr, false);
  if (head.is_discarded() || !head.is_object() || !head.contains("config") || !head["config"].is_object())
    throw Error(path + " is not a lumen records file (its first line is not {\"config\": ...})");
  while (std::getline(in, line)) {
    const auto record = nlohmann::json::parse(line, nullptr, false);
    if (!record.is_discarded() && record.is_object()) each(record);
  }
  return head["config"];
}

}  // namespace lumen::detail
