// Guided backpropagation (Springenberg et al., ICLR workshop 2015, sec. 3.4): at every ReLU-like unit the
// backward pass lets through only gradient that is positive and where the forward input was positive
// (for ReLU6/clamp: inside the linear region). The rule is applied to lumen's copy of the graph
// (src/model/tap.cpp). Map: max over channels of |attribution|.
#include "methods/method.h"

namespace lumen::detail {

Method guided_backprop() {
  Method m;
  m.name = "guided-backprop";
  m.paper = "Springenberg et al. 2015, Striving for Simplicity";
  m.needs.input_gradients = {BackwardRule::Guided};
  m.per_layer = false;
  m.compute = [](const Evidence& e, size_t) {
    const auto& g = e.input_gradients.at(BackwardRule::Guided);
    return Result{max_abs_over_channels(g), g};
  };
  return m;
}

}  // namespace lumen::detail
