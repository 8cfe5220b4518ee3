#include <lumen/error.h>

#include <algorithm>

namespace lumen {

std::mutex& stderr_mutex() {
  static std::mutex m;
  return m;
}

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

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace

std::vector<std::string> closest_names(const std::string& name, const std::vector<std::string>& candidates, size_t n) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& c : candidates) scored.emplace_back(edit_distance(name, c), c);
  std::stable_sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (size_t i = 0; i < std::min(n, scored.size()); ++i) out.push_back(scored[i].second);
  return out;
}

}  // namespace lumen
