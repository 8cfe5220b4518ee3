// Shapley value sampling (Castro et al. 2009; Strumbelj & Kononenko 2010; Captum's
// ShapleyValueSampling): over --samples random orders of the M groups (kit/features.h), the groups are
// switched from the baseline to the image one by one, and each group's attribution is its mean
// marginal gain
//   phi_g = mean over orders of y(groups before g, and g) - y(groups before g),
// an unbiased estimate of the Shapley value; the M gains of one order sum to y(x) - y(baseline)
// exactly, so completeness holds for any number of orders. Orders of image i: torch::randperm(M) drawn
// --samples times from a CPU generator seeded with seed + i. samples * M + 1 forwards per image.
#include "methods/kit/features.h"

LUMEN_METHOD(shapley_sampling) {
  Method m = feature_group_method("shapley-sampling", "Castro et al. 2009, Polynomial calculation of the Shapley value based on sampling",
                                  /*samples=*/true);
  m.compute = [](const Evidence& e, size_t) {
    return explain_groups(e, "shapley-sampling", [&](const Coalitions& c, at::Generator& gen, nlohmann::json& extra) {
      const int64_t samples = e.settings->integer("samples"), mcount = c.groups.count, per = samples * mcount + 1;
      std::vector<torch::Tensor> orders;
      for (int64_t k = 0; k < samples; ++k) orders.push_back(torch::randperm(mcount, gen, torch::kLong));
      const auto order = torch::stack(orders);  // [S,M]
      // Row (k, j) keeps the first j + 1 groups of order k: those whose rank in the order is at most j.
      const auto rank = torch::empty_like(order).scatter_(1, order, torch::arange(mcount, torch::kLong).expand({samples, -1}));
      const auto coalitions = (rank.unsqueeze(1) <= torch::arange(mcount, torch::kLong).view({1, -1, 1})).to(torch::kLong).view({-1, mcount});
      const auto y0 = c.scores(torch::zeros({1, mcount}, torch::kLong), 0, per);
      const auto y = torch::cat({y0.expand({samples, 1}), c.scores(coalitions, 1, per).view({samples, mcount})}, 1);
      const auto gains = y.slice(1, 1) - y.slice(1, 0, mcount);  // [S,M]: the gain of the order's j-th group
      const auto phi = torch::zeros({samples, mcount}, torch::kFloat64).scatter_(1, order, gains).mean(0);
      const double fx = e.target_values[c.image].item<double>(), fb = y0[0].item<double>(), total = phi.sum().item<double>();
      extra.update(completeness(fx, fb, total));
      extra["samples"] = samples;
      return phi;
    });
  };
  return m;
}
