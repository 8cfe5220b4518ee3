// XGrad-CAM (Fu et al., BMVC 2020, eq. 15): w_k = sum_ij (A_kij / sum_ab A_kab) G_kij,
// map = ReLU(sum_k w_k A_k).
#include "methods/cam_family.h"
#include "methods/method.h"

namespace lumen::detail {

Method xgradcam() {
  Method m;
  m.name = "xgradcam";
  m.paper = "Fu et al. 2020, Axiom-based Grad-CAM";
  m.needs.layer_gradients = true;
  m.weighted = true;
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& t = e.layers[layer];
    auto w = (t.gradients * t.activations).sum({2, 3}) / (t.activations.sum({2, 3}) + 1e-7);
    return Result::cam(weighted(w, t.activations));
  };
  return m;
}

}  // namespace lumen::detail
