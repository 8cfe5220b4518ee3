// HiResCAM (Draelos & Carin 2020): the element-wise product G * A summed over channels, then ReLU —
// no spatial averaging of the gradient, so the map is faithful to the model's computation.
#include "methods/method.h"

namespace lumen::detail {

Method hirescam() {
  Method m;
  m.name = "hirescam";
  m.paper = "Draelos & Carin 2020, HiResCAM";
  m.needs.layer_gradients = true;
  m.weighted = true;
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& t = e.layers[layer];
    return Result::cam(t.gradients * t.activations);
  };
  return m;
}

}  // namespace lumen::detail
