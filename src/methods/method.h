// Internal: what a map method is. A method says only what makes it different — here, how it turns a
// layer's activations A and gradients G ([N,C,h,w]) into maps ([N,h,w]); capture, targets, batching,
// upsampling, normalisation and output are shared (src/explain).
#pragma once

#include <torch/script.h>

#include <functional>
#include <string>
#include <vector>

namespace lumen::detail {

struct LayerTensors {
  torch::Tensor activations;  // A, [N,C,h,w]
  torch::Tensor gradients;    // G = d y / d A, [N,C,h,w]; undefined for gradient-free methods
};

struct CamMethod {
  std::string name;
  std::string paper;
  bool needs_gradients = true;
  std::function<torch::Tensor(const LayerTensors&)> compute;  // -> [N,h,w], raw (unnormalised)
};

// One factory per method file.
CamMethod gradcam();

const std::vector<CamMethod>& cam_methods();
const CamMethod& find_cam_method(const std::string& name);  // throws lumen::Error listing the known names

}  // namespace lumen::detail
