// lumen: errors. Every failure a user can cause is a lumen::Error with a one-line message that names
// the thing at fault (file, layer, class index); the CLI prints it and exits non-zero.
#pragma once

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// First line of an exception message from a third-party library (c10 errors carry stack traces).
std::string first_line(const std::string& message);

// The `n` candidates closest to an unknown `name` (optimal-string-alignment distance, so that a typo
// swapping two characters costs 1), closest first, ties in the candidates' order: what an error
// about an unknown layer, command or method suggests.
std::vector<std::string> closest_names(const std::string& name, const std::vector<std::string>& candidates, size_t n = 3);

// lumen points stderr at /dev/null while an image decoder runs (libpng and libjpeg print their own
// complaints; lumen's one-line error says it better). That is process-wide: whoever writes to stderr
// while other threads may be decoding (eval decodes the next batch on a second thread) holds this lock,
// or the line could go to /dev/null.
std::mutex& stderr_mutex();

}  // namespace lumen
#pragma GCC visibility pop
