// Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): map = sum_k ReLU(G_k * A_k).
#include "methods/method.h"

namespace lumen::detail {

Method gradcam_elementwise() {
  Method m;
  m.name = "gradcam-elementwise";
  m.paper = "pytorch-grad-cam (Gildenblat et al.), element-wise Grad-CAM";
  m.needs.layer_gradients = true;
  m.weighted = true;
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& t = e.layers[layer];
    return Result::cam(torch::relu(t.gradients * t.activations));
  };
  return m;
}

}  // namespace lumen::detail
