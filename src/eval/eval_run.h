// Internal: the pieces of a dataset run (src/eval/dataset_run.cpp): the records file that makes it
// resumable, the sanity cascade, and the summary table.
#pragma once

#include <lumen/evaluate.h>

#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace lumen::detail {

// OUT/records.jsonl: a configuration line, then one JSON record per line, appended and flushed as they
// are measured.
class RecordsFile {
 public:
  // With `fresh` or no file: a new file that starts with `config`. Otherwise the earlier run's records
  // are handed to `earlier` one by one (a line cut short by a killed run is skipped); a file whose
  // configuration differs is refused.
  // The file is locked (path + ".lock", flock) while this object lives: a second run into the same
  // folder is refused, naming the process that holds it.
  RecordsFile(const std::string& path, const nlohmann::json& config, bool fresh, const std::function<void(const nlohmann::json&)>& earlier);
  ~RecordsFile();
  RecordsFile(const RecordsFile&) = delete;
  RecordsFile& operator=(const RecordsFile&) = delete;
  void append(const nlohmann::json& record);
  size_t count() const { return count_; }  // records in the file, earlier ones included

 private:
  std::string path_;
  std::ofstream out_;
  int lock_ = -1;
  size_t count_ = 0;
};

// The sanity cascade (Adebayo et al. 2018) on the first images: the parameterised blocks are randomised
// cumulatively from the output back, and each step's maps are compared with the trained model's.
// Steps already in `done` ("method\nstep\nimage") are skipped; new records go to `append`.
void sanity_cascade(const Explainer& explainer, const Dataset& data, const DatasetRun& run, const ExplainOptions& base,
                    const std::set<std::string>& done, const std::function<void(const nlohmann::json&)>& append);
std::string sanity_key(const nlohmann::json& record);

struct Table {
  std::string markdown, csv, notes;
};
Table summary_table(const nlohmann::json& summary, const std::vector<std::string>& methods, const EvalOptions& options, size_t images);

}  // namespace lumen::detail
