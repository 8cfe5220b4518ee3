// Test helpers: fixture paths, running the CLI, comparing maps.
#pragma once

#include <lumen/lumen.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace lumen::test {

inline std::string shared(const std::string& rel) { return std::string(LUMEN_SHARED_DIR) + "/" + rel; }
inline std::string fixture(const std::string& rel) { return std::string(LUMEN_FIXTURES_DIR) + "/" + rel; }

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

struct CliResult {
  int code = 0;
  std::string out, err;
};

// Runs the lumen binary with `args` (already shell-quoted), capturing stdout and stderr; `prefix` goes
// before the binary (e.g. "timeout -s INT 4 ").
inline CliResult run_cli_prefixed(const std::string& prefix, const std::string& args) {
  auto dir = std::filesystem::temp_directory_path() / ("lumen-cli-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string out = (dir / "stdout").string(), err = (dir / "stderr").string();
  std::string cmd = prefix + std::string(LUMEN_CLI) + " " + args + " >" + out + " 2>" + err;
  int status = std::system(cmd.c_str());
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream o(out), e(err);
  r.out.assign(std::istreambuf_iterator<char>(o), {});
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  return r;
}

inline CliResult run_cli(const std::string& args) { return run_cli_prefixed("", args); }

inline double pearson(const cv::Mat& a, const cv::Mat& b) {
  cv::Scalar ma, sa, mb, sb;
  cv::meanStdDev(a, ma, sa);
  cv::meanStdDev(b, mb, sb);
  cv::Mat da = a - ma[0], db = b - mb[0];
  double num = da.dot(db);
  double den = std::sqrt(da.dot(da) * db.dot(db));
  return den > 0 ? num / den : (num == 0 ? 1.0 : 0.0);
}

inline double max_abs_diff(const cv::Mat& a, const cv::Mat& b) { return cv::norm(a, b, cv::NORM_INF); }

// A test's scratch folder, removed when the test process exits (so that runs of the suite do not pile
// up folders in /tmp); LUMEN_KEEP_TEST_DIRS=1 keeps them to look at after a failure.
inline std::string temp_dir(const std::string& name) {
  struct Made {
    std::vector<std::filesystem::path> dirs;
    ~Made() {
      if (std::getenv("LUMEN_KEEP_TEST_DIRS")) return;
      std::error_code ignored;
      for (const auto& d : dirs) std::filesystem::remove_all(d, ignored);
    }
  };
  static Made made;
  auto dir = std::filesystem::temp_directory_path() / ("lumen-test-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  made.dirs.push_back(dir);
  return dir.string();
}

}  // namespace lumen::test
