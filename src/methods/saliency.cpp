// Saliency (Simonyan et al., ICLR workshop 2014, sec. 3.1): w = dS_c/dI at the image; the map is the
// maximum over colour channels of |w|. The signed gradient is kept as the attribution.
#include "methods/method.h"

namespace lumen::detail {

torch::Tensor max_abs_over_channels(const torch::Tensor& attribution) { return std::get<0>(attribution.abs().max(1)); }

Method saliency() {
  Method m;
  m.name = "saliency";
  m.paper = "Simonyan et al. 2014, Deep Inside Convolutional Networks";
  m.needs.input_gradients = {BackwardRule::Plain};
  m.per_layer = false;
  m.compute = [](const Evidence& e, size_t) {
    const auto& g = e.input_gradients.at(BackwardRule::Plain);
    return Result{max_abs_over_channels(g), g};
  };
  return m;
}

}  // namespace lumen::detail
