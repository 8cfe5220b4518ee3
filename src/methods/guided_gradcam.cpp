// Guided Grad-CAM (Selvaraju et al. 2017, sec. 3.1): guided backpropagation multiplied element-wise,
// per channel, by the Grad-CAM map bilinearly upsampled to the input resolution.
#include "methods/kit/cam.h"

LUMEN_METHOD(guided_gradcam) {
  Method m("guided-gradcam", "Selvaraju et al. 2017, Grad-CAM (Guided Grad-CAM)", Family::Pixel);
  m.needs = layer_gradients();
  m.needs.input_gradients = {BackwardRule::Guided};
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& g = e.input_gradients.at(BackwardRule::Guided);
    const auto& t = e.layers[layer];
    auto cam = torch::relu((t.gradients.mean({2, 3}, /*keepdim=*/true) * t.activations).sum(1)).unsqueeze(1);
    auto up = at::upsample_bilinear2d(cam, {g.size(2), g.size(3)}, /*align_corners=*/false);
    auto attr = g * up;
    return Result{max_abs_over_channels(attr), attr};
  };
  return m;
}
