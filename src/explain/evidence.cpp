// Evidence: per target, one backward through the network's head down to the captured layers (and to the
// input when asked). Parameters never require grad in lumen's copy of the model, so nothing below the
// layers is computed. Each backward rule's pass has its own backward.
#include <lumen/error.h>

#include "explain/pipeline.h"

#include <torch/csrc/autograd/autograd.h>

namespace lumen::detail {
namespace {

bool light_head(const Model& model, const std::string& layer) {
  try {
    return model.convolutions_after(layer) == 0;
  } catch (const Error&) {  // no suffix graph from this layer
    return false;
  }
}

torch::Tensor or_zeros(const torch::Tensor& g, const torch::Tensor& like) { return g.defined() ? g : torch::zeros_like(like); }

}  // namespace

// Several targets at one layer: the captured activation is repeated once per target and the network is
// run from the layer on (the head only), each copy scored by its own target. One backward then serves
// all targets, and a large head (VGG's 100M-weight classifier) is read once per pass instead of once
// per target. This pays only where the head has no convolutions: re-running convolutional blocks k
// times costs more than k backward passes through them. Elsewhere, and for heads that cannot be run
// from the layer on or outputs that are not tensors, each target has its own backward over the
// retained graph.
std::vector<torch::Tensor> shared_layer_gradients(const Model& model, const Plan& plan, const Forward& f, const std::vector<Target>& targets,
                                                  const torch::Tensor& batch) {
  std::vector<torch::Tensor> out;
  if (targets.size() < 2 || !plan.layer_gradients || plan.attention == AttentionNeed::MapsAndGradients || !plan.model_layers.empty() || plan.plain_input || plan.layers.size() != 1 ||
      !f.capture.output.isTensor() || !light_head(model, plan.layers[0]))
    return out;
  try {
    torch::AutoGradMode grad_mode(true);
    const int64_t n = batch.size(0), k = static_cast<int64_t>(targets.size());
    auto a = f.capture.layers[0].detach().repeat({k, 1, 1, 1}).requires_grad_(true);
    auto output = model.forward_from(plan.layers[0], a, batch.detach().repeat({k, 1, 1, 1}));
    if (!output.isTensor() || output.toTensor().size(0) != k * n) return out;
    torch::Tensor total;
    for (int64_t t = 0; t < k; ++t) {
      auto yt = targets[static_cast<size_t>(t)](torch::IValue(output.toTensor().narrow(0, t * n, n))).sum();
      total = total.defined() ? total + yt : yt;
    }
    auto g = torch::autograd::grad({total}, {a}, {}, /*retain_graph=*/false, false, /*allow_unused=*/true)[0];
    if (g.defined())
      for (int64_t t = 0; t < k; ++t) out.push_back(g.narrow(0, t * n, n));
  } catch (const Error&) {
    out.clear();
  }
  return out;
}

Evidence gather_evidence(const Model& model, const Plan& plan, const Forward& f, const Target& target, bool last,
                         const torch::Tensor& shared_gradient, const Passes& passes) {
  const int64_t n = f.input.size(0);
  torch::Tensor y = target(f.capture.output);
  if (y.dim() != 1 || y.size(0) != n)
    throw Error("target '" + target.name + "' must give one value per image ([" + std::to_string(n) + "]), got shape " + c10::str(y.sizes()));
  check_finite(y.detach(), "target '" + target.name + "'");

  Evidence ev;
  ev.input = f.input.detach();
  ev.target_values = y.detach();
  ev.target = &target;
  ev.model = &model;
  ev.shared = &plan.shared;
  ev.settings = &plan.settings;
  ev.passes = &passes;
  ev.model_layer_paths = plan.model_layers;
  const auto require_gradient_path = [&target](const torch::Tensor& value) {
    if (!value.requires_grad()) throw Error("target '" + target.name + "' does not depend on the captured layers (no gradient path)");
  };
  const size_t requested = plan.layers.size();
  // The methods see every layer as [N,C,h,w] (layout.h); gradients are taken at the layer's own
  // output and laid out the same way.
  for (size_t l = 0; l < requested; ++l)
    ev.layers.push_back({to_spatial(f.capture.layers[l].detach(), f.layouts[l]), torch::Tensor(), f.layouts[l].grid_d});
  for (size_t l = 0; l < plan.model_layers.size(); ++l) ev.model_layers.push_back({f.capture.layers[requested + l].detach(), torch::Tensor()});

  // What this target's backward goes to: the requested layers, the model layers, the input.
  std::vector<torch::Tensor> wrt;
  if (plan.layer_gradients) wrt.assign(f.capture.layers.begin(), f.capture.layers.begin() + static_cast<int64_t>(requested));
  wrt.insert(wrt.end(), f.capture.layers.begin() + static_cast<int64_t>(requested), f.capture.layers.end());
  if (plan.plain_input) wrt.push_back(f.input);
  ev.attention.maps = f.attention.maps;
  ev.attention.scopes = f.attention.scopes;
  ev.attention.tokens = f.attention.tokens;
  const bool attention_gradients = plan.attention == AttentionNeed::MapsAndGradients;
  if (attention_gradients) wrt.insert(wrt.end(), f.recorded_attention.begin(), f.recorded_attention.end());
  if (shared_gradient.defined()) {
    require_gradient_path(y);
    ev.layers[0].gradients = to_spatial(shared_gradient, f.layouts[0]);
  } else if (!wrt.empty()) {
    require_gradient_path(y);
    auto g = torch::autograd::grad({y.sum()}, wrt, {}, /*retain_graph=*/!last, /*create_graph=*/false, /*allow_unused=*/true);
    size_t k = 0;
    if (plan.layer_gradients)
      for (size_t l = 0; l < requested; ++l, ++k) ev.layers[l].gradients = to_spatial(or_zeros(g[k], f.capture.layers[l]), f.layouts[l]);
    for (size_t l = 0; l < plan.model_layers.size(); ++l, ++k) ev.model_layers[l].gradients = or_zeros(g[k], f.capture.layers[requested + l]);
    if (plan.plain_input) ev.input_gradients[BackwardRule::Plain] = or_zeros(g[k++], f.input);
    if (attention_gradients)
      for (size_t b = 0; b < f.recorded_attention.size(); ++b, ++k)
        ev.attention.gradients.push_back(or_zeros(g[k], f.recorded_attention[b]).reshape(f.attention.maps[b].sizes()));
  }
  for (const auto& [rule, pass] : f.rule_passes) {
    auto yr = target(pass.output);
    const bool to_input = plan.rule_inputs.count(rule) > 0;
    std::vector<torch::Tensor> to = pass.layers;
    if (to_input) to.push_back(pass.input);
    require_gradient_path(yr);
    auto g = torch::autograd::grad({yr.sum()}, to, {}, /*retain_graph=*/!last, false, /*allow_unused=*/true);
    for (size_t l = 0; l < pass.layers.size(); ++l)
      ev.rule_layers[rule].push_back({to_spatial(pass.layers[l].detach(), f.layouts[l]), to_spatial(or_zeros(g[l], pass.layers[l]), f.layouts[l]), f.layouts[l].grid_d});
    if (to_input) ev.input_gradients[rule] = or_zeros(g.back(), pass.input);
    if (pass.reference_output.isNone()) continue;
    auto& reference = ev.rule_references[rule];
    reference.input = pass.reference_input;
    reference.target_values = target(pass.reference_output).detach();
    for (size_t l = 0; l < pass.reference_layers.size(); ++l) reference.layers.push_back(to_spatial(pass.reference_layers[l], f.layouts[l]));
  }
  return ev;
}

}  // namespace lumen::detail
