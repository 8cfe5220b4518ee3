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
    std::vector<torch::Tensor> attrs;
    for (int64_t i = 0; i < e.input.size(0); ++i) {
      const auto x = e.input[i].unsqueeze(0), x0 = b[i].unsqueeze(0);
      const auto pass = e.passes->rescale_gradient(x, x0, i);
      const auto attr = ((x - x0) * pass.gradient)[0];
      attrs.push_back(attr);
      const double fx = e.target_values[i].item<double>(), fb = pass.reference_scores[0].item<double>();
      const double total = attr.sum().item<double>();
      r.extra.push_back(completeness(fx, fb, total));
      r.extra.back()["baseline"] = s.text("baseline");
      e.passes->progress("deeplift", i + 1, e.input.size(0));
    }
    r.attribution = torch::stack(attrs);
    r.maps = r.attribution.sum(1);
    r.is_signed = true;
    return r;
  };
  return m;
}
