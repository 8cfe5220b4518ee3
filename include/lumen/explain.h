// lumen: explanations. `Explainer::explain` runs one forward pass for a batch of images, one backward
// pass per target down to the requested layers only, and hands the captured activations and gradients
// to each requested method (src/explain/pipeline.h shows the stages). Maps come back as float matrices
// with their metadata (map.h); pictures and files are made from them (output.h).
#pragma once

#include <lumen/image.h>
#include <lumen/layout.h>
#include <lumen/map.h>
#include <lumen/methods.h>
#include <lumen/model.h>
#include <lumen/settings.h>
#include <lumen/target.h>

#include <opencv2/core.hpp>

#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

struct ExplainOptions {
  std::vector<std::string> methods{"gradcam"};  // names from method_names()
  std::vector<std::string> layers;              // module paths; at least one when a method works at a layer
  // How the layers' outputs lie in space: read from their shapes (layout.h) unless given here.
  TokenHint tokens;
  // Which targets: explicit classes (each explained for every image), else the top-k predictions.
  std::vector<int64_t> classes;
  int top_k = 1;
  Score score = Score::Logit;
  bool counterfactual = false;
  OutputSelector select;                     // default: lumen::default_logits
  // API only: fully custom targets (per-image classes, other heads). When set, replaces the above.
  std::vector<Target> targets;
  // API only: targets read from each batch's own output (`images` rows), e.g. one per box a detector
  // found (detection_targets). When set, replaces all of the above; it may give none.
  std::function<std::vector<Target>(const torch::IValue& output, int64_t images)> targets_from_output;
  // Fraction of the map's maximum used for the paper's box (largest connected region above it).
  float box_threshold = 0.15f;
  // Whether every map gets its paper's box (Map::box). A caller that writes or reads no box (`lumen
  // bench`) turns it off and pays nothing for it; the maps themselves do not change.
  bool boxes = true;
  // Multi-layer aggregation (Shimoda & Yanai 2016): with several layers, each method's per-layer maps
  // are upsampled to the image, min-max normalised and combined into one more map whose layer is
  // "a+b+c": "mean", "max", "product" or "weighted" (by layer_weights, normalised to sum 1). Empty: off.
  std::string aggregate;
  std::vector<float> layer_weights;
  // Class-difference maps (Shimoda & Yanai): for each target c, one more map
  // sum over the other targets c' of max(M_c - M_c', 0), from the raw maps of the same method and layer.
  bool contrast = false;
  SharedSettings shared;   // compat, rows per pass, memory, backward rules, aug-smooth, progress
  Settings settings;       // settings of particular methods, by name (setting_catalog())
};

namespace detail {
class ReferenceCache;
}

class Explainer {
 public:
  // The explainer keeps its own handle on the model (a Model is a shared handle; copying it is cheap).
  Explainer(Model model, Preprocess preprocess, std::vector<std::string> labels = {});
  std::vector<ImageExplanation> explain(const std::vector<cv::Mat>& images, const ExplainOptions& options,
                                        const std::vector<std::string>& sources = {}) const;
  // For callers with their own preprocessing: `batch` is the model input [N,3,H,W]; maps are upsampled
  // to `sizes[i]` (width, height of the image each row came from; default: the input size). A 3-D
  // network's batch [N,C,D,H,W] (video clips, CT/MRI volumes) gives volume maps at the input's size
  // (Map::depth), from the methods that take volumes (method_takes_volumes).
  std::vector<ImageExplanation> explain_tensor(const torch::Tensor& batch, const ExplainOptions& options,
                                               const std::vector<cv::Size>& sizes = {},
                                               const std::vector<std::string>& sources = {}) const;

  // The model's output for `images` (preprocessed as explain does), as [N, D] float: an embedding
  // model's vectors, e.g. the references of similarity_target. `select` picks the output (default: the
  // output tensor); further dimensions are flattened into D.
  torch::Tensor embed(const std::vector<cv::Mat>& images, const OutputSelector& select = {}) const;

  const Model& model() const { return model_; }
  const Preprocess& preprocess() const { return preprocess_; }
  const std::vector<std::string>& labels() const { return labels_; }

 private:
  std::vector<ImageExplanation> explain_groups(const std::vector<std::pair<int64_t, int64_t>>& groups, const torch::Tensor& batch,
                                               const ExplainOptions& options, const std::vector<cv::Size>& sizes,
                                               const std::vector<std::string>& sources) const;
  Model model_;
  Preprocess preprocess_;
  std::vector<std::string> labels_;
  // DeepLIFT's fixed references (black, a value), whose forward does not change from call to call;
  // shared by copies of this explainer.
  std::shared_ptr<detail::ReferenceCache> references_;
};

// Everything about `options` that can be refused without a model or an image: no method, an unknown
// method or setting, a bad setting value, an unknown aggregation, too few targets to contrast. The
// explainer calls it first; the CLI calls it before it loads anything. Throws lumen::Error.
void check_request(const ExplainOptions& options);

// The request's settings as run.json records them: every method setting, compat, aug_smooth,
// nonlinearity.
nlohmann::json settings_json(const ExplainOptions& options);

}  // namespace lumen
#pragma GCC visibility pop
