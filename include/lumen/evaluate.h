// lumen: measuring explanations over a dataset — what `lumen eval` computes per image, the resumable
// run over a dataset folder, the sanity cascade, and how the per-image records become the table and
// the report (docs/evaluation.md).
#pragma once

#include <lumen/dataset.h>
#include <lumen/explain.h>
#include <lumen/metrics.h>
#include <lumen/settings.h>
#include <lumen/shard.h>

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

struct EvalOptions {
  std::vector<std::string> metrics{"loc", "pointing", "deletion", "insertion", "drop"};  // + "sanity"
  float box_threshold = 0.15f;      // the paper's box: 15% of the map's max
  double pointing_tolerance = 15;   // pixels of the stored image
  int steps = 50;                   // deletion/insertion: the curve has steps + 1 points
  int curve_batch = 16;             // inputs per forward pass for curves and drop
  double insertion_blur_sigma = 5;  // insertion's blurred start, sigma in model-input pixels (RISE's)
  double road_noise = 0.01;         // ROAD's imputation noise (model-input units, pytorch-grad-cam's)
  double infidelity_noise = 0.1;    // infidelity's perturbation sigma (model-input units)
  int infidelity_samples = 10;      // perturbations per image (Captum's n_perturb_samples)
  double sensitivity_radius = 0.02; // sensitivity-max's uniform perturbation radius (model-input units, Captum's)
  int sensitivity_samples = 10;     // perturbations per image, each explained again (Captum's n_perturb_samples)
  bool has(const std::string& m) const;
  // Whether some metric runs the model on altered inputs (deletion, insertion, drop, road).
  bool runs_model() const;
};

// Every metric of one image for one method, from the map of the image's ground-truth class. `x` is the
// model input of the image ([C,H,W]). The record is JSON so that runs can be resumed from disk.
nlohmann::json measure_image(const Model& model, const Preprocess& pre, const Sample& sample, const ImageExplanation& explained,
                             const Map& map, const torch::Tensor& x, const EvalOptions& options);

// One method's table row, built as its records arrive. It keeps counts and sums, not the records (each
// carries 400 per-threshold IoUs), so a 10,000-image run holds no more memory at the end than at the start.
class Summary {
 public:
  explicit Summary(EvalOptions options);
  void add(const nlohmann::json& record);
  void add_sanity(const nlohmann::json& record);
  nlohmann::json result() const;

 private:
  struct Mean {
    double sum = 0;
    int64_t n = 0;
  };
  EvalOptions options_;
  int64_t images_ = 0;
  std::map<std::string, int64_t> counts_;  // records where the key is true
  std::map<std::string, Mean> means_;      // over records where the key is a number
  metrics::MaxBoxAcc v1_, v2_;
  struct Curve {
    std::vector<double> sum, sq;
    int64_t n = 0;
  };
  std::map<std::string, Curve> curves_;   // deletion/insertion: per-step sums over images
  struct Class {
    int64_t images = 0, correct = 0, loc = 0, pointing = 0;
  };
  std::map<int64_t, Class> per_class_;
  std::vector<nlohmann::json> sanity_;  // a few per cascade step
};

// A dataset run: what `lumen eval` does.
struct DatasetRun {
  std::vector<std::string> methods{"gradcam"};
  std::vector<std::string> layers;  // CAM methods' layers; several need `aggregate` (one map per image is scored)
  std::string aggregate;
  EvalOptions eval;
  int batch = 8;                    // images per explanation pass
  bool overlap = true;              // decode the next batch while this one is explained
  int sanity_images = 8;            // the sanity cascade runs on the first N images
  uint64_t seed = 0;                // of random methods; the cascade randomises with seed + 1
  SharedSettings shared;            // rows per pass, memory budget
  bool fresh = false;               // start over instead of resuming from OUT/records.jsonl
  // What the records are tied to, beside the above: a resumed run must name the same files.
  std::string model_file, card_file;
  int limit = 0;                    // the dataset was cut to its first `limit` images (0: all)
  Shard shard;                      // this process measures only this block of the images (lumen/shard.h);
                                    // the sanity cascade runs in shard 0, on the dataset's first images
  Progress progress;                // "eval" (image x method pairs) and "sanity" (cascade steps)
  std::function<void(const std::string&)> note;  // one-line notes, such as how much was resumed
};

struct EvalResult {
  std::vector<std::string> methods;
  nlohmann::json config;            // the first line of records.jsonl
  nlohmann::json summary;           // per method: its table row
  std::string table, csv, notes;    // the table (Markdown, CSV) and what its columns mean
  // Per method and image: the score that picks the report's best and worst examples (IoU of the
  // paper's box, else insertion - deletion).
  std::map<std::string, std::map<std::string, double>> example_scores;
  size_t pairs = 0;                 // image x method pairs
  size_t resumed = 0;               // of them, read back from an earlier run's records
  double seconds = 0;
};

// Every metric of every method over `data`. Each image's record is appended to OUT/records.jsonl as it
// is measured, so that a killed run resumes where it stopped; a records file of a different run is
// refused. Memory stays flat: the records stay on disk, the summary keeps counts and sums.
// The metrics evaluate_dataset knows, in the order the help lists them.
const std::vector<std::string>& eval_metrics();

EvalResult evaluate_dataset(const Explainer& explainer, const Dataset& data, const DatasetRun& run, const std::string& out_dir);
// OUT/results.json, results.csv, table.md and index.html (the best and worst examples of each method,
// explained again and drawn with their boxes), each written atomically.
void write_eval_report(const Explainer& explainer, const Dataset& data, const DatasetRun& run, const EvalResult& result,
                       const std::string& out_dir);

}  // namespace lumen
#pragma GCC visibility pop
