#include <lumen/error.h>

namespace lumen {

std::string first_line(const std::string& message) {
  // Some c10 messages start with a blank line; the first line that says something is the one to show.
  size_t start = message.find_first_not_of(" \n");
  if (start == std::string::npos) return message;
  auto end = message.find('\n', start);
  return message.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

}  // namespace lumen
