#include "methods/kit/path.h"

#include <lumen/error.h>

#include <cmath>

namespace lumen::detail {
namespace {

// Gauss-Legendre nodes and weights on [0, 1], by Newton's method on the Legendre polynomial — a few
// lines, where a quadrature library would be a new dependency for one function.
void gauss_legendre(int m, std::vector<double>& nodes, std::vector<double>& weights) {
  nodes.assign(m, 0);
  weights.assign(m, 0);
  for (int i = 0; i < m; ++i) {
    double z = std::cos(M_PI * (i + 0.75) / (m + 0.5)), dp = 0;
    for (int it = 0; it < 100; ++it) {
      double p0 = 1, p1 = z;
      for (int k = 2; k <= m; ++k) {
        double p2 = ((2 * k - 1) * z * p1 - (k - 1) * p0) / k;
        p0 = p1;
        p1 = p2;
      }
      dp = m * (z * p1 - p0) / (z * z - 1);
      double dz = p1 / dp;
      z -= dz;
      if (std::abs(dz) < 1e-15) break;
    }
    nodes[i] = 0.5 * (1 - z);
    weights[i] = 1.0 / ((1 - z * z) * dp * dp);  // = 2/((1-z^2) P'^2) scaled by 1/2 for [0, 1]
  }
}

void trapezoid(int m, std::vector<double>& nodes, std::vector<double>& weights) {
  if (m < 2) throw Error("the trapezoid rule needs at least 2 steps");
  nodes.resize(m);
  weights.assign(m, 1.0 / (m - 1));
  for (int i = 0; i < m; ++i) nodes[i] = static_cast<double>(i) / (m - 1);
  weights.front() *= 0.5;
  weights.back() *= 0.5;
}

}  // namespace

std::vector<Param> path_params() {
  return {integer("steps", 50, 1, 100000, "path methods (integrated-gradients, internal-influence, layer-conductance): points of the integration rule"),
          choice("integration", "gauss-legendre", {"gauss-legendre", "trapezoid"}, "path methods: the integration rule"),
          baseline_param(), blur_sigma_param(), seed_param()};
}

void check_path(const Settings& s) {
  if (s.text("integration") == "trapezoid" && s.integer("steps") < 2)
    throw Error("--integration trapezoid needs --steps of at least 2, got " + std::to_string(s.integer("steps")));
}

Quadrature quadrature(const Settings& s, int64_t steps) {
  const int m = static_cast<int>(steps > 0 ? steps : s.integer("steps"));
  std::vector<double> nodes, weights;
  if (s.text("integration") == "gauss-legendre") gauss_legendre(m, nodes, weights);
  else trapezoid(m, nodes, weights);
  return {torch::tensor(nodes, torch::kFloat32), torch::tensor(weights, torch::kFloat32)};
}

torch::Tensor path_points(const torch::Tensor& x, const torch::Tensor& b, const torch::Tensor& nodes) {
  return b.unsqueeze(0) + nodes.view({-1, 1, 1, 1}) * (x - b).unsqueeze(0);
}

}  // namespace lumen::detail
