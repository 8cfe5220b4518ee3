// DeepLIFT with the Rescale rule (Shrikumar et al., ICML 2017, sec. 3.5.1), Captum's DeepLift:
//   attr = (x - x0) * m,  m = d y / d x with every ReLU-like unit's derivative replaced by
//   (f(a) - f(a0)) / (a - a0), a0 its input on the reference x0 (--baseline),
// from one backward of the input and its reference run side by side. Linear layers keep their
// gradient. Summation-to-delta: sum(attr) = y(x) - y(x0) when every nonlinearity has the rule (max-pool
// keeps its gradient here; Captum rescales it too); the gap is reported like IG's completeness gap.
// Map: the signed channel sum.
#include "methods/kit/method.h"

LUMEN_METHOD(deeplift) {
  Method m("deeplift", "Shrikumar et al. 2017, Learning Important Features Through Propagating Activation Differences", Family::Pixel,
           Space::Input, ExtraPasses::Gradient);
  m.reduce = sum_over_channels;
  m.params = {baseline_param(), blur_sigma_param(), seed_param()};
  m.compute = [](const Evidence& e, size_t) {
    const Settings& s = *e.settings;
    const auto b = e.passes->reference(s.text("baseline"), static_cast<uint64_t>(s.integer("seed")), s.number("blur_sigma"));
    Result r;
    const auto pass = e.passes->rescale_gradient(e.input, b, -1);  // every image beside its reference, in shared passes
    const auto attrs = (e.input - b) * pass.gradient;
    for (int64_t i = 0; i < e.input.size(0); ++i) {
      r.extra.push_back(completeness(e.target_values[i].item<double>(), pass.reference_scores[i].item<double>(), attrs[i].sum().item<double>()));
      r.extra.back()["baseline"] = s.text("baseline");
    }
    r.attribution = attrs;
    r.maps = r.attribution.sum(1);
    r.is_signed = true;
    return r;
  };
  return m;
}
