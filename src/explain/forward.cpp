// Forward: one pass with the planned layers captured. When plain input gradients are needed the input
// requires grad here, so that one backward per target serves both the layers and the input. Each other
// backward rule (guided backprop, deconvnet) runs the same forward on a copy of the graph whose
// ReLU-like units backpropagate by the rule; its forward values are the plain ones, so when it is the
// only pass needed it also gives the predictions.
#include <lumen/error.h>

#include "explain/pipeline.h"

namespace lumen::detail {
namespace {

std::string attention_methods(const Plan& plan) {
  std::string names;
  for (const auto* m : plan.methods)
    if (m->needs.attention != AttentionNeed::None) names += (names.empty() ? "" : ", ") + m->name;
  return names;
}

// The recorded softmax outputs as one model's self-attention: each [N,heads,T,T] (an attention module
// gives [N*heads,T,T] or [N,heads,T,T]), all over the same T tokens: the prefix tokens, then the grid.
void read_attention(Forward& f, const Plan& plan, const torch::Tensor& batch) {
  const auto& recorded = f.capture.attention;
  const std::string who = attention_methods(plan);
  if (recorded.empty())
    throw Error(who + " needs the model's self-attention, and this model has none: no softmax over a square [..., T, T] score "
                "matrix runs in its forward. Use a CAM method at a layer (--layer) instead");
  const int64_t n = batch.size(0), t = recorded[0].size(-1);
  for (size_t b = 0; b < recorded.size(); ++b) {
    const auto& a = recorded[b];
    const auto& scope = f.capture.attention_scopes[b];
    if (a.size(-1) != t)
      throw Error(who + ": the model's attention maps differ in size (" + std::to_string(t) + " tokens in '" + f.capture.attention_scopes[0] +
                  "', " + std::to_string(a.size(-1)) + " in '" + scope + "'); rollout through the blocks needs one token sequence throughout");
    // Global attention is [N,heads,T,T] or [N*heads,T,T]; windowed attention (Swin, MaxViT) is
    // [N*windows,heads,T,T]: it attends within parts of the image and has no token grid to roll out on.
    if ((a.dim() == 4 && a.size(0) != n) || a.dim() > 4 || a.numel() % (n * t * t) != 0)
      throw Error(who + ": the attention in '" + scope + "' has shape " + c10::str(a.sizes()) + " for " + std::to_string(n) +
                  " image(s): it is windowed (Swin, MaxViT), within parts of the image, and cannot be rolled out over it. Use a CAM "
                  "method at a layer (--layer) instead");
  }
  try {
    f.attention.tokens = infer_layout({n, t, t}, batch.size(2), batch.size(3), plan.patch_stride, plan.tokens);
  } catch (const Error& e) {
    throw Error(who + ": the attention maps over " + std::to_string(t) + " tokens: " + e.what());
  }
  for (const auto& a : recorded) {
    f.attention.maps.push_back(a.detach().reshape({n, -1, t, t}));
    f.recorded_attention.push_back(a);
  }
  f.attention.scopes = f.capture.attention_scopes;
}

}  // namespace

Forward run_forward(const Model& model, const Plan& plan, const torch::Tensor& batch) {
  torch::AutoGradMode grad_mode(plan.backward());
  std::vector<std::shared_ptr<void>> rule_scopes;  // LRP's epsilon and rules, while the rule graphs are made and run
  for (const auto* m : plan.methods)
    if (m->needs.rule_scope) rule_scopes.push_back(m->needs.rule_scope(plan.settings, model));
  const bool strict = plan.shared.strict_nonlinearities;
  Forward f;
  f.input = batch.detach();
  const bool rule_input = plan.rule_only && plan.rule_inputs.count(*plan.rules.begin()) > 0;
  if (plan.plain_input || rule_input) f.input = f.input.clone().requires_grad_(true);
  const bool attention = plan.attention != AttentionNeed::None;
  f.capture = plan.rule_only ? model.forward(f.input, plan.captured(), *plan.rules.begin(), strict)
                             : model.forward(f.input, plan.captured(), BackwardRule::Plain, true, attention);
  if (attention) read_attention(f, plan, batch);
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    try {
      f.layouts.push_back(infer_layout(f.capture.layers[i].sizes().vec(), batch.size(-2), batch.size(-1), plan.patch_stride, plan.tokens));
    } catch (const Error& e) {
      throw Error("layer '" + plan.layers[i] + "': " + e.what());
    }
    // A volume's maps are volumes: a layer that is not one (or one under an image) has no place to go.
    const bool volume_layer = f.layouts.back().kind == TokenLayout::Kind::Volume, volume_input = batch.dim() == 5;
    if (volume_layer != volume_input)
      throw Error("layer '" + plan.layers[i] + "' gives " + c10::str(f.capture.layers[i].sizes()) + " for a" +
                  (volume_input ? " [N,C,D,H,W] volume input; pick a layer whose output is a [N,C,d,h,w] volume"
                                : "n [N,C,H,W] image input; a [N,C,d,h,w] layer needs a volume input"));
  }
  for (auto rule : plan.rules) {
    const bool layers = plan.rule_layers.count(rule) > 0;
    if (plan.rule_only) {
      f.rule_passes[rule] = {f.input, f.capture.output, layers ? f.capture.layers : std::vector<torch::Tensor>{}};
      continue;
    }
    // Without its input gradient the rule graph is recorded from the captured layers up only.
    auto x = plan.rule_inputs.count(rule) ? batch.detach().clone().requires_grad_(true) : batch.detach();
    auto c = model.forward(x, layers ? plan.layers : std::vector<std::string>{}, rule, strict);
    f.rule_passes[rule] = {x, c.output, c.layers};
  }
  return f;
}

}  // namespace lumen::detail
