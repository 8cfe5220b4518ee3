#include <lumen/error.h>

namespace lumen {

std::string first_line(const std::string& message) {
  // Some c10 messages start with a blank line; the first line that says something is the one to show.
  size_t start = message.find_first_not_of(" \n");
  if (start == std::string::npos) return message;
  // The TorchScript interpreter puts its traceback first and the actual error ("RuntimeError: ...") last.
  if (message.compare(start, 40, "The following operation failed in the To") == 0) {
    auto last = message.find_last_not_of(" \n");
    auto begin = message.rfind('\n', last);
    std::string tail = message.substr(begin == std::string::npos ? 0 : begin + 1, last + 1 - (begin == std::string::npos ? 0 : begin + 1));
    if (!tail.empty()) return tail;
  }
  auto end = message.find('\n', start);
  return message.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

}  // namespace lumen
