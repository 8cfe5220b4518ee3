#include "methods/kit/nmf.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>

namespace lumen::detail {
namespace {

torch::Tensor ratio(const torch::Tensor& numerator, torch::Tensor denominator) {
  denominator.masked_fill_(denominator == 0, static_cast<double>(std::numeric_limits<float>::epsilon()));
  return numerator / denominator;
}

double frobenius(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& h) {
  return (x - w.matmul(h)).norm().item<double>();
}

}  // namespace

Factorisation nmf(const torch::Tensor& x, int64_t k, int64_t max_iterations, double tol, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const double avg = std::sqrt(std::max(0.0, x.mean().item<double>()) / static_cast<double>(k));
  Factorisation f;
  f.h = (avg * torch::randn({k, x.size(1)}, gen, torch::kFloat32).abs()).to(x.scalar_type());
  f.w = (avg * torch::randn({x.size(0), k}, gen, torch::kFloat32).abs()).to(x.scalar_type());
  const double at_init = frobenius(x, f.w, f.h);
  double previous = at_init;
  for (int64_t it = 1; it <= max_iterations && at_init > 0; ++it) {  // X = W H = 0 needs no update
    f.w = f.w * ratio(x.matmul(f.h.t()), f.w.matmul(f.h.matmul(f.h.t())));
    f.h = f.h * ratio(f.w.t().matmul(x), f.w.t().matmul(f.w).matmul(f.h));
    f.iterations = it;
    if (tol > 0 && it % 10 == 0) {
      const double error = frobenius(x, f.w, f.h);
      if ((previous - error) / at_init < tol) break;
      previous = error;
    }
  }
  const double norm = x.norm().item<double>();
  f.relative_error = norm > 0 ? frobenius(x, f.w, f.h) / norm : 0.0;
  return f;
}

}  // namespace lumen::detail
