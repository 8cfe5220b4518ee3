// Benchmarks print ratios measured in the same run: this reporter keeps each run's real time by name.
#pragma once

#include <benchmark/benchmark.h>

#include <map>
#include <string>

namespace lumen::bench {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs)
      if (r.run_type == Run::RT_Iteration && !r.error_occurred) seconds[r.benchmark_name()] = r.GetAdjustedRealTime();
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> seconds;  // in each benchmark's own time unit
};

}  // namespace lumen::bench
