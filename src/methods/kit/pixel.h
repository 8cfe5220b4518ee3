// Internal: methods whose evidence is the input gradient (saliency, backward-rule methods,
// input x gradient).
#pragma once

#include "methods/kit/method.h"

namespace lumen::detail {

// attribution = d y / d x under `rule`, times x when `times_input`; the map is the maximum over
// channels of |attribution|, or the signed channel sum when `times_input`.
Method input_gradient_method(std::string name, std::string paper, BackwardRule rule, bool times_input = false);

}  // namespace lumen::detail
