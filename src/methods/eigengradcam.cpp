// EigenGradCAM (pytorch-grad-cam): the first principal component of G * A (class-discriminative, unlike
// EigenCAM), then ReLU.
#include "methods/kit/cam.h"

LUMEN_METHOD(eigengradcam) {
  Method m("eigengradcam", "pytorch-grad-cam (Gildenblat et al.), Eigen-Grad-CAM", Family::Cam);
  m.needs = layer_gradients();
  m.volumes = true;  // positions only as samples of the channel vectors
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& t = e.layers[layer];
    return Result{torch::relu(first_component(t.gradients * t.activations))};
  };
  return m;
}
