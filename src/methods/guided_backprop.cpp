// Guided backpropagation (Springenberg et al., ICLR workshop 2015, sec. 3.4): at every ReLU-like unit the
// backward pass lets through only gradient that is positive and where the forward input was positive
// (for ReLU6/clamp: inside the linear region). The rule is applied to lumen's copy of the graph
// (src/model/tap.cpp). Map: max over channels of |attribution|.
#include "methods/kit/pixel.h"

LUMEN_METHOD(guided_backprop) {
  return input_gradient_method("guided-backprop", "Springenberg et al. 2015, Striving for Simplicity", BackwardRule::Guided);
}
