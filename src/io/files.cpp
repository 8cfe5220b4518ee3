#include <lumen/error.h>
#include <lumen/files.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <unistd.h>

namespace lumen {
namespace fs = std::filesystem;

std::uintmax_t require_regular_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) throw Error(what + " not found: " + path);
  if (fs::is_directory(status)) throw Error(what + " " + path + " is a folder, not a file");
  if (!fs::is_regular_file(status))
    throw Error(what + " " + path + " is not a regular file (a pipe, socket or device); lumen reads files only");
  const auto size = fs::file_size(path, ec);
  if (ec) throw Error("cannot read " + what + " " + path + ": " + ec.message());
  return size;
}

std::string read_text_file(const std::string& path, const std::string& what, std::uintmax_t max_bytes) {
  const auto size = require_regular_file(path, what);
  if (size > max_bytes)
    throw Error(what + " " + path + " is " + std::to_string(size >> 20) + " MiB, over the limit of " + std::to_string(max_bytes >> 20) +
                " MiB for a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + what + ": " + path);
  std::string text;
  text.reserve(static_cast<size_t>(size));
  // Bounded again while reading: the file may grow between the size check and the read.
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(in.gcount()));
    if (text.size() > max_bytes) throw Error(what + " " + path + " grew past the limit while it was read");
  }
  if (std::memchr(text.data(), '\0', text.size()) != nullptr) throw Error(what + " " + path + " is not a text file (it holds NUL bytes)");
  return text;
}

bool path_exists(const std::string& path) noexcept {
  std::error_code ec;
  return std::filesystem::exists(std::filesystem::status(path, ec));
}

bool is_folder(const std::string& path) noexcept {
  std::error_code ec;
  return std::filesystem::is_directory(std::filesystem::status(path, ec));
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const fs::path target(path);
  const fs::path tmp = target.parent_path() / ("." + target.filename().string() + ".tmp" + std::to_string(::getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error("cannot write " + path);
    }
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error("cannot write " + path + ": " + ec.message());
  }
}

}  // namespace lumen
