// HiResCAM (Draelos & Carin 2020): the element-wise product G * A summed over channels, then ReLU —
// no spatial averaging of the gradient, so the map is faithful to the model's computation.
#include "methods/kit/cam.h"

LUMEN_METHOD(hirescam) {
  return weighted_cam("hirescam", "Draelos & Carin 2020, HiResCAM", layer_gradients(),
                      [](const LayerTensors& t, const Evidence&, size_t) { return t.gradients; });
}
