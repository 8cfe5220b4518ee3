// Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): map = sum_k ReLU(G_k * A_k).
#include "methods/kit/cam.h"

LUMEN_METHOD(gradcam_elementwise) {
  return evidence_cam("gradcam-elementwise", "pytorch-grad-cam (Gildenblat et al.), element-wise Grad-CAM", layer_gradients(),
                      [](const LayerTensors& t, const Evidence&, size_t) { return torch::relu(t.gradients * t.activations); });
}
