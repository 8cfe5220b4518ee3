// Internal: what a map method is. A method says only what makes it different — which tensors it needs
// and the arithmetic that turns them into maps. Capture, targets, batching, extra passes, upsampling,
// normalisation and output are shared (src/explain).
#pragma once

#include <lumen/explain.h>
#include <lumen/model.h>

#include <nlohmann/json.hpp>
#include <torch/script.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace lumen::detail {

struct LayerTensors {
  torch::Tensor activations;  // A, [N,C,h,w]
  torch::Tensor gradients;    // G = d y / d A (plain rule), [N,C,h,w]; undefined if no method needs it
};

// A layer with a bias (Conv2d, BatchNorm2d) for FullGrad: its output's gradient and its effective bias.
struct BiasTensors {
  std::string path;
  torch::Tensor gradients;  // d y / d output, [N,C,h,w]
  torch::Tensor bias;       // [C]; for batch norm beta - mean * gamma / sqrt(var + eps)
};

// What the planner computed for one target, and a way to ask for more passes.
struct Evidence {
  torch::Tensor input;                                     // x, [N,C,H,W] (model input space)
  torch::Tensor target_values;                             // y, [N]
  std::vector<LayerTensors> layers;                        // one per requested layer
  std::map<BackwardRule, torch::Tensor> input_gradients;   // d y / d x per rule, [N,C,H,W]
  std::vector<BiasTensors> biases;                         // every bias layer, if a method asked
  // A reference input of the given kind ("black", "blur", "noise", a pixel value "0".."255", an image
  // path) for the whole batch, [N,C,H,W] in model-input space.
  std::function<torch::Tensor(const std::string& kind)> reference;
  // d y / d x at other inputs, all rows belonging to image `image` (batched by the planner).
  std::function<torch::Tensor(const torch::Tensor& x, int64_t image, BackwardRule rule)> gradient;
  // y at other inputs of image `image`, without gradients (batched by the planner).
  std::function<torch::Tensor(const torch::Tensor& x, int64_t image)> score;
  // y when the network runs on from requested layer `layer` with `activations` ([M,C,h,w]) of image
  // `image` in place of the layer's output; nothing before the layer is recomputed.
  std::function<torch::Tensor(size_t layer, const torch::Tensor& activations, int64_t image)> score_from_layer;
  // Progress of long methods (may be empty).
  std::function<void(const std::string& what, int64_t done, int64_t total)> progress;
  const MethodOptions* options = nullptr;
  const Target* target = nullptr;   // what y is (classes, score, sign)
  const Model* model = nullptr;     // for methods that read the model's weights (CAM)
};

struct Result {
  Result() = default;
  explicit Result(torch::Tensor m, torch::Tensor attr = {}) : maps(std::move(m)), attribution(std::move(attr)) {}
  static Result cam(torch::Tensor weighted_activations) {
    Result r;
    r.weighted = std::move(weighted_activations);
    return r;
  }
  torch::Tensor maps;          // [N,h,w]: raw, as the method's formula gives it
  torch::Tensor attribution;   // optional, [N,C,H,W]: per-channel attribution in input space
  // CAM methods whose map is ReLU(sum_k E_k) give the per-channel evidence E [N,C,h,w] instead of a map;
  // the planner sums it, or (--eigen-smooth) projects it on its first principal component.
  torch::Tensor weighted;
  bool is_signed = false;      // the sign of the map means something (drawn around grey)
  std::vector<nlohmann::json> extra;  // optional, per image: method-specific facts for run.json
};

struct Needs {
  bool layer_gradients = false;                 // plain d y / d A at the requested layers
  std::vector<BackwardRule> input_gradients;    // d y / d x under these rules
  bool bias_gradients = false;                  // d y / d output of every bias layer (FullGrad)
};

// What a method runs beyond the shared forward: its batch size is chosen from the memory one row of
// such a pass takes.
enum class ExtraPasses { None, Forward, Gradient };

struct Method {
  std::string name;
  std::string paper;
  Needs needs;
  ExtraPasses extra_passes = ExtraPasses::None;
  bool per_layer = true;  // one map per requested layer; false: one map in input space
  bool weighted = false;  // returns Result::cam (so --eigen-smooth applies)
  std::function<Result(const Evidence&, size_t layer)> compute;
};

// One factory per method file.
Method gradcam();
Method saliency();
Method input_x_gradient();
Method guided_backprop();
Method deconvnet();
Method guided_gradcam();
Method smoothgrad();
Method integrated_gradients();
Method gradcam_plus_plus();
Method hirescam();
Method xgradcam();
Method layercam();
Method gradcam_elementwise();
Method eigencam();
Method eigengradcam();
Method scorecam();
Method ablationcam();
Method occlusion();
Method rise();
Method fullgrad();
Method cam();

const std::vector<Method>& methods();
const Method& find_method(const std::string& name);  // throws lumen::Error listing the known names

// FullGrad's bias layers: module path and the bias each adds per channel. Throws when there are none.
std::vector<std::pair<std::string, torch::Tensor>> bias_layers(const Model& model);

// Shared arithmetic.
torch::Tensor gradcam_maps(const LayerTensors& t);                           // [N,h,w]
torch::Tensor max_abs_over_channels(const torch::Tensor& attribution);      // [N,C,H,W] -> [N,H,W]
// Runs `fn` over `rows` in chunks of at most `batch` rows and concatenates the results.
torch::Tensor in_chunks(const torch::Tensor& rows, int batch, const std::function<torch::Tensor(const torch::Tensor&)>& fn);

}  // namespace lumen::detail
