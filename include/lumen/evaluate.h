// lumen: measuring explanations over a dataset — what `lumen eval` computes per image and how the
// per-image records become the table (docs/evaluation.md).
#pragma once

#include <lumen/dataset.h>
#include <lumen/explain.h>
#include <lumen/metrics.h>

#include <nlohmann/json.hpp>

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

// The table row of one method from its records (and, if given, its sanity-check records).
nlohmann::json summarize(const std::vector<nlohmann::json>& records, const std::vector<nlohmann::json>& sanity,
                         const EvalOptions& options);

}  // namespace lumen
