// Layer DeepLIFT (Captum's LayerDeepLift; Shrikumar et al., ICML 2017, at a layer): the rescale rule's
// multipliers m = d y / d A at the layer, from one backward of the input and its reference (--baseline)
// run side by side, times the layer's difference:
//   attr = (A(x) - A(x0)) * m.
// Summation-to-delta holds at the layer too: sum(attr) = y(x) - y(x0) when every nonlinearity above
// the layer has the rule; the gap is reported. Map: the signed channel sum.
#include "methods/kit/method.h"

LUMEN_METHOD(layer_deeplift) {
  Method m("layer-deeplift", "Captum LayerDeepLift (Shrikumar et al. 2017 at a layer)", Family::Cam, Space::Layer, ExtraPasses::Gradient);
  m.params = {baseline_param(), blur_sigma_param(), seed_param()};
  m.compute = [](const Evidence& e, size_t layer) {
    const Settings& s = *e.settings;
    const auto b = e.passes->reference(s.text("baseline"), static_cast<uint64_t>(s.integer("seed")), s.number("blur_sigma"));
    Result r;
    const auto pass = e.passes->rescale_layer_at(e.input, b, -1, layer);  // every image beside its reference, in shared passes
    const auto attrs = (pass.activations - pass.reference_activations) * pass.gradient;
    for (int64_t i = 0; i < e.input.size(0); ++i) {
      r.extra.push_back(completeness(e.target_values[i].item<double>(), pass.reference_scores[i].item<double>(), attrs[i].sum().item<double>()));
      r.extra.back()["baseline"] = s.text("baseline");
    }
    r.maps = attrs.sum(1);
    r.is_signed = true;
    return r;
  };
  return m;
}
