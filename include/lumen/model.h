// lumen: a loaded TorchScript model whose layers can be captured by module path.
//
// The user's model is never edited by the user: lumen rewrites its own copy of the forward graph so that
// the outputs of the requested submodules (`layer4`, `features.18`, `layer4.1.conv2`) come out beside the
// model's own output, as leaves from which gradients can be taken. Rewritten graphs are built once per
// set of layers and cached. A Model may be shared by several threads; all its methods are const.
#pragma once

#include <torch/script.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

// How ReLU-like activations (relu, ReLU6/hardtanh, clamp) pass gradient backward.
enum class BackwardRule {
  Plain = 0,      // the true gradient
  Guided = 1,     // guided backprop: positive gradient where the forward input was in the linear region
  Deconvnet = 2,  // deconvnet: positive gradient, whatever the forward input
  // DeepLIFT's rescale rule (Shrikumar et al. 2017): each unit passes gradient times
  // (f(x) - f(x0)) / (x - x0) against its input x0 on the reference (the plain gradient where x = x0).
  // The references come from a RescaleTape when one replays; otherwise the rows come as two equal
  // halves, inputs then their references.
  Rescale = 3,
  // LRP-epsilon (Bach et al. 2015) as a modified gradient: the output z of every linear-like layer
  // (convolution, linear, batch norm, pooling) passes gradient times z / (z + eps sign z), and every
  // ReLU-like unit passes gradient times f(x) / x (relevance through unchanged, the identity rule).
  // Relevance is then the input times this gradient. eps: lumen::LrpEpsilon.
  Lrp = 4,
};

// The epsilon of the LRP rule for forwards run on this thread while it lives (Captum's default 1e-9).
// Why a scope and not an argument: the rule's ops read it when the graph runs, so one rewritten graph
// serves every epsilon.
class LrpEpsilon {
 public:
  explicit LrpEpsilon(double epsilon);
  ~LrpEpsilon();
  LrpEpsilon(const LrpEpsilon&) = delete;
  LrpEpsilon& operator=(const LrpEpsilon&) = delete;
  static double current();

 private:
  double previous_;
};

// The LRP rules of every convolution and linear layer for forwards run on this thread while it lives
// (Montavon et al. 2019, "Layer-Wise Relevance Propagation: An Overview", sec. 10.2): relevance R_k at
// a layer's output z_k = sum_j a_j w_jk + b_k goes to its inputs as
//   R_j = a_j sum_k rho(w_jk) R_k / (z'_k + eps sign z'_k),   z'_k = sum_j a_j rho(w_jk) + b_k,
// with rho(w) = w ("epsilon", the default), w + gamma w+ ("gamma") or w+ ("alpha1beta0": the
// z+ rule, for layers whose inputs are >= 0). The activations a_j are the network's own; only the
// redistribution uses rho. Biases are kept, as in Captum. Batch norm and pooling keep the epsilon rule.
// `layers` picks a rule per module path (a layer and everything inside it; the longest path wins).
struct LrpRuleSet {
  std::string rule = "epsilon";
  std::vector<std::pair<std::string, std::string>> layers;
  double gamma = 0.25;
  // The rule of the layer at module path `scope` ("" for the model's own forward).
  std::string rule_at(const std::string& scope) const;
  // What shapes the rewritten graph: the rules and gamma (eps is read when the graph runs).
  std::string signature() const;
};
// Throws lumen::Error unless `rule` is epsilon, gamma or alpha1beta0.
void check_lrp_rule(const std::string& rule);

class LrpRules {
 public:
  explicit LrpRules(LrpRuleSet rules);
  ~LrpRules();
  LrpRules(const LrpRules&) = delete;
  LrpRules& operator=(const LrpRules&) = delete;
  static const LrpRuleSet& current();

 private:
  LrpRuleSet previous_;
};

// DeepLIFT's references, run apart from their inputs (BackwardRule::Rescale). While a tape records on
// this thread, each rescale unit of a forward keeps its input on the reference rows; after replay(),
// the unit at the same place in each later forward takes that as its reference x0 (one row for all
// inputs, or one per input), so the inputs' forward and backward need not carry the references. Units
// are matched in call order and checked by shape: when a forward meets them otherwise (input-dependent
// control flow) matched() is false, its multipliers are not DeepLIFT's, and the caller runs the inputs
// and references side by side in one batch instead.
class RescaleTape {
 public:
  struct Units {
    std::vector<torch::Tensor> inputs;
    bool replaying = false, mismatch = false;
    size_t next = 0;
  };
  RescaleTape();  // records
  // Replays units recorded before (recorded() of an earlier tape): a reference's forward kept across
  // calls. The tensors are only read.
  explicit RescaleTape(std::vector<torch::Tensor> recorded);
  ~RescaleTape();
  RescaleTape(const RescaleTape&) = delete;
  RescaleTape& operator=(const RescaleTape&) = delete;
  void replay();         // the next forward reads the tape from its first unit
  bool matched() const;  // the last replayed forward met every unit, in order and in shape
  size_t units() const { return units_.inputs.size(); }
  const std::vector<torch::Tensor>& recorded() const { return units_.inputs; }

 private:
  Units units_;
  Units* previous_;
};

// How lumen runs its copy of the graph. Plain: as the file stores it. ChannelsLast: every 4-D weight and
// the input in channels-last memory (NHWC), which oneDNN's convolutions run faster on many CPUs, and
// each batch norm that only reads a convolution's output folded into that convolution (a forward that
// taps such a convolution or batch norm runs them unfolded). The values are the same up to float
// rounding; activations, gradients and maps keep their shapes.
enum class ForwardMode { Plain, ChannelsLast };
ForwardMode parse_forward_mode(const std::string& name);  // "plain" | "channels-last"
std::string to_string(ForwardMode mode);

struct LayerInfo {
  std::string path;                 // module path, e.g. "features.18"
  std::string type;                 // class name of the module, e.g. "Conv2d"
  std::vector<int64_t> shape;       // output shape for the probed input; empty if not a tensor
  std::string output_kind;          // "tensor", "tuple", ..., or "not called"
  std::string outputs;              // ONNX models: the node's output value names (also usable as layer names)
};

// What one forward pass returns: the model's own output and, per requested layer, the captured output.
// A captured tensor is a leaf that requires grad when the pass ran with gradients enabled, so
// torch::autograd::grad(score, capture) gives d score / d activation and nothing below the layer.
struct Capture {
  torch::IValue output;
  std::vector<torch::Tensor> layers;  // same order as the requested paths
  // Attention forwards only: every attention map the model computed ([..., T, T], as its softmax gave
  // it), in the order they ran, each with the module it came from. Leaves that require grad, like the
  // captured layers.
  std::vector<torch::Tensor> attention;
  std::vector<std::string> attention_scopes;
};

class Model {
 public:
  // Loads a TorchScript file (traced or scripted), or an ONNX file (by its .onnx extension), whose
  // graph is rebuilt on LibTorch ops (see docs/onnx.md). Throws lumen::Error on a missing or invalid file.
  // In an ONNX model a layer is named by its node name or by its output value's name.
  static Model load(const std::string& path);
  // Wraps a module already in memory (used by the demo, which builds its network in C++).
  static Model from_module(torch::jit::Module module, std::string name = "in-memory");

  const std::string& name() const;
  // A model with the same names and layer aliases running `module` (a modified copy of module()).
  Model with_module(torch::jit::Module module, std::string name) const;
  // The input shape the file declares ([1,3,224,224]; -1 where symbolic); empty when it declares none.
  std::vector<int64_t> declared_input_shape() const;
  // The module path a layer name stands for: an ONNX node or value name, or a module path of its
  // export ("layer4"), gives the path lumen lists it under; any other name is returned as it is.
  std::string layer_path(const std::string& layer) const;
  // The part of the model's own canvas an input of height x width fills, as (rows, columns) fractions:
  // torchvision's detectors resize each image and pad it to a multiple of 32 at the bottom and right
  // (GeneralizedRCNNTransform, read from the scripted module's `transform`), so their layers cover more
  // than the image. (1, 1) for every other model.
  std::pair<double, double> content_fraction(int64_t height, int64_t width) const;
  // 1 for a model that takes one image per forward (an ONNX graph whose input has no batch axis, as
  // torchvision's detectors export); 0 when a batch may hold any number.
  int64_t images_per_forward() const;
  // Throws lumen::Error when an ONNX graph declares a fixed height/width that `input` does not have.
  void check_input_size(const torch::Tensor& input) const;
  // The stride of the model's patch embedding — the first convolution whose kernel equals its stride
  // (a ViT's conv_proj, Swin's first layer) — or 0 when it has none. It tells a token sequence's grid.
  int64_t patch_stride() const;

  // Every submodule in definition order, with its output shape for an input of `input_shape`.
  std::vector<LayerInfo> layers(const std::vector<int64_t>& input_shape) const;
  // All module paths, without running the model.
  std::vector<std::string> module_paths() const;
  // Throws lumen::Error naming the closest paths when `path` is not a submodule.
  void check_layer(const std::string& path) const;

  // One forward pass. Gradients are recorded only from the captured layers upwards (the model's
  // parameters never require grad in lumen's copy) unless `input` itself requires grad.
  // With a non-plain `rule` every ReLU-like activation backpropagates by that rule; an activation with
  // no rule (SiLU, GELU, sigmoid, ...) is an error naming its layer unless `strict` is false, in which
  // case it keeps its ordinary gradient. The forward values never change.
  // With `attention`, the attention maps of every block come back too (Capture::attention). PyTorch's
  // fused inference attention, which has neither a backward nor a softmax to read, is computed
  // written out in lumen's copy (same values up to float rounding).
  Capture forward(const torch::Tensor& input, const std::vector<std::string>& layers = {},
                  BackwardRule rule = BackwardRule::Plain, bool strict = true, bool attention = false) const;

  // Runs the network from `layer` on, with `activation` in place of that layer's output ([M,...]).
  // Only what depends on the layer (or on `input`, for connections that skip over it) is computed;
  // `input` ([M,C,H,W] or broadcastable) is used only where the network reads it after the layer.
  torch::IValue forward_from(const std::string& layer, const torch::Tensor& activation, const torch::Tensor& input) const;

  // Convolutions the network runs after `layer` (in forward_from's graph). The explainer batches
  // several targets' backward through a head without any: there the copies are cheap, and one pass
  // reads a large classifier's weights once instead of once per target.
  int64_t convolutions_after(const std::string& layer) const;

  // Bytes of the layer outputs for one input row of shape `row_shape` ([1,C,H,W]): the largest single
  // output, and the sum over leaf modules (what a pass that records gradients keeps alive). One probe
  // pass per shape, then cached; perturbation methods size their batches from it.
  struct ActivationBytes {
    int64_t largest = 0, leaves = 0;
  };
  ActivationBytes activation_bytes(const std::vector<int64_t>& row_shape) const;

  // Number of graph executions so far (forward, forward_from) — how tests count the planner's passes.
  int64_t passes() const;
  // Wall time spent inside those executions, in seconds (overlapping ones count once): what `lumen
  // bench` calls the forward share.
  double forward_seconds() const;

  // A model with the same names that runs every forward in `mode` (its own copy of the weights in that
  // layout); caches of rewritten graphs start empty.
  Model with_forward_mode(ForwardMode mode) const;
  ForwardMode forward_mode() const;
  // How many batch norms this copy runs folded into the convolution before them (ChannelsLast; 0 in
  // Plain, and for a model whose batch norms read anything else).
  int64_t folded_batch_norms() const;
  // A stable fingerprint of the file the model was loaded from (size and FNV-1a hash of its bytes), for
  // caches keyed by model; empty for a module built in memory.
  const std::string& fingerprint() const;

  // The underlying module (lumen's own copy; parameters have requires_grad = false).
  const torch::jit::Module& module() const;
  // The module's own forward on `batch`, unrewritten, as an application calls it: the batch as that
  // forward takes it (a tensor, or a List[Tensor] of images for a torchvision detector), the arguments
  // after it at their defaults. What `lumen bench` times as the user's inference.
  torch::IValue run_module(const torch::Tensor& batch) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The faster forward mode for `model` at input shape `shape` ([N,C,H,W]), decided by a short probe: a
// warm-up and then alternating timed inference forwards of each mode, the median of each compared.
// With a `cache_file`, a decision for the same model fingerprint and shape is read from it instead of
// probing again, and a new one is added (the file is JSON, written atomically; a damaged file is
// ignored and rewritten).
struct ForwardPlan {
  ForwardMode mode = ForwardMode::Plain;
  double plain_ms = 0, channels_last_ms = 0;  // median per forward in the probe (of the cached probe)
  bool cached = false;
};
ForwardPlan plan_forward(const Model& model, const std::vector<int64_t>& shape, const std::string& cache_file = "");
// Where plan_forward's decisions are kept by default: $XDG_CACHE_HOME/lumen/forward-plans.json, else
// ~/.cache/lumen/forward-plans.json; empty when neither can be named.
std::string default_forward_cache();

// The model's class scores from its output: the tensor itself, or the first tensor of a tuple/list.
// Dicts and other structures need a user-supplied selector (see target.h).
torch::Tensor default_logits(const torch::IValue& output);

}  // namespace lumen
#pragma GCC visibility pop
