// LayerCAM (Jiang et al., IEEE TIP 2021, eq. 5-6): map = ReLU(sum_k ReLU(G_k) * A_k), a spatial weight
// per position instead of one per channel.
#include "methods/method.h"

namespace lumen::detail {

Method layercam() {
  Method m;
  m.name = "layercam";
  m.paper = "Jiang et al. 2021, LayerCAM";
  m.needs.layer_gradients = true;
  m.weighted = true;
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& t = e.layers[layer];
    return Result::cam(torch::relu(t.gradients) * t.activations);
  };
  return m;
}

}  // namespace lumen::detail
