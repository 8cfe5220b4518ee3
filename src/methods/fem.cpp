// FEM, the Feature Explanation Method (Fuad et al., IPTA 2020): gradient-free. In each channel the
// positions where the activation is unusually strong, A_k > mu_k + k sigma_k (mean and population
// standard deviation over positions, the "k-sigma rule"; k = --fem-k, 2 by default), form a binary mask
// B_k, weighted by the channel's mean activation: map = ReLU(sum_k mean(A_k) B_k).
//
// --compat pytorch-grad-cam: that library weights the activations, not the masks, by the share of
// positions above the threshold: map = ReLU(sum_k mean_ij(B_k) A_k).
#include "methods/kit/cam.h"

LUMEN_METHOD(fem) {
  Method m = evidence_cam("fem", "Fuad et al. 2020, Feature Explanation Method", Needs{}, [](const LayerTensors& t, const Evidence& e, size_t) {
    const auto& a = t.activations;
    auto mean = a.mean({2, 3}, /*keepdim=*/true);
    auto sigma = (a - mean).pow(2).mean({2, 3}, true).sqrt();
    auto mask = (a > mean + e.settings->number("fem_k") * sigma).to(a.scalar_type());
    return e.pytorch_grad_cam() ? mask.mean({2, 3}, true) * a : mean * mask;
  });
  m.params.push_back(number("fem_k", 2.0, 0, 10, "fem: a position stands out where its activation exceeds its channel's mean by this many standard deviations"));
  return m;
}
