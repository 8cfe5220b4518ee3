// Layer gradient x activation (Captum's LayerGradientXActivation; Shrikumar et al. 2016 at a layer):
// A * dy/dA per unit of the layer; the map sums the channels, signed — HiResCAM's sum before its ReLU.
#include "methods/kit/method.h"

LUMEN_METHOD(layer_gradient_x_activation) {
  Method m("layer-gradient-x-activation", "Captum LayerGradientXActivation (Shrikumar et al. 2016 at a layer)", Family::Cam);
  m.needs.layer_gradients = true;
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& l = e.layers.at(layer);
    Result r{(l.activations * l.gradients).sum(1)};
    r.is_signed = true;
    return r;
  };
  return m;
}
