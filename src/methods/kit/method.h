// Internal: what a map method is. A method file (src/methods/<name>.cpp, one per method) says only what
// makes it different, once, beside its formula: what the shared passes must give it (Needs), what it
// runs beyond them (ExtraPasses), which settings it takes (Param), and the arithmetic that turns the
// evidence into maps (compute). The registry finds it by its file name; capture, targets, batching,
// extra passes, upsampling, normalisation, output, flags, run.json and validation are shared.
//
// This header is below the engine: it knows models, targets and settings, never the explainer.
#pragma once

#include <lumen/image.h>
#include <lumen/layout.h>
#include <lumen/model.h>
#include <lumen/settings.h>
#include <lumen/target.h>

#include <nlohmann/json.hpp>
#include <torch/script.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lumen::detail {

enum class Family { Cam, Attention, Perturbation, Pixel };  // catalogue order

// A setting a method takes. Its name is the key in lumen::Settings and run.json; the flag is --name
// with '-' for '_'. Values are checked against the declaration before any forward pass.
struct Param {
  enum class Kind { Integer, Number, Text, Choice, Flag };
  std::string name;
  Kind kind = Kind::Integer;
  nlohmann::json fallback;
  std::string help;
  double min = -1e300, max = 1e300;   // Integer, Number: inclusive bounds
  bool above_min = false;             // Number: min itself is excluded
  bool single_precision = false;      // Number: the value is a float (rounded when set)
  std::vector<std::string> choices;   // Choice
  // Text settings whose valid values are only known with the registry (a method name): a check that
  // throws lumen::Error naming the problem.
  std::function<void(const std::string& value)> check;
};
Param integer(std::string name, int64_t fallback, int64_t min, int64_t max, std::string help);
Param number(std::string name, double fallback, double min, double max, std::string help);   // double
Param number32(std::string name, float fallback, double min, double max, std::string help);  // float
Param text(std::string name, std::string fallback, std::string help);
Param choice(std::string name, std::string fallback, std::vector<std::string> choices, std::string help);
Param flag(std::string name, std::string help);
std::string flag_of(const std::string& setting);   // "smooth_base" -> "--smooth-base"
// Settings several methods share, declared once so that they are alike wherever they appear.
Param seed_param();        // "seed": of the method's random numbers
Param blur_sigma_param();  // "blur_sigma": the "blur" reference input's sigma, as a share of the width
// A reference input (lumen::reference_input): black, blur, noise, a pixel value 0-255 or an image path.
Param reference_param(std::string name, std::string fallback, std::string help);
Param baseline_param();  // "baseline": the reference of path and Shapley methods (IG, DeepLIFT, SHAP, ablation)
Param samples_param();   // "samples": how many random draws a sampling method averages or fits
Param patch_param();     // "patch": the side of a square in input pixels (occlusion, feature groups)

struct LayerTensors {
  torch::Tensor activations;  // A, [N,C,h,w]
  torch::Tensor gradients;    // G = d y / d A (plain rule), [N,C,h,w]; undefined if no method needs it
  int64_t depth = 0;          // a volume's layer: its d slices, stacked in the tensors' h (d*h rows); else 0
};

struct Result {
  Result() = default;
  explicit Result(torch::Tensor m, torch::Tensor attr = {}) : maps(std::move(m)), attribution(std::move(attr)) {}
  torch::Tensor maps;          // [N,h,w]: raw, as the method's formula gives it
  torch::Tensor attribution;   // optional, [N,C,H,W]: per-channel attribution in input space
  bool is_signed = false;      // the sign of the map means something (drawn around grey)
  std::vector<nlohmann::json> extra;  // optional, per image: method-specific facts for run.json
  // Optional, for methods that decompose the layer into parts (DFF's concepts): each part's raw map,
  // [N,k,h,w], and the class scores the network gives each part, [N,k,classes] (undefined when the
  // output has no class scores). `maps` is then the part that speaks most for the target.
  torch::Tensor parts, part_scores;
};

// A transformer's self-attention, block by block in the order the blocks ran (Needs::attention).
struct AttentionTensors {
  std::vector<torch::Tensor> maps;       // A: the softmax's probabilities, [N,heads,T,T]
  std::vector<torch::Tensor> gradients;  // d y / d A, [N,heads,T,T]; empty unless asked for
  std::vector<std::string> scopes;       // the module each map came from
  TokenLayout tokens;                    // where the T tokens lie: `prefix` tokens (the class token first), then the grid
};

struct Method;

// The passes a method may ask for beyond the shared ones; the engine implements them, batched by rows
// per pass, on image `image` of the batch (its target, its row of the input).
class Passes {
 public:
  virtual ~Passes() = default;
  // d y / d x at other inputs `rows` ([M,C,H,W]) of image `image`, under a backward rule.
  virtual torch::Tensor gradient(const torch::Tensor& rows, int64_t image, BackwardRule rule) const = 0;
  // DeepLIFT's multipliers: d y / d x at `rows` of image `image` under the rescale rule, each row
  // against the reference row of `references` beside it (both [M,C,H,W]); and y at the references,
  // which the same forward computed. `image` -1: the rows are the batch's own images, row i image i,
  // so that every image's pair shares the passes.
  struct Rescaled {
    torch::Tensor gradient, reference_scores;
  };
  virtual Rescaled rescale_gradient(const torch::Tensor& rows, const torch::Tensor& references, int64_t image) const = 0;
  // The same at requested layer `layer` (Captum's LayerDeepLift): the layer's activations at the rows
  // and at their references, and d y / d A at the rows under the rescale rule ([M,C,h,w] each, as the
  // methods see the layer); and y at the references.
  struct RescaledLayer {
    torch::Tensor activations, reference_activations, gradient, reference_scores;
  };
  virtual RescaledLayer rescale_layer_at(const torch::Tensor& rows, const torch::Tensor& references, int64_t image, size_t layer) const = 0;
  // Requested layer `layer`'s activations A and d y / d A at other inputs `rows` of image `image`
  // ([M,C,h,w] each, as the methods see the layer; Captum's layer methods).
  virtual LayerTensors layer_at(const torch::Tensor& rows, int64_t image, size_t layer) const = 0;
  // y at other inputs of image `image`, without gradients.
  virtual torch::Tensor score(const torch::Tensor& rows, int64_t image) const = 0;
  // y when the network runs on from requested layer `layer` with `activations` ([M,C,h,w]) of image
  // `image` in place of the layer's output; nothing before the layer is recomputed.
  virtual torch::Tensor score_from_layer(size_t layer, const torch::Tensor& activations, int64_t image) const = 0;
  // The same run giving y and its class scores, [M,classes], where the target reads them (`classes`
  // undefined when the output has none, e.g. a custom target on a caption).
  struct LayerScores {
    torch::Tensor target, classes;
  };
  virtual LayerScores scores_from_layer(size_t layer, const torch::Tensor& activations, int64_t image) const = 0;
  // Another method's result on `rows` (all of image `image`), each row its own input (wrappers).
  virtual Result run(const Method& method, const torch::Tensor& rows, int64_t image) const = 0;
  // Another method's result on this batch under another target (wrappers that change what is
  // explained: FinerCAM), at requested layer `layer`: a forward and backward of its own.
  virtual Result run_for(const Method& method, const Target& target, size_t layer) const = 0;
  // H A: the Hessian of y with respect to requested layer `layer`'s activations A, times A itself
  // ([N,C,h,w], as the methods see the layer), from a second backward through the network above the
  // layer (ShapleyCAM). Zero where y is piecewise linear in A.
  virtual torch::Tensor hessian_times_activations(size_t layer) const = 0;
  // A reference input for the whole batch ([N,C,H,W], model-input space): lumen::reference_input.
  virtual torch::Tensor reference(const std::string& kind, uint64_t seed, double blur_sigma) const = 0;
  // The batch as the image's pixels at the model's input size: the preprocessing (mean, std, colour
  // order) undone, [N,3,H,W] RGB in 0-255 (for methods that read the picture, not the model).
  virtual torch::Tensor pixels() const = 0;
  virtual int rows_per_pass() const = 0;
  virtual void progress(const std::string& what, int64_t done, int64_t total) const = 0;
};

// What the shared passes computed for one target.
struct Evidence {
  torch::Tensor input;                                     // x, [N,C,H,W] (model input space); volumes [N,C,D,H,W]
  torch::Tensor target_values;                             // y, [N]
  std::vector<LayerTensors> layers;                        // one per requested layer
  std::vector<LayerTensors> model_layers;                  // the layers the method's needs named (Needs::model_layers)
  std::vector<std::string> model_layer_paths;
  std::map<BackwardRule, torch::Tensor> input_gradients;   // d y / d x per rule, [N,C,H,W]
  // Needs::layer_rule_gradients: per rule, the requested layers in that rule's graph (the plain values)
  // with d y / d A through it.
  std::map<BackwardRule, std::vector<LayerTensors>> rule_layers;
  // Needs::rescale_reference: the reference input (Needs::rescale_reference's, [1 or N,C,H,W]), y on it
  // ([N]) and the requested layers on it ([N,C,h,w] each, when the rule's forward captures them). Absent
  // when the rule's forward could not read its references from the tape (input-dependent control
  // flow): the method then runs its own passes.
  struct Reference {
    torch::Tensor input;
    torch::Tensor target_values;
    std::vector<torch::Tensor> layers;
  };
  std::map<BackwardRule, Reference> rule_references;
  AttentionTensors attention;                              // Needs::attention
  const Target* target = nullptr;     // what y is (classes, score, sign)
  const Model* model = nullptr;       // for methods that read the model's weights (CAM, FullGrad)
  const SharedSettings* shared = nullptr;
  const Settings* settings = nullptr; // every setting of the requested methods, checked, defaults filled
  const Passes* passes = nullptr;

  bool pytorch_grad_cam() const { return shared->compat == Compat::PytorchGradCam; }
};

enum class AttentionNeed { None, Maps, MapsAndGradients };

struct Needs {
  bool layer_gradients = false;                 // plain d y / d A at the requested layers
  AttentionNeed attention = AttentionNeed::None;  // every block's attention probabilities (and their gradients)
  std::vector<BackwardRule> input_gradients;    // d y / d x under these rules
  std::vector<BackwardRule> layer_rule_gradients;  // d y / d A at the requested layers under these rules (not plain)
  // More layers of the model, captured beside the requested ones with their gradients (FullGrad's
  // bias layers). Throws lumen::Error when the model has none that fit.
  std::function<std::vector<std::string>(const Model&)> model_layers;
  // Thread-local parameters that the method's backward rule reads when its graph is made and its
  // forward runs (LRP's epsilon and rules), opened by the forward stage around its passes; the object
  // returned closes them. May refuse settings that only the model can check (throws lumen::Error).
  std::function<std::shared_ptr<void>(const Settings&, const Model&)> rule_scope;
  // BackwardRule::Rescale (DeepLIFT): the reference input its units compare against ([N,C,H,W], model
  // input space), from the settings and the batch. The forward stage runs it first, once (one row when
  // every row is the same), and the rule's forward reads it from a RescaleTape.
  std::function<torch::Tensor(const Settings&, const torch::Tensor& batch, const Preprocess&)> rescale_reference;
};

// What a method runs beyond the shared passes: the rows per pass are chosen from the memory one row of
// such a pass takes.
enum class ExtraPasses { None, Forward, Gradient };

// Where a method's maps are: one per requested layer, one in the model's input space, or one over the
// token grid of the model's self-attention.
enum class Space { Layer, Input, Attention };

struct Method {
  Method() = default;
  Method(std::string method_name, std::string source, Family method_family, Space space = Space::Layer,
         ExtraPasses extra = ExtraPasses::None)
      : name(std::move(method_name)), paper(std::move(source)), family(method_family), extra_passes(extra), space(space) {}

  std::string name, paper;
  Family family = Family::Cam;
  Needs needs;
  ExtraPasses extra_passes = ExtraPasses::None;
  Space space = Space::Layer;
  // Takes a 3-D network's volumes ([N,C,D,H,W] input, [N,C,d,h,w] layers, seen as [N,C,d*h,w]): true
  // for the methods whose formula reads positions only through sums over all of them, or that say how
  // they treat slices. The plan refuses the others for volumes.
  bool volumes = false;
  bool per_layer() const { return space == Space::Layer; }
  // Methods that give an input-space attribution: how their map is made from it ([N,C,H,W] -> [N,H,W]),
  // so that a wrapper can average attributions first and make the map after.
  std::function<torch::Tensor(const torch::Tensor& attribution)> reduce;
  std::vector<Param> params;
  // Wrappers: the registered methods they run, for these settings (their settings count as taken).
  std::function<std::vector<std::string>(const Settings&)> uses;
  // Refusals that involve several settings at once (run with the others, before any forward pass).
  std::function<void(const Settings&)> check;
  std::function<Result(const Evidence&, size_t layer)> compute;
};

const std::vector<Method>& methods();               // the registry, in catalogue order
const Method& find_method(const std::string& name);  // throws lumen::Error listing the known names

// Every setting of `requested` (and the methods they use) with a value: the given ones checked and
// converted, the rest their defaults. Throws lumen::Error naming the flag.
Settings resolve_settings(const std::vector<const Method*>& requested, const Settings& given);
// The requested methods and the methods they use, each once.
std::vector<const Method*> with_used_methods(const std::vector<const Method*>& requested, const Settings& settings);

// Shared arithmetic.
// Completeness (summation-to-delta) of an attribution whose sum should be f(x) - f(b): f_input,
// f_baseline (`baseline_key`), attribution_sum and completeness_gap = |sum - (fx - fb)| / |fx - fb|,
// for run.json.
nlohmann::json completeness(double fx, double fb, double total, const std::string& baseline_key = "f_baseline");
torch::Tensor max_abs_over_channels(const torch::Tensor& attribution);  // [N,C,H,W] -> [N,H,W]
torch::Tensor sum_over_channels(const torch::Tensor& attribution);      // [N,C,H,W] -> [N,H,W]

}  // namespace lumen::detail

// Opens a method file's definition: `LUMEN_METHOD(gradcam_plus_plus) { ... return method; }`. The id
// must be the file's name (src/methods/gradcam_plus_plus.cpp): that is how the registry lists it.
#define LUMEN_METHOD(id)                   \
  namespace lumen::detail::registered {    \
  ::lumen::detail::Method id();            \
  }                                        \
  ::lumen::detail::Method lumen::detail::registered::id()
