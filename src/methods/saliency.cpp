// Saliency (Simonyan et al., ICLR workshop 2014, sec. 3.1): w = dS_c/dI at the image; the map is the
// maximum over colour channels of |w|. The signed gradient is kept as the attribution.
#include "methods/kit/pixel.h"

LUMEN_METHOD(saliency) {
  return input_gradient_method("saliency", "Simonyan et al. 2014, Deep Inside Convolutional Networks", BackwardRule::Plain);
}
