// Forward: one pass with the planned layers captured. When plain input gradients are needed the input
// requires grad here, so that one backward per target serves both the layers and the input. Each other
// backward rule (guided backprop, deconvnet) runs the same forward on a copy of the graph whose
// ReLU-like units backpropagate by the rule; its forward values are the plain ones, so when it is the
// only pass needed it also gives the predictions.
#include <lumen/error.h>

#include "explain/pipeline.h"

namespace lumen::detail {

Forward run_forward(const Model& model, const Plan& plan, const torch::Tensor& batch) {
  torch::AutoGradMode grad_mode(true);
  const bool strict = plan.shared.strict_nonlinearities;
  Forward f;
  f.input = batch.detach();
  if (plan.plain_input || plan.rule_only) f.input = f.input.clone().requires_grad_(true);
  f.capture = plan.rule_only ? model.forward(f.input, {}, *plan.rules.begin(), strict) : model.forward(f.input, plan.captured());
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const auto& a = f.capture.layers[i];
    if (a.dim() != 4)
      throw Error("layer '" + plan.layers[i] + "' outputs shape " + c10::str(a.sizes()) +
                  ", not a [N,C,H,W] feature map; pick a convolutional layer");
  }
  for (auto rule : plan.rules) {
    if (plan.rule_only) {
      f.rule_passes[rule] = {f.input, f.capture.output};
      continue;
    }
    auto x = batch.detach().clone().requires_grad_(true);
    f.rule_passes[rule] = {x, model.forward(x, {}, rule, strict).output};
  }
  return f;
}

}  // namespace lumen::detail
