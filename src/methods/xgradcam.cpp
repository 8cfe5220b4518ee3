// XGrad-CAM (Fu et al., BMVC 2020, eq. 15): w_k = sum_ij (A_kij / sum_ab A_kab) G_kij,
// map = ReLU(sum_k w_k A_k).
#include "methods/kit/cam.h"

LUMEN_METHOD(xgradcam) {
  return weighted_cam("xgradcam", "Fu et al. 2020, Axiom-based Grad-CAM", layer_gradients(), [](const LayerTensors& t, const Evidence&, size_t) {
    auto w = (t.gradients * t.activations).sum({2, 3}) / (t.activations.sum({2, 3}) + 1e-7);
    return w.unsqueeze(-1).unsqueeze(-1);
  });
}
