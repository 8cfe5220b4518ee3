// Grad-CAM (Selvaraju et al., ICCV 2017, eq. 1-2): alpha_k = mean over (i,j) of dy/dA_k(i,j);
// map = ReLU(sum_k alpha_k A_k). The counterfactual map of the paper (negated gradients) is the same
// formula applied to the negated target, which lumen's targets provide.
#include "methods/kit/cam.h"

LUMEN_METHOD(gradcam) {
  return weighted_cam("gradcam", "Selvaraju et al. 2017, Grad-CAM", layer_gradients(),
                      [](const LayerTensors& t, const Evidence&, size_t) { return t.gradients.mean({2, 3}, /*keepdim=*/true); });
}
