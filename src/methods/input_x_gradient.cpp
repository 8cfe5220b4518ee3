// Input x gradient (Shrikumar et al. 2016): attribution = x * dy/dx per channel; the map sums the
// channels (signed).
#include "methods/kit/pixel.h"

LUMEN_METHOD(input_x_gradient) {
  return input_gradient_method("input-x-gradient", "Shrikumar et al. 2016, Not Just a Black Box", BackwardRule::Plain, /*times_input=*/true);
}
