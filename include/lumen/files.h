// lumen: reading what users name on the command line. Every path lumen reads goes through these, so
// that a FIFO, a device or a folder is refused instead of blocking or streaming forever, and text
// inputs (labels, cards, CSVs, records) have a size limit and must be text.
#pragma once

#include <cstdint>
#include <string>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

// Text files larger than this are refused (a labels file of 21k ImageNet classes is ~0.5 MB; a
// records.jsonl of 100k images a few hundred MB).
constexpr std::uintmax_t kMaxTextBytes = 1024ull * 1024 * 1024;

// Throws lumen::Error naming `what` and the path unless it is an existing regular file (symlinks to
// one are fine). Returns its size in bytes.
std::uintmax_t require_regular_file(const std::string& path, const std::string& what);

// Whether anything exists at `path`, never throwing: a name the file system refuses (too long, a
// component that is a file) does not exist. std::filesystem::exists throws for those, and a dataset's
// labels.csv or a command line can hold any name.
bool path_exists(const std::string& path) noexcept;
bool is_folder(const std::string& path) noexcept;

// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so readers never
// see a half-written file.
void write_file_atomic(const std::string& path, const std::string& bytes);

// The whole file as text: a regular file of at most `max_bytes` with no NUL byte.
std::string read_text_file(const std::string& path, const std::string& what, std::uintmax_t max_bytes = kMaxTextBytes);

}  // namespace lumen
#pragma GCC visibility pop
