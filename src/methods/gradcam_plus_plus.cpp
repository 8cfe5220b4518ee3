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
    // 2 G^2 + s G^3 = G^2 (2 + s G), in place: Grad-CAM++ was the costliest of six CAMs in one request.
    // Where G = 0 the numerator is 0 and the denominator eps, so alpha is 0 as the formula says.
    const auto g2 = g * g;
    auto denominator = (a.sum({2, 3}, true) * g).add_(2).mul_(g2).add_(e.pytorch_grad_cam() ? 1e-6 : 1e-7);
    return (torch::relu(g).mul_(g2).div_(denominator)).sum({2, 3}).unsqueeze(-1).unsqueeze(-1);
  });
}
