// Layer GradientSHAP (Captum's LayerGradientShap): GradientSHAP's draws (kit/baselines.h) with the
// difference and the gradient taken at the layer:
//   attr = mean_s (A(x'_s) - A(b_s)) * d y / d A at b_s + a_s (x'_s - b_s).
// In expectation sum(attr) = y(x) - E y(b); the gap of this estimate is reported. Map: the signed
// channel sum.
#include "methods/kit/baselines.h"

LUMEN_METHOD(layer_gradient_shap) {
  Method m("layer-gradient-shap", "Captum LayerGradientShap (Lundberg & Lee 2017 at a layer)", Family::Cam, Space::Layer,
           ExtraPasses::Gradient);
  m.params = {baseline_param(), baselines_param(), samples_param(), stdevs_param(), blur_sigma_param(), seed_param()};
  m.compute = [](const Evidence& e, size_t layer) {
    const auto dist = baseline_distribution(e);
    const int64_t n = e.input.size(0), samples = e.settings->integer("samples");
    Result r;
    std::vector<torch::Tensor> maps;
    for (int64_t i = 0; i < n; ++i) {
      const auto draw = shap_draws(e, dist, i);
      // The path points (for the gradient), the inputs and the baselines (for the difference) in one go.
      const auto at = e.passes->layer_at(torch::cat({draw.points, draw.inputs, draw.baselines}), i, layer);
      const auto g = at.gradients.slice(0, 0, samples);
      const auto diff = at.activations.slice(0, samples, 2 * samples) - at.activations.slice(0, 2 * samples);
      const auto attr = (diff * g).mean(0);
      maps.push_back(attr.sum(0));
      const double fb = e.passes->score(dist.select(1, i), i).mean().item<double>();
      r.extra.push_back(completeness(e.target_values[i].item<double>(), fb, attr.sum().item<double>(), "f_baseline_mean"));
      e.passes->progress("layer-gradient-shap", i + 1, n);
    }
    r.maps = torch::stack(maps);
    r.is_signed = true;
    return r;
  };
  return m;
}
