// Layer DeepLIFT (Captum's LayerDeepLift; Shrikumar et al., ICML 2017, at a layer): the rescale rule's
// multipliers m = d y / d A at the layer against the reference (--baseline), times the layer's
// difference:
//   attr = (A(x) - A(x0)) * m.
// Summation-to-delta holds at the layer too: sum(attr) = y(x) - y(x0) when every nonlinearity above
// the layer has the rule; the gap is reported. Map: the signed channel sum.
// Cost as deeplift's (see deeplift.cpp), with the backward stopping at the layer.
#include "methods/kit/baselines.h"

LUMEN_METHOD(layer_deeplift) {
  Method m("layer-deeplift", "Captum LayerDeepLift (Shrikumar et al. 2017 at a layer)", Family::Cam, Space::Layer, ExtraPasses::Gradient);
  m.params = {baseline_param(), blur_sigma_param(), seed_param()};
  m.needs.layer_rule_gradients = {BackwardRule::Rescale};
  m.needs.rescale_reference = baseline_reference;
  m.compute = [](const Evidence& e, size_t layer) {
    const Settings& s = *e.settings;
    torch::Tensor activations, reference_activations, gradient, reference_scores;
    if (const auto it = e.rule_references.find(BackwardRule::Rescale); it != e.rule_references.end()) {
      const auto& l = e.rule_layers.at(BackwardRule::Rescale).at(layer);
      activations = l.activations, gradient = l.gradients;
      reference_activations = it->second.layers.at(layer), reference_scores = it->second.target_values;
    } else {
      const auto b = e.passes->reference(s.text("baseline"), static_cast<uint64_t>(s.integer("seed")), s.number("blur_sigma"));
      const auto pass = e.passes->rescale_layer_at(e.input, b, -1, layer);  // every image beside its reference, in shared passes
      activations = pass.activations, gradient = pass.gradient;
      reference_activations = pass.reference_activations, reference_scores = pass.reference_scores;
    }
    Result r;
    const auto attrs = (activations - reference_activations) * gradient;
    for (int64_t i = 0; i < e.input.size(0); ++i) {
      r.extra.push_back(completeness(e.target_values[i].item<double>(), reference_scores[i].item<double>(), attrs[i].sum().item<double>()));
      r.extra.back()["baseline"] = s.text("baseline");
    }
    r.maps = attrs.sum(1);
    r.is_signed = true;
    return r;
  };
  return m;
}
