// lumen: errors. Every failure a user can cause is a lumen::Error with a one-line message that names
// the thing at fault (file, layer, class index); the CLI prints it and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// First line of an exception message from a third-party library (c10 errors carry stack traces).
std::string first_line(const std::string& message);

}  // namespace lumen
#pragma GCC visibility pop
