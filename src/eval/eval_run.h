// Internal: the pieces of a dataset run (src/eval/dataset_run.cpp): the records file that makes it
// resumable, the sanity cascade, and the summary table.
#pragma once

#include <lumen/evaluate.h>

#include <fstream>
#include <functional>
#include <map>
#include <optional>
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

// The explanation options every method of the run shares; each request adds its method and targets.
ExplainOptions base_options(const DatasetRun& run);
// One method of the run, explaining each image for its label (the ground-truth class), one target.
ExplainOptions for_method(const ExplainOptions& base, const std::string& method, const std::vector<int64_t>& labels);

// How the report orders each method's examples: by the first metric of the run that scores an image
// (in eval_metrics() order), read from its record; `higher` says which way is better. None for a run
// of sanity checks alone.
struct ExampleRanking {
  std::string title;  // "IoU of the paper's box", "insertion - deletion", ...
  std::function<double(const nlohmann::json&)> value;
  bool higher = true;
};
std::optional<ExampleRanking> example_ranking(const EvalOptions& eval);

// What a run knows so far, from earlier records and new ones alike (and, in `lumen merge`, from every
// shard's records in shard order). Per method: the images done, the table's counts and sums, and the
// score that picks the report's examples. The records themselves stay on disk, so memory stays flat.
class EvalTally {
 public:
  explicit EvalTally(const DatasetRun& run);
  void take(const nlohmann::json& record);  // a record of a method not in the run is ignored
  bool has(const std::string& method, const std::string& image) const;
  size_t images_done() const;               // image x method pairs
  const std::set<std::string>& sanity_done() const { return sanity_done_; }
  // The summary, the table and the examples' scores over `images` images.
  void finish(EvalResult& result, const EvalOptions& options, size_t images);

 private:
  std::vector<std::string> methods_;
  std::map<std::string, std::set<std::string>> done_;
  std::map<std::string, Summary> summaries_;
  std::vector<nlohmann::json> sanity_;  // a few per method and cascade step
  std::set<std::string> sanity_done_;
  std::optional<ExampleRanking> ranking_;
  std::map<std::string, std::map<std::string, double>> example_scores_;
};

// Reads a records file without locking or changing it: its configuration line, then each record (a
// line cut short by a killed run is skipped). Throws lumen::Error for a file that is not one.
nlohmann::json read_records(const std::string& path, const std::function<void(const nlohmann::json&)>& each);

struct Table {
  std::string markdown, csv, notes;
};
Table summary_table(const nlohmann::json& summary, const std::vector<std::string>& methods, const EvalOptions& options, size_t images);

}  // namespace lumen::detail
