// DeepLIFT with the Rescale rule (Shrikumar et al., ICML 2017, sec. 3.5.1), Captum's DeepLift:
//   attr = (x - x0) * m,  m = d y / d x with every ReLU-like unit's derivative replaced by
//   (f(a) - f(a0)) / (a - a0), a0 its input on the reference x0 (--baseline).
// Linear layers keep their gradient. Summation-to-delta: sum(attr) = y(x) - y(x0) when every
// nonlinearity has the rule (max-pool keeps its gradient here; Captum rescales it too); the gap is
// reported like IG's completeness gap. Map: the signed channel sum.
// Cost: the reference's forward (once for a shared reference), then one forward and backward of the
// inputs in the rule's graph, shared with the forward stage. Where the model's forward depends on its
// input so that the reference cannot be read apart, the inputs and references run side by side in
// passes of their own.
#include "methods/kit/baselines.h"

LUMEN_METHOD(deeplift) {
  Method m("deeplift", "Shrikumar et al. 2017, Learning Important Features Through Propagating Activation Differences", Family::Pixel,
           Space::Input, ExtraPasses::Gradient);
  m.reduce = sum_over_channels;
  m.params = {baseline_param(), blur_sigma_param(), seed_param()};
  m.needs.input_gradients = {BackwardRule::Rescale};
  m.needs.rescale_reference = baseline_reference;
  m.compute = [](const Evidence& e, size_t) {
    const Settings& s = *e.settings;
    torch::Tensor b, gradient, reference_scores;
    if (const auto it = e.rule_references.find(BackwardRule::Rescale); it != e.rule_references.end()) {
      b = it->second.input, gradient = e.input_gradients.at(BackwardRule::Rescale), reference_scores = it->second.target_values;
    } else {
      b = e.passes->reference(s.text("baseline"), static_cast<uint64_t>(s.integer("seed")), s.number("blur_sigma"));
      const auto pass = e.passes->rescale_gradient(e.input, b, -1);  // every image beside its reference, in shared passes
      gradient = pass.gradient, reference_scores = pass.reference_scores;
    }
    Result r;
    const auto attrs = (e.input - b) * gradient;
    for (int64_t i = 0; i < e.input.size(0); ++i) {
      r.extra.push_back(completeness(e.target_values[i].item<double>(), reference_scores[i].item<double>(), attrs[i].sum().item<double>()));
      r.extra.back()["baseline"] = s.text("baseline");
    }
    r.attribution = attrs;
    r.maps = r.attribution.sum(1);
    r.is_signed = true;
    return r;
  };
  return m;
}
