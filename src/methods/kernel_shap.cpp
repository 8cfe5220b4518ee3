// KernelSHAP (Lundberg & Lee, NeurIPS 2017, theorem 2; Captum's KernelShap): Shapley values of the M
// groups (kit/features.h) as the weighted least-squares fit y(z) ~ phi_0 + sum_g phi_g z_g over random
// coalitions z. The coalitions are drawn from the Shapley kernel itself — a size k in 1..M-1 with
// probability proportional to (M - 1) / (k (M - k)), then k groups uniformly — so every drawn row
// weighs 1; the empty and the full coalition join with weight 1e6 (Captum's stand-in for infinity),
// which ties sum(phi) to y(x) - y(baseline). Draws of image i (CPU generator seeded with seed + i): the
// sizes (torch::multinomial, --samples of them), then one torch::randperm(M) per row whose first k
// groups are kept. --samples + 2 forwards per image.
#include "methods/kit/features.h"

LUMEN_METHOD(kernel_shap) {
  Method m = feature_group_method("kernel-shap", "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions (Kernel SHAP)",
                                  /*samples=*/true);
  m.compute = [](const Evidence& e, size_t) {
    return explain_groups(e, "kernel-shap", [&](const Coalitions& c, at::Generator& gen, nlohmann::json& extra) {
      const int64_t samples = e.settings->integer("samples"), mcount = c.groups.count;
      auto z = torch::zeros({samples + 2, mcount}, torch::kLong);
      z[1].fill_(1);  // row 0: nothing kept, row 1: everything
      if (mcount > 1) {
        const auto k = torch::arange(1, mcount, torch::kFloat64);
        const auto sizes = torch::multinomial((mcount - 1) / (k * (mcount - k)), samples, /*replacement=*/true, gen) + 1;
        for (int64_t row = 0; row < samples; ++row) {
          const auto order = torch::randperm(mcount, gen, torch::kLong);
          z[row + 2].index_fill_(0, order.slice(0, 0, sizes[row].item<int64_t>()), 1);
        }
      }
      const auto y = c.scores(z, 0, samples + 2);
      auto w = torch::ones({samples + 2}, torch::kFloat64);
      w.slice(0, 0, 2).fill_(1e6);
      const auto phi = weighted_linear_fit(z, y, w, 0.0);
      const double fx = y[1].item<double>(), fb = y[0].item<double>(), total = phi.sum().item<double>();
      extra.update(completeness(fx, fb, total));
      extra["samples"] = samples;
      return phi;
    });
  };
  return m;
}
