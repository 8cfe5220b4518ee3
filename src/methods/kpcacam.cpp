// KPCA-CAM (Karmani et al. 2024, arXiv 2410.00267): EigenCAM with kernel PCA. The layer's positions are
// samples and its channels features, centred over positions (as for EigenCAM); K_ij = k(x_i, x_j) with
//   sigmoid tanh(gamma <x,y> + 1) (default), rbf exp(-gamma |x-y|^2), poly (gamma <x,y> + 1)^3,
//   cosine <x,y> / (|x| |y|), linear <x,y>;  gamma = --kpca-gamma, 0 meaning 1 / channels
// (scikit-learn's KernelPCA defaults, which pytorch-grad-cam calls). K is centred in feature space
// (K - 1K - K1 + 1K1, 1 the matrix of 1/n), and the map is the first component's projection
// sqrt(lambda_1) v_1 over the positions, then ReLU.
// The sign of v_1 is arbitrary. lumen picks it as for EigenCAM: positive correlation with the centred
// channel sum. --compat pytorch-grad-cam takes scikit-learn's (svd_flip: the largest |entry| positive).
#include "methods/kit/cam.h"

namespace lumen::detail {
namespace {

torch::Tensor kernel_matrix(const torch::Tensor& x, const std::string& kind, double gamma) {
  const auto dot = x.matmul(x.t());
  if (kind == "linear") return dot;
  if (kind == "sigmoid") return torch::tanh(gamma * dot + 1);
  if (kind == "poly") return (gamma * dot + 1).pow(3);
  if (kind == "rbf") {
    const auto sq = x.pow(2).sum(1, true);
    return torch::exp(-gamma * (sq + sq.t() - 2 * dot).clamp_min(0));
  }
  // cosine: rows of zero norm stay zero (scikit-learn's normalize).
  const auto norm = x.norm(2, 1, true);
  const auto unit = x / torch::where(norm > 0, norm, torch::ones_like(norm));
  return unit.matmul(unit.t());
}

}  // namespace
}  // namespace lumen::detail

LUMEN_METHOD(kpcacam) {
  Method m("kpcacam", "Karmani et al. 2024, KPCA-CAM", Family::Cam);
  m.params = {choice("kpca_kernel", "sigmoid", {"sigmoid", "rbf", "poly", "cosine", "linear"}, "kpcacam: the kernel of the kernel PCA"),
              number("kpca_gamma", 0, 0, 1e6, "kpcacam: the kernel's gamma (sigmoid, rbf, poly); 0: 1 / channels")};
  m.volumes = true;  // positions only as samples of the channel vectors
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& a = e.layers[layer].activations;
    const auto n = a.size(0), c = a.size(1), h = a.size(2), w = a.size(3);
    const std::string kind = e.settings->text("kpca_kernel");
    const double gamma = e.settings->number("kpca_gamma") > 0 ? e.settings->number("kpca_gamma") : 1.0 / static_cast<double>(c);
    std::vector<torch::Tensor> maps;
    for (int64_t i = 0; i < n; ++i) {
      auto x = a[i].reshape({c, h * w}).t().to(torch::kFloat64);  // positions x channels
      x = x - x.mean(0, true);
      auto k = kernel_matrix(x, kind, gamma);
      k = k - k.mean(0, true) - k.mean(1, true) + k.mean();
      auto [values, vectors] = at::linalg_eigh(k);  // ascending
      auto v = vectors.select(1, vectors.size(1) - 1);
      const double lambda = std::max(0.0, values[values.size(0) - 1].item<double>());
      const bool flip = e.pytorch_grad_cam() ? v[v.abs().argmax()].item<double>() < 0 : (v * x.sum(1)).sum().item<double>() < 0;
      auto proj = (flip ? -v : v) * std::sqrt(lambda);
      maps.push_back(proj.reshape({h, w}).to(a.scalar_type()));
    }
    return Result{torch::relu(torch::stack(maps))};
  };
  return m;
}
