// GradientSHAP (Lundberg & Lee 2017; Erion et al.'s expected gradients; Captum's GradientShap): the
// expectation of (x' - b) * d y / d x at a random point b + a (x' - b) of the path from a baseline b of
// the distribution (kit/baselines.h) to a noisy input x' = x + N(0, --stdevs^2), a ~ U(0, 1), over
// --samples draws (kit/baselines.h says how they are drawn):
//   attr = mean_s (x'_s - b_s) * grad(b_s + a_s (x'_s - b_s)).
// In expectation sum(attr) = y(x) - E y(b); the gap of this estimate is reported. Map: the signed
// channel sum.
#include "methods/kit/baselines.h"

LUMEN_METHOD(gradient_shap) {
  Method m("gradient-shap", "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions (expected gradients)",
           Family::Pixel, Space::Input, ExtraPasses::Gradient);
  m.reduce = sum_over_channels;
  m.params = {baseline_param(), baselines_param(), samples_param(), stdevs_param(), blur_sigma_param(), seed_param()};
  m.compute = [](const Evidence& e, size_t) {
    const Settings& s = *e.settings;
    const auto dist = baseline_distribution(e);
    const int64_t n = e.input.size(0), samples = s.integer("samples");
    return shap_result(e, [&](int64_t i) {
      const auto draw = shap_draws(e, dist, i);
      std::vector<torch::Tensor> parts;
      for (int64_t start = 0; start < samples; start += e.passes->rows_per_pass()) {
        const int64_t end = std::min<int64_t>(samples, start + e.passes->rows_per_pass());
        parts.push_back(e.passes->gradient(draw.points.slice(0, start, end), i, BackwardRule::Plain));
        e.passes->progress("gradient-shap", i * samples + end, n * samples);
      }
      return ShapImage{((draw.inputs - draw.baselines) * torch::cat(parts)).mean(0), e.passes->score(dist.select(1, i), i).mean().item<double>()};
    }, {{"baseline", s.text("baseline")}, {"baselines", dist.size(0)}, {"samples", samples}, {"stdevs", s.number("stdevs")}});
  };
  return m;
}
