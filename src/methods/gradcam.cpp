// Grad-CAM (Selvaraju et al., ICCV 2017, eq. 1-2): alpha_k = mean over (i,j) of dy/dA_k(i,j);
// map = ReLU(sum_k alpha_k A_k). The counterfactual map of the paper (negated gradients) is the same
// formula applied to the negated target, which lumen's targets provide.
#include "methods/method.h"

namespace lumen::detail {

torch::Tensor gradcam_maps(const LayerTensors& t) {
  auto alpha = t.gradients.mean({2, 3}, /*keepdim=*/true);
  return torch::relu((alpha * t.activations).sum(1));
}

Method gradcam() {
  Method m;
  m.name = "gradcam";
  m.paper = "Selvaraju et al. 2017, Grad-CAM";
  m.needs.layer_gradients = true;
  m.weighted = true;
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& t = e.layers[layer];
    return Result::cam(t.gradients.mean({2, 3}, /*keepdim=*/true) * t.activations);
  };
  return m;
}

}  // namespace lumen::detail
