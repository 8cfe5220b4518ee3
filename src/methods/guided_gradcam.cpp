// Guided Grad-CAM (Selvaraju et al. 2017, sec. 3.1): guided backpropagation multiplied element-wise,
// per channel, by the Grad-CAM map bilinearly upsampled to the input resolution.
#include "methods/method.h"

namespace lumen::detail {

Method guided_gradcam() {
  Method m;
  m.name = "guided-gradcam";
  m.paper = "Selvaraju et al. 2017, Grad-CAM (Guided Grad-CAM)";
  m.needs.layer_gradients = true;
  m.needs.input_gradients = {BackwardRule::Guided};
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& g = e.input_gradients.at(BackwardRule::Guided);
    auto cam = gradcam_maps(e.layers[layer]).unsqueeze(1);
    auto up = at::upsample_bilinear2d(cam, {g.size(2), g.size(3)}, /*align_corners=*/false);
    auto attr = g * up;
    return Result{max_abs_over_channels(attr), attr};
  };
  return m;
}

}  // namespace lumen::detail
