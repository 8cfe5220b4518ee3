// Grad-CAM++ (Chattopadhyay et al., WACV 2018, eq. 19 with the exponential of the score): with y = exp(S)
// the higher derivatives are powers of G = dS/dA, giving
//   a_kij = G^2 / (2 G^2 + sum_ab A_kab * G^3)   (0 where G = 0),
//   w_k = sum_ij a_kij * ReLU(G_kij),  map = ReLU(sum_k w_k A_k)
// — the closed form pytorch-grad-cam implements (its epsilon is 1e-6, lumen's 1e-7; --compat uses 1e-6).
#include "methods/kit/cam.h"

LUMEN_METHOD(gradcam_plus_plus) {
  return weighted_cam("gradcam++", "Chattopadhyay et al. 2018, Grad-CAM++", layer_gradients(), [](const LayerTensors& t, const Evidence& e, size_t) {
    const auto& a = t.activations;
    const auto& g = t.gradients;
    auto g2 = g.pow(2), g3 = g.pow(3);
    auto alpha = g2 / (2 * g2 + a.sum({2, 3}, true) * g3 + (e.pytorch_grad_cam() ? 1e-6 : 1e-7));
    alpha = torch::where(g != 0, alpha, torch::zeros_like(alpha));
    return (alpha * torch::relu(g)).sum({2, 3}).unsqueeze(-1).unsqueeze(-1);
  });
}
