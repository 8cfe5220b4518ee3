// lumen: what a class or a unit responds to, by activation maximisation — gradient ascent on the input
// (Erhan et al. 2009 for units, with the norm constraint ||x|| = rho; Simonyan et al. 2014 for classes:
// argmax_x S_c(x) - lambda ||x||^2), with the regularisers that make the pictures readable: random
// jitter, periodic Gaussian blur and a total-variation (frequency) penalty.
#pragma once

#include <lumen/image.h>
#include <lumen/model.h>

#include <opencv2/core.hpp>

#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

struct VisualizeOptions {
  int64_t cls = -1;            // a class (its logit), or
  std::string layer;           // a unit: the mean activation of
  int64_t channel = -1;        //   this channel of this layer
  int steps = 200;
  double lr = 0.05;            // step: x += lr * g / mean(|g|), in model-input units
  double l2 = 1e-4;            // lambda of the class objective (Simonyan et al.)
  double rho = 0;              // unit objective: ||x|| = rho after every step (0: sqrt(numel) * 0.5)
  int jitter = 4;              // random shift of up to this many pixels before every step (0: off)
  int blur_every = 4;          // Gaussian blur every N steps (0: off)
  double blur_sigma = 0.5;     // pixels
  double tv = 0;               // total-variation penalty weight (0: off)
  uint64_t seed = 0;
  std::function<void(int step, double score)> progress;
};

struct Visualization {
  torch::Tensor input;               // [1,C,H,W], model-input space
  std::vector<double> scores;        // the objective's score (logit or mean activation) after each step; [0] = start
  double initial = 0, final = 0;     // scores[0], scores.back()
  int64_t top1 = -1;                 // the model's top class for the final input (class objective)
};

Visualization visualize(const Model& model, const Preprocess& pre, const VisualizeOptions& options);

// A model input [1,C,H,W] or [C,H,W] back to an 8-bit BGR image (mean/std undone, colour order
// restored, clamped to 0..255).
cv::Mat to_image(const torch::Tensor& x, const Preprocess& pre);

}  // namespace lumen
#pragma GCC visibility pop
