// Deconvnet (Zeiler & Fergus, ECCV 2014): at every ReLU-like unit the backward pass lets through the
// positive part of the gradient whatever the forward input was. Map: max over channels of |attribution|.
#include "methods/kit/pixel.h"

LUMEN_METHOD(deconvnet) {
  return input_gradient_method("deconvnet", "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks", BackwardRule::Deconvnet);
}
