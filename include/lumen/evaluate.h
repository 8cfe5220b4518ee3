// lumen: measuring explanations over a dataset — what `lumen eval` computes per image and how the
// per-image records become the table (docs/evaluation.md).
#pragma once

#include <lumen/dataset.h>
#include <lumen/explain.h>
#include <lumen/metrics.h>

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace lumen {

struct EvalOptions {
  std::vector<std::string> metrics{"loc", "pointing", "deletion", "insertion", "drop"};  // + "sanity"
  float box_threshold = 0.15f;      // the paper's box: 15% of the map's max
  double pointing_tolerance = 15;   // pixels of the stored image
  int steps = 50;                   // deletion/insertion: the curve has steps + 1 points
  int curve_batch = 16;             // inputs per forward pass for curves and drop
  double insertion_blur_sigma = 5;  // insertion's blurred start, sigma in model-input pixels (RISE's)
  bool has(const std::string& m) const;
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
  std::vector<nlohmann::json> sanity_;  // a few per cascade step
};

// The table row of one method from its records (and, if given, its sanity-check records).
nlohmann::json summarize(const std::vector<nlohmann::json>& records, const std::vector<nlohmann::json>& sanity,
                         const EvalOptions& options);

}  // namespace lumen
