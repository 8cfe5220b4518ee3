// DeepLIFT-SHAP (Lundberg & Lee, NeurIPS 2017, sec. 5; Captum's DeepLiftShap): DeepLIFT's rescale
// attribution against each reference of a distribution (kit/baselines.h), averaged:
//   attr = mean_k (x - b_k) * m(x, b_k).
// The K pairs run as rows of the same passes. Summation-to-delta holds against the mean reference
// score: sum(attr) = y(x) - mean_k y(b_k). Map: the signed channel sum.
#include "methods/kit/baselines.h"

LUMEN_METHOD(deeplift_shap) {
  Method m("deeplift-shap", "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions (DeepLIFT over a baseline distribution)",
           Family::Pixel, Space::Input, ExtraPasses::Gradient);
  m.reduce = sum_over_channels;
  m.params = {baseline_param(), baselines_param(), blur_sigma_param(), seed_param()};
  m.compute = [](const Evidence& e, size_t) {
    const auto dist = baseline_distribution(e);  // [K,N,C,H,W]
    const int64_t n = e.input.size(0);
    return shap_result(e, [&](int64_t i) {
      const auto refs = dist.select(1, i);
      const auto x = e.input[i].unsqueeze(0).expand_as(refs);
      const auto pass = e.passes->rescale_gradient(x, refs, i);
      e.passes->progress("deeplift-shap", i + 1, n);
      return ShapImage{((x - refs) * pass.gradient).mean(0), pass.reference_scores.mean().item<double>()};
    }, {{"baseline", e.settings->text("baseline")}, {"baselines", dist.size(0)}});
  };
  return m;
}
