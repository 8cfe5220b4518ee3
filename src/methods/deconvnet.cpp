// Deconvnet (Zeiler & Fergus, ECCV 2014): at every ReLU-like unit the backward pass lets through the
// positive part of the gradient whatever the forward input was. Map: max over channels of |attribution|.
#include "methods/method.h"

namespace lumen::detail {

Method deconvnet() {
  Method m;
  m.name = "deconvnet";
  m.paper = "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks";
  m.needs.input_gradients = {BackwardRule::Deconvnet};
  m.per_layer = false;
  m.compute = [](const Evidence& e, size_t) {
    const auto& g = e.input_gradients.at(BackwardRule::Deconvnet);
    return Result{max_abs_over_channels(g), g};
  };
  return m;
}

}  // namespace lumen::detail
