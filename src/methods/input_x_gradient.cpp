// Input x gradient (Shrikumar et al. 2016): attribution = x * dy/dx per channel; the map sums the
// channels (signed).
#include "methods/method.h"

namespace lumen::detail {

Method input_x_gradient() {
  Method m;
  m.name = "input-x-gradient";
  m.paper = "Shrikumar et al. 2016, Not Just a Black Box";
  m.needs.input_gradients = {BackwardRule::Plain};
  m.per_layer = false;
  m.compute = [](const Evidence& e, size_t) {
    auto attr = e.input * e.input_gradients.at(BackwardRule::Plain);
    Result r{attr.sum(1), attr};
    r.is_signed = true;
    return r;
  };
  return m;
}

}  // namespace lumen::detail
