// ShapleyCAM (Cai et al. 2025, arXiv 2501.06261): Grad-CAM read as a second-order approximation of the
// channels' Shapley values. The weights add the curvature of the target along the activations:
//   alpha_k = mean over (i,j) of (G - 1/2 H A)_k(i,j),   map = ReLU(sum_k alpha_k A_k),
// G = dy/dA and H A the Hessian-vector product with the activations themselves (pytorch-grad-cam's
// ShapleyCAM.get_cam_weights). Above a layer where y is piecewise linear (ReLU heads explaining a
// logit) H A is zero and the map is Grad-CAM's; a softmax target (--score prob, logprob) or a smooth
// activation in the head makes them differ. The Hessian term costs one more backward through the head.
#include "methods/kit/cam.h"

LUMEN_METHOD(shapleycam) {
  return weighted_cam("shapleycam", "Cai et al. 2025, ShapleyCAM", layer_gradients(), [](const LayerTensors& t, const Evidence& e, size_t layer) {
    return (t.gradients - 0.5 * e.passes->hessian_times_activations(layer)).mean({2, 3}, /*keepdim=*/true);
  });
}
