// Grad-CAM++ (Chattopadhyay et al., WACV 2018, eq. 19 with the exponential of the score): with y = exp(S)
// the higher derivatives are powers of G = dS/dA, giving
//   a_kij = G^2 / (2 G^2 + sum_ab A_kab * G^3)   (0 where G = 0),
//   w_k = sum_ij a_kij * ReLU(G_kij),  map = ReLU(sum_k w_k A_k)
// — the closed form pytorch-grad-cam implements (its epsilon is 1e-6, lumen's 1e-7; --compat uses 1e-6).
#include "methods/cam_family.h"
#include "methods/method.h"

namespace lumen::detail {

Method gradcam_plus_plus() {
  Method m;
  m.name = "gradcam++";
  m.paper = "Chattopadhyay et al. 2018, Grad-CAM++";
  m.needs.layer_gradients = true;
  m.weighted = true;
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& a = e.layers[layer].activations;
    const auto& g = e.layers[layer].gradients;
    auto g2 = g.pow(2), g3 = g.pow(3);
    auto sum_a = a.sum({2, 3}, true);
    const double eps = e.options->compat == Compat::PytorchGradCam ? 1e-6 : 1e-7;
    auto alpha = g2 / (2 * g2 + sum_a * g3 + eps);
    alpha = torch::where(g != 0, alpha, torch::zeros_like(alpha));
    auto w = (alpha * torch::relu(g)).sum({2, 3});
    return Result::cam(weighted(w, a));
  };
  return m;
}

}  // namespace lumen::detail
