// Internal: the reference inputs of path and Shapley methods (DeepLIFT-SHAP, GradientSHAP) as a
// distribution: --baselines K references of kind --baseline, the k-th drawn with seed + k. Only noise
// is random; any other kind is one reference, so its distribution has one member.
#pragma once

#include "methods/kit/method.h"

namespace lumen::detail {

// The --baseline reference of the whole batch (lumen::reference_input, [N,C,H,W]): DeepLIFT's
// Needs::rescale_reference.
torch::Tensor baseline_reference(const Settings& s, const torch::Tensor& batch, const Preprocess& p);

Param baselines_param();  // "baselines": K
// [K,N,C,H,W] (K = 1 unless the kind is noise).
torch::Tensor baseline_distribution(const Evidence& e);

// GradientSHAP's random draws for image `image` of the batch, from the distribution `dist`: --samples
// draws, each a noisy input x_s = x + N(0, --stdevs^2), a baseline b_s of the distribution and the
// point b_s + a_s (x_s - b_s), a_s ~ U(0, 1). They come from a CPU generator seeded with seed + image,
// in this order: the baseline indices (randint K, [S]), the points on the path (rand [S]), then the
// noise (randn [S,C,H,W], only when --stdevs > 0), so a run is reproducible in Python with
// torch.Generator. Shared by gradient-shap and layer-gradient-shap.
struct ShapDraws {
  torch::Tensor inputs, baselines, points;  // [S,C,H,W] each
};
Param stdevs_param();  // "stdevs"
ShapDraws shap_draws(const Evidence& e, const torch::Tensor& dist, int64_t image);

// The SHAP methods' common ending, image by image: `image(i)` gives image i's attribution [C,H,W] and
// the mean score of its baselines. Stacked into a signed result whose map is the channel sum, each
// image's extra record holding its completeness gap (sum(attr) against y(x) - mean y(b)) and `echo`.
struct ShapImage {
  torch::Tensor attribution;
  double baseline_score = 0;
};
Result shap_result(const Evidence& e, const std::function<ShapImage(int64_t image)>& image, const nlohmann::json& echo);

}  // namespace lumen::detail
