// LayerCAM (Jiang et al., IEEE TIP 2021, eq. 5-6): map = ReLU(sum_k ReLU(G_k) * A_k), a spatial weight
// per position instead of one per channel.
#include "methods/kit/cam.h"

LUMEN_METHOD(layercam) {
  return weighted_cam("layercam", "Jiang et al. 2021, LayerCAM", layer_gradients(),
                      [](const LayerTensors& t, const Evidence&, size_t) { return torch::relu(t.gradients); });
}
