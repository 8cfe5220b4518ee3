#include "methods/kit/baselines.h"

namespace lumen::detail {

Param baselines_param() {
  return integer("baselines", 8, 1, 10000, "deeplift-shap, gradient-shap: references in the baseline distribution (with --baseline noise; other kinds are one)");
}

torch::Tensor baseline_distribution(const Evidence& e) {
  const Settings& s = *e.settings;
  const std::string kind = s.text("baseline");
  const auto seed = static_cast<uint64_t>(s.integer("seed"));
  const int64_t k = kind == "noise" ? s.integer("baselines") : 1;
  std::vector<torch::Tensor> refs;
  for (int64_t j = 0; j < k; ++j) refs.push_back(e.passes->reference(kind, seed + static_cast<uint64_t>(j), s.number("blur_sigma")));
  return torch::stack(refs);
}

}  // namespace lumen::detail
