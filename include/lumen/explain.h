// lumen: explanations as data. `Explainer::explain` runs one forward pass for a batch of images, one
// backward pass per target down to the requested layers only, and hands the captured activations and
// gradients to each requested method. Maps come back as float matrices with their metadata; pictures
// and files are made from them (output.h).
#pragma once

#include <lumen/image.h>
#include <lumen/model.h>
#include <lumen/target.h>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <functional>
#include <string>
#include <vector>

namespace lumen {

// Whose formulas: the papers' (default), or pytorch-grad-cam's pipeline reproduced for people who
// move from it (docs/methods.md lists every difference).
enum class Compat { Papers, PytorchGradCam };

// Settings of particular methods; each method reads only its own.
struct MethodOptions {
  Compat compat = Compat::Papers;
  // CAM methods whose map is a channel sum: project the weighted activations on their first principal
  // component instead (pytorch-grad-cam's eigen_smooth).
  bool eigen_smooth = false;
  // Test-time augmentation: every map is averaged over the horizontal flip x input scaled by
  // 0.9 / 1 / 1.1 (pytorch-grad-cam's aug_smooth), mapped back to the original orientation.
  bool aug_smooth = false;
  // Rows per extra pass (SmoothGrad samples, IG steps, masks, ...). Small batches were faster here:
  // SmoothGrad on MobileNetV2 took 5.7 s at 4, 6.2 s at 8 and 8.3 s at 32 rows (and 4x the memory).
  // 0: 8, or fewer when 8 rows of the pass would not fit `memory_budget_mib` (the maps say how many
  // were used, as "rows_per_pass").
  int batch_size = 0;
  // Memory one extra pass may take, in MiB; 0: a quarter of what the system has available.
  int64_t memory_budget_mib = 0;
  // guided-backprop / deconvnet: an activation with no rule (SiLU, GELU, ...) is an error naming its
  // layer; false keeps its ordinary gradient (CLI --nonlinearity plain).
  bool strict_nonlinearities = true;
  // smoothgrad
  int samples = 50;
  float noise = 0.15f;                 // sigma as a fraction of the input's range (max - min)
  std::string smooth_base = "saliency";  // saliency | guided-backprop | deconvnet | input-x-gradient
  uint64_t seed = 0;
  // integrated-gradients
  int steps = 50;
  std::string integration = "gauss-legendre";  // gauss-legendre | trapezoid
  std::string baseline = "black";      // black | blur | noise | path of an image
  float blur_sigma = 0.05f;            // blur baseline: Gaussian sigma as a fraction of the input width
  // occlusion
  int patch = 32, stride = 16;         // input pixels
  std::string fill = "0";              // pixel value 0..255 (before normalisation), or "blur"
  // rise
  int masks = 2000, cells = 7;
  float keep = 0.5f;                   // probability that a cell is kept
  // cam: module path of the linear classifier after global average pooling (default: found)
  std::string classifier;
  // long methods report here (may be empty): what, done, total
  std::function<void(const std::string&, int64_t, int64_t)> progress;
};

struct ExplainOptions {
  std::vector<std::string> methods{"gradcam"};
  std::vector<std::string> layers;          // at least one; module paths
  // Which targets: explicit classes (each explained for every image), else the top-k predictions.
  std::vector<int64_t> classes;
  int top_k = 1;
  Score score = Score::Logit;
  bool counterfactual = false;
  OutputSelector select;                     // default: lumen::default_logits
  // API only: fully custom targets (per-image classes, other heads). When set, replaces the above.
  std::vector<Target> targets;
  // Fraction of the map's maximum used for the paper's box (largest connected region above it).
  float box_threshold = 0.15f;
  // Multi-layer aggregation (Shimoda & Yanai 2016): with several layers, each method's per-layer maps
  // are upsampled to the image, min-max normalised and combined into one more map whose layer is
  // "a+b+c": "mean", "max", "product" or "weighted" (by layer_weights, normalised to sum 1). Empty: off.
  std::string aggregate;
  std::vector<float> layer_weights;
  // Class-difference maps (Shimoda & Yanai): for each target c, one more map
  // sum over the other targets c' of max(M_c - M_c', 0), from the raw maps of the same method and layer.
  bool contrast = false;
  MethodOptions method;
};

struct Box {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;       // pixels of the original image; x1, y1 exclusive
  bool valid = false;
  int width() const { return x1 - x0; }
  int height() const { return y1 - y0; }
};

struct MapStats {
  float min = 0, max = 0, mean = 0;          // of the raw map
  int peak_x = 0, peak_y = 0;                // argmax of the upsampled map, original image pixels
};

struct Map {
  std::string method, layer, target;   // layer is "input" for pixel-space methods
  int64_t cls = -1;                          // -1 for custom targets
  std::string label;
  bool counterfactual = false;
  bool contrastive = false;                  // a class-difference map (ExplainOptions::contrast)
  float target_value = 0;                    // y for this image
  cv::Mat raw;         // CV_32F, layer resolution, exactly as the method's formula gives it
  cv::Mat upsampled;   // CV_32F, original image size, bilinear (half-pixel centres) from raw
  cv::Mat normalized;  // CV_32F in [0,1]: (upsampled - min) / (max - min); all zero when empty
  MapStats stats;
  Box box;
  bool empty = false;  // the map is constant (e.g. all-zero gradient): nothing to show
  bool is_signed = false;  // the map's sign means something (pictures centre it on grey)
  cv::Mat attribution;     // pixel methods: CV_32FC3 per-channel attribution at the model's input size
  nlohmann::json extra = nlohmann::json::object();  // method-specific facts (IG completeness gap, ...)
};

struct Prediction {
  int64_t cls = 0;
  std::string label;
  float logit = 0, probability = 0;
};

struct ImageExplanation {
  std::string source;                        // file name or caller's tag
  int width = 0, height = 0;                 // original image size
  std::vector<Prediction> top;               // top-5 (fewer if the model has fewer classes)
  std::vector<Map> maps;
};

class Explainer {
 public:
  Explainer(const Model& model, Preprocess preprocess, std::vector<std::string> labels = {});
  std::vector<ImageExplanation> explain(const std::vector<cv::Mat>& images, const ExplainOptions& options,
                                        const std::vector<std::string>& sources = {}) const;
  // For callers with their own preprocessing: `batch` is the model input [N,3,H,W]; maps are upsampled
  // to `sizes[i]` (width, height of the image each row came from; default: the input size).
  std::vector<ImageExplanation> explain_tensor(const torch::Tensor& batch, const ExplainOptions& options,
                                               const std::vector<cv::Size>& sizes = {},
                                               const std::vector<std::string>& sources = {}) const;

  const Model& model() const { return model_; }
  const Preprocess& preprocess() const { return preprocess_; }
  const std::vector<std::string>& labels() const { return labels_; }

 private:
  // One explanation of `batch`; `targets_used` (if given) receives the resolved targets, so that
  // augmented copies (aug_smooth) explain the same classes.
  std::vector<ImageExplanation> run(const torch::Tensor& batch, const ExplainOptions& options, const std::vector<cv::Size>& sizes,
                                    const std::vector<std::string>& sources, std::vector<Target>* targets_used) const;
  const Model& model_;
  Preprocess preprocess_;
  std::vector<std::string> labels_;
};

// A reference input for `x` ([N,C,H,W], model-input space): "black", a pixel value "0".."255",
// "noise" (seeded by o.seed), "blur" (Gaussian, sigma o.blur_sigma x width), or an image path.
torch::Tensor reference_input(const torch::Tensor& x, const std::string& kind, const MethodOptions& o, const Preprocess& p);

// Names accepted in ExplainOptions::methods.
std::vector<std::string> method_names();

// The paper's box: threshold `map` (any size, CV_32F) at `fraction` of its maximum, take the largest
// 8-connected region, return its bounding box. Invalid when the map has no positive maximum.
Box threshold_box(const cv::Mat& map, float fraction);

}  // namespace lumen
