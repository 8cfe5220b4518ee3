// Layer DeepLIFT-SHAP (Captum's LayerDeepLiftShap): layer DeepLIFT against each reference of a
// distribution (kit/baselines.h), averaged:
//   attr = mean_k (A(x) - A(b_k)) * m(x, b_k)   at the layer, m = d y / d A under the rescale rule.
// The K pairs of an image run as rows of the same passes. Summation-to-delta holds against the mean
// reference score: sum(attr) = y(x) - mean_k y(b_k). Map: the signed channel sum.
#include "methods/kit/baselines.h"

LUMEN_METHOD(layer_deeplift_shap) {
  Method m("layer-deeplift-shap", "Captum LayerDeepLiftShap (Lundberg & Lee 2017 at a layer)", Family::Cam, Space::Layer,
           ExtraPasses::Gradient);
  m.params = {baseline_param(), baselines_param(), blur_sigma_param(), seed_param()};
  m.compute = [](const Evidence& e, size_t layer) {
    const auto dist = baseline_distribution(e);  // [K,N,C,H,W]
    const int64_t k = dist.size(0), n = e.input.size(0);
    Result r;
    std::vector<torch::Tensor> maps;
    for (int64_t i = 0; i < n; ++i) {
      const auto refs = dist.select(1, i);
      const auto pass = e.passes->rescale_layer_at(e.input[i].unsqueeze(0).expand_as(refs), refs, i, layer);
      const auto attr = ((pass.activations - pass.reference_activations) * pass.gradient).mean(0);
      maps.push_back(attr.sum(0));
      r.extra.push_back(completeness(e.target_values[i].item<double>(), pass.reference_scores.mean().item<double>(), attr.sum().item<double>(),
                                     "f_baseline_mean"));
      r.extra.back().update({{"baseline", e.settings->text("baseline")}, {"baselines", k}});
      e.passes->progress("layer-deeplift-shap", i + 1, n);
    }
    r.maps = torch::stack(maps);
    r.is_signed = true;
    return r;
  };
  return m;
}
