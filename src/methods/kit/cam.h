// Internal: the CAM path most of the family shares (pytorch-grad-cam's BaseCAM + get_cam_weights). A
// CAM here gives per-channel evidence E = w * A (or, for element-wise variants, any [N,C,h,w] stack);
// the map is ReLU(sum_k E_k), or with --eigen-smooth ReLU of E's first principal component.
#pragma once

#include "methods/kit/method.h"

namespace lumen::detail {

// Channel weights w, broadcastable to the activations ([N,C,1,1] or [N,C,h,w]).
using CamWeights = std::function<torch::Tensor(const LayerTensors& layer, const Evidence& e, size_t index)>;
// Per-channel evidence E [N,C,h,w], for CAMs that are not w * A.
using CamEvidence = std::function<torch::Tensor(const LayerTensors& layer, const Evidence& e, size_t index)>;

// A CAM whose evidence is weights * activations.
Method weighted_cam(std::string name, std::string paper, Needs needs, CamWeights weights);
// A CAM with its own per-channel evidence.
Method evidence_cam(std::string name, std::string paper, Needs needs, CamEvidence evidence);

// Plain layer gradients: what most gradient-weighted CAMs need.
Needs layer_gradients();

// First principal component of each image's [C,h,w] stack, as a [h,w] map: positions are samples,
// channels are features, centred over positions (pytorch-grad-cam's get_2d_projection). A decomposition leaves
// the component's sign arbitrary; lumen picks the sign that correlates positively with the centred
// channel sum, so maps are reproducible across LAPACK builds.
torch::Tensor first_component(const torch::Tensor& stack);  // [N,C,h,w] -> [N,h,w]

}  // namespace lumen::detail
