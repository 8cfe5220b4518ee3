// EigenCAM (Muhammad & Yeasin, IJCNN 2020): the activations' projection on their first principal
// component (see first_component for the sign), then ReLU. Gradient-free and class-agnostic.
#include "methods/kit/cam.h"

LUMEN_METHOD(eigencam) {
  Method m("eigencam", "Muhammad & Yeasin 2020, Eigen-CAM", Family::Cam);
  m.volumes = true;  // positions only as samples of the channel vectors
  m.compute = [](const Evidence& e, size_t layer) { return Result{torch::relu(first_component(e.layers[layer].activations))}; };
  return m;
}
