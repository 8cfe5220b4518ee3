// Internal: the explanation engine, stage by stage. Explainer::explain_tensor (explainer.cpp) runs
//
//   plan      plan.cpp       which methods, settings, layers and passes; every refusal that needs no forward
//   forward   forward.cpp    the forward pass with the layers captured, and one per backward rule
//   targets   targets.cpp    the top-5 and the targets, resolved once from the forward's output
//   evidence  evidence.cpp   per target, the backward to layers and input; extra passes (passes.cpp)
//   methods   methods.cpp    each method's arithmetic on the evidence, side by side
//   finish    finish.cpp     raw maps to Maps (upsampled, normalised, box); combine.cpp: layer
//                            aggregation and class differences; augment.cpp: aug-smooth
//
// Data flows down only: each stage reads what the stages above it produced and writes nothing back.
#pragma once

#include <lumen/explain.h>

#include "methods/kit/method.h"

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lumen::detail {

// ---- plan -------------------------------------------------------------------------------------------
struct Plan {
  std::vector<const Method*> methods;      // as requested
  Settings settings;                       // every setting of these methods (and those they use), checked
  SharedSettings shared;                   // with rows_per_pass decided
  std::vector<std::string> layers;         // requested layers, when some method works at a layer
  std::vector<std::string> model_layers;   // layers the methods' needs name, captured after `layers`
  bool layer_gradients = false;            // d y / d (requested layers)
  bool plain_input = false;                // d y / d x, from the same backward
  std::set<BackwardRule> rules;            // other backward rules: each a forward of its own graph
  std::set<BackwardRule> rule_inputs;      // ... whose backward goes to the input
  std::set<BackwardRule> rule_layers;      // ... whose forward captures the requested layers, and backward goes to them
  bool rule_only = false;                  // one rule's forward is the only one needed (it also gives y)
  AttentionNeed attention = AttentionNeed::None;  // the blocks' attention (and its gradients)
  TokenHint tokens;                        // the layers' layout as the user gave it
  int64_t patch_stride = 0;                // the model's patch embedding (Model::patch_stride)
  std::vector<std::string> captured() const;  // layers, then model_layers
  // Whether the evidence stage takes any gradient of this forward. Without one the forward runs with
  // autograd off, at the cost of inference (EigenCAM, attention rollout, Score-CAM's first pass).
  bool backward() const;
};
Plan make_plan(const Model& model, const ExplainOptions& options, const torch::Tensor& batch);
// The plan for `method` alone on other rows, inside a plan (a wrapper's base method).
Plan plan_alone(const Model& model, const Method& method, const Plan& outer);
// The batch's rows [first, last) in groups that the explainer runs side by side, one thread each; one
// group (the whole batch) when that does not apply. See plan.cpp.
std::vector<std::pair<int64_t, int64_t>> row_groups(const Plan& plan, const ExplainOptions& options, int64_t rows);

// ---- forward ----------------------------------------------------------------------------------------
struct Forward {
  torch::Tensor input;    // x; requires grad when the plan needs plain input gradients
  Capture capture;        // the model's output and the captured layers (Plan::captured order)
  std::vector<TokenLayout> layouts;  // per requested layer: how its output lies in space
  // Plan::attention: every block's attention as [N,heads,T,T] (maps, detached) and the recorded
  // tensors themselves (`recorded`, what gradients are taken with respect to), with the tokens' layout.
  AttentionTensors attention;
  std::vector<torch::Tensor> recorded_attention;
  struct RulePass {
    torch::Tensor input;                // requires grad when the rule's input gradient is asked for
    torch::IValue output;
    std::vector<torch::Tensor> layers;  // Plan::rule_layers: the requested layers in this graph
    // Needs::rescale_reference: the reference input (one row when every input shares it) and its
    // forward's output and layers with N rows.
    torch::Tensor reference_input;
    torch::IValue reference_output;
    std::vector<torch::Tensor> reference_layers;
  };
  std::map<BackwardRule, RulePass> rule_passes;
};
// DeepLIFT's shared reference rows and their forwards (the tape, the output, the captured layers),
// kept across an explainer's calls: a fixed baseline (black, a pixel value) then costs one forward per
// input size and layer set, not one per call. A reference that changes with the input (a blur) misses
// and displaces the oldest of the few it keeps. Thread-safe.
class ReferenceCache {
 public:
  struct Entry {
    torch::Tensor reference;  // one row
    std::vector<std::string> layers;
    bool strict = true;
    std::vector<torch::Tensor> tape;  // RescaleTape::recorded()
    Capture capture;
  };
  std::shared_ptr<const Entry> find(const torch::Tensor& reference, const std::vector<std::string>& layers, bool strict) const;
  void keep(std::shared_ptr<const Entry> entry);

 private:
  static constexpr size_t kEntries = 2;
  mutable std::mutex mutex_;
  std::deque<std::shared_ptr<const Entry>> entries_;  // newest first
};
// `references` (may be null) keeps the rescale rule's shared references across calls.
Forward run_forward(const Model& model, const Plan& plan, const torch::Tensor& batch, const Preprocess& preprocess,
                    ReferenceCache* references = nullptr);

// ---- targets ----------------------------------------------------------------------------------------
struct Targets {
  std::vector<Target> targets;
  std::vector<std::vector<Prediction>> top;  // per image: the top-5 (empty without class scores)
};
Targets resolve_targets(const ExplainOptions& options, const torch::IValue& output, int64_t images, const std::vector<std::string>& labels);

// ---- evidence ---------------------------------------------------------------------------------------
// Several targets at one layer through a light head: their layer gradients from one backward (empty
// where that does not apply; see evidence.cpp).
std::vector<torch::Tensor> shared_layer_gradients(const Model& model, const Plan& plan, const Forward& forward,
                                                  const std::vector<Target>& targets, const torch::Tensor& batch);
// One target's evidence: its backward to the layers, model layers and input, and its rule passes'
// backward. `last`: the graphs are not kept for another target. `shared_gradient`: from the above.
Evidence gather_evidence(const Model& model, const Plan& plan, const Forward& forward, const Target& target, bool last,
                         const torch::Tensor& shared_gradient, const Passes& passes);

// The extra passes of one target (passes.cpp): other inputs, the network from a layer on, another
// method on other rows, reference inputs.
class TargetPasses : public Passes {
 public:
  TargetPasses(const Model& model, const Plan& plan, const Forward& forward, const Target& target, const torch::Tensor& batch,
               const Preprocess& preprocess);
  torch::Tensor gradient(const torch::Tensor& rows, int64_t image, BackwardRule rule) const override;
  Rescaled rescale_gradient(const torch::Tensor& rows, const torch::Tensor& references, int64_t image) const override;
  RescaledLayer rescale_layer_at(const torch::Tensor& rows, const torch::Tensor& references, int64_t image, size_t layer) const override;
  LayerTensors layer_at(const torch::Tensor& rows, int64_t image, size_t layer) const override;
  torch::Tensor score(const torch::Tensor& rows, int64_t image) const override;
  torch::Tensor score_from_layer(size_t layer, const torch::Tensor& activations, int64_t image) const override;
  LayerScores scores_from_layer(size_t layer, const torch::Tensor& activations, int64_t image) const override;
  Result run(const Method& method, const torch::Tensor& rows, int64_t image) const override;
  Result run_for(const Method& method, const Target& target, size_t layer) const override;
  torch::Tensor hessian_times_activations(size_t layer) const override;
  torch::Tensor reference(const std::string& kind, uint64_t seed, double blur_sigma) const override;
  torch::Tensor pixels() const override;
  int rows_per_pass() const override { return plan_.shared.rows_per_pass; }
  void progress(const std::string& what, int64_t done, int64_t total) const override;

 private:
  const Model& model_;
  const Plan& plan_;
  const Forward& forward_;
  const Target& target_;
  torch::Tensor batch_;
  const Preprocess& preprocess_;
  // The rescale rule's pass, at the input (`layer` empty) or at a requested layer.
  RescaledLayer rescale_pass(const torch::Tensor& rows, const torch::Tensor& references, int64_t image, std::optional<size_t> layer) const;
  RescaledLayer paired_rescale_pass(const torch::Tensor& rows, const torch::Tensor& references, int64_t image, std::optional<size_t> layer) const;
  // The model's output when it runs on from `layer` with `activations` in place of the layer's output.
  torch::IValue output_from_layer(size_t layer, const torch::Tensor& activations, int64_t image) const;
};

// ---- methods ----------------------------------------------------------------------------------------
struct Job {
  const Method* method;
  size_t layer;     // index into Plan::layers; 0 for methods in input space
  Result result;
  std::string layer_name(const Plan& plan) const;  // the layer's path, or "input"
};
std::vector<Job> run_methods(const Plan& plan, const Evidence& evidence);

// ---- finish -----------------------------------------------------------------------------------------
// Where maps go: each image's size, the model input's size, and how they are boxed and scaled.
struct Canvas {
  std::vector<cv::Size> images;
  cv::Size input;
  // The part of a layer's map the input fills (Model::content_fraction): below 1 where the model pads
  // its own canvas (torchvision's detectors).
  double content_rows = 1, content_cols = 1;
  int depth = 0;        // volumes ([N,C,D,H,W] input): D, the maps' slices; each map is at the input's size
  float box_threshold = 0.15f;
  bool boxes = true;    // ExplainOptions::boxes
  bool compat = false;  // pytorch-grad-cam's scaling
  const std::vector<std::string>* labels = nullptr;
};
// Raw map -> upsampled, normalised, stats, box (unless `box` or canvas.boxes is false). Volumes:
// m.raw_depth says the raw map's slices.
void finish_map(Map& m, const torch::Tensor& raw, cv::Size image, const Canvas& canvas, bool box = true);
// A decomposition's parts of image `image` (Result::parts), each finished like a map, with its top-2 classes.
std::vector<MapPart> finish_parts(const Result& res, int64_t image, cv::Size size, const Canvas& canvas, int raw_depth = 0);
// One target's jobs as Maps, appended to each image's list (job-major, as the jobs run).
void finish_jobs(const std::vector<Job>& jobs, const Plan& plan, const Forward& forward, const Target& target,
                 const torch::Tensor& target_values, const Canvas& canvas, std::vector<std::vector<Map>>& maps);
// Maps made from other maps: layer aggregation, then class differences (combine.cpp).
void combine_maps(std::vector<std::vector<Map>>& maps, const ExplainOptions& options, const Plan& plan, const Canvas& canvas);
// Test-time augmentation (augment.cpp): `explain_at` explains a transformed copy of the batch with the
// same targets; the maps are averaged, mapped back, and finished again.
void aug_smooth(std::vector<std::vector<Map>>& maps, const torch::Tensor& batch, const Canvas& canvas,
                const std::function<std::vector<std::vector<Map>>(const torch::Tensor&)>& explain_at);

// Shared by the stages.
std::string label_of(const std::vector<std::string>* labels, int64_t cls);
void check_finite(const torch::Tensor& t, const std::string& what);
// Whether every row of t equals its first: a reference all inputs share (black, a pixel value, an image).
bool rows_alike(const torch::Tensor& t);
// t with n rows: itself, or its one row expanded without a copy.
torch::Tensor with_rows(const torch::Tensor& t, int64_t n);

}  // namespace lumen::detail
