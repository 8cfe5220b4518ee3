#include "methods/cam_family.h"

namespace lumen::detail {

torch::Tensor first_component(const torch::Tensor& stack) {
  const auto n = stack.size(0), c = stack.size(1), h = stack.size(2), w = stack.size(3);
  std::vector<torch::Tensor> maps;
  for (int64_t i = 0; i < n; ++i) {
    auto m = stack[i].reshape({c, h * w}).t().to(torch::kFloat64);  // positions x channels
    m = m - m.mean(0, true);
    auto vt = std::get<2>(at::linalg_svd(m, /*full_matrices=*/false));
    auto proj = m.matmul(vt[0]);
    auto channel_sum = m.sum(1);
    if ((proj * channel_sum).sum().item<double>() < 0) proj = -proj;
    maps.push_back(proj.reshape({h, w}).to(stack.scalar_type()));
  }
  return torch::stack(maps);
}

torch::Tensor weighted(const torch::Tensor& weights, const torch::Tensor& activations) {
  return weights.unsqueeze(-1).unsqueeze(-1) * activations;
}

}  // namespace lumen::detail
