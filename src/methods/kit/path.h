// Internal: the straight path from a baseline b to the input x that path methods integrate along
// (integrated gradients, internal influence, layer conductance): b + a (x - b) at the nodes a of an
// m-point rule on [0, 1] (--steps, --integration).
#pragma once

#include "methods/kit/method.h"

namespace lumen::detail {

std::vector<Param> path_params();  // steps, integration, baseline, blur_sigma, seed

void check_path(const Settings& s);  // the trapezoid rule needs two points

struct Quadrature {
  torch::Tensor nodes, weights;  // [m] float32, nodes ascending
};
// Gauss-Legendre or the trapezoid rule with `steps` points (the settings' rule unless given).
Quadrature quadrature(const Settings& s, int64_t steps = 0);

// [m,C,H,W]: b + a_k (x - b) for one image (x, b: [C,H,W]).
torch::Tensor path_points(const torch::Tensor& x, const torch::Tensor& b, const torch::Tensor& nodes);

}  // namespace lumen::detail
