// LIME (Ribeiro et al., KDD 2016; Captum's Lime with its defaults): a sparse linear model of the
// target over the M groups (kit/features.h), fitted on --samples random coalitions z (each group kept
// with probability 1/2), each weighted by its closeness to the image,
//   w = exp(-d^2 / (2 width^2)),  d = 1 - cos(x, x_z) in model-input space (Captum's exponential
//   cosine kernel, --lime-width 1),
// and fitted with scikit-learn's Lasso objective (--lime-alpha 0.01, Captum's SkLearnLasso; 0 for
// plain weighted least squares). The map is each group's coefficient. Draws of image i: torch::rand
// ([S, M]) < 0.5 from a CPU generator seeded with seed + i. --samples forwards per image.
#include "methods/kit/features.h"

LUMEN_METHOD(lime) {
  Method m = feature_group_method("lime", "Ribeiro et al. 2016, \"Why Should I Trust You?\" Explaining the Predictions of Any Classifier",
                                  /*samples=*/true);
  m.params.push_back(number("lime_width", 1.0, 0, 1e6, "lime: width of the exponential kernel on the cosine distance"));
  m.params.back().above_min = true;
  m.params.push_back(number("lime_alpha", 0.01, 0, 1e6, "lime: L1 penalty of the linear fit (scikit-learn's Lasso alpha); 0: least squares"));
  m.compute = [](const Evidence& e, size_t) {
    return explain_groups(e, "lime", [&](const Coalitions& c, at::Generator& gen, nlohmann::json& extra) {
      const Settings& s = *e.settings;
      const int64_t samples = s.integer("samples"), step = e.passes->rows_per_pass();
      const double width = s.number("lime_width");
      const auto z = (torch::rand({samples, c.groups.count}, gen) < 0.5).to(torch::kLong);
      const auto y = c.scores(z, 0, samples);
      // The distances from the inputs the coalitions stand for, a pass's worth at a time.
      std::vector<torch::Tensor> d;
      const auto x = e.input[c.image].flatten().to(torch::kFloat64);
      for (int64_t start = 0; start < samples; start += step) {
        const auto rows = c.inputs(z.slice(0, start, std::min(samples, start + step))).flatten(1).to(torch::kFloat64);
        d.push_back(1 - torch::cosine_similarity(rows, x.unsqueeze(0), 1, 1e-8));
      }
      const auto dist = torch::cat(d);
      const auto phi = weighted_linear_fit(z, y, torch::exp(-dist * dist / (2 * width * width)), s.number("lime_alpha"));
      extra.update({{"samples", samples}, {"nonzero", phi.ne(0).sum().item<int64_t>()}});
      return phi;
    });
  };
  return m;
}
