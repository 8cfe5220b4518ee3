// Internal: arithmetic shared by the CAM-family methods.
#pragma once

#include <torch/script.h>

namespace lumen::detail {

// First principal component of each image's [C,h,w] stack, as a [h,w] map: positions are samples,
// channels are features, centred over positions (pytorch-grad-cam's get_2d_projection). An SVD leaves
// the component's sign arbitrary; lumen picks the sign that correlates positively with the centred
// channel sum, so maps are reproducible across LAPACK builds.
torch::Tensor first_component(const torch::Tensor& stack);  // [N,C,h,w] -> [N,h,w]

// The per-channel evidence w_k A_k for weights [N,C] (the map is ReLU of its channel sum).
torch::Tensor weighted(const torch::Tensor& weights, const torch::Tensor& activations);

}  // namespace lumen::detail
