#include "methods/kit/baselines.h"

#include <ATen/CPUGeneratorImpl.h>

namespace lumen::detail {

torch::Tensor baseline_reference(const Settings& s, const torch::Tensor& batch, const Preprocess& p) {
  return reference_input(batch, s.text("baseline"), p, static_cast<uint64_t>(s.integer("seed")), s.number("blur_sigma"));
}

Param baselines_param() {
  return integer("baselines", 8, 1, 10000, "deeplift-shap, gradient-shap, layer-gradient-shap: references in the baseline distribution (with --baseline noise; other kinds are one)");
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

Param stdevs_param() {
  return number32("stdevs", 0.0f, 0, 1e3, "gradient-shap, layer-gradient-shap: standard deviation of the noise added to the input per draw (model-input units)");
}

ShapDraws shap_draws(const Evidence& e, const torch::Tensor& dist, int64_t image) {
  const Settings& s = *e.settings;
  const int64_t samples = s.integer("samples");
  const double stdevs = s.number("stdevs");
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(s.integer("seed")) + static_cast<uint64_t>(image));
  const auto index = torch::randint(dist.size(0), {samples}, gen, torch::kLong);
  const auto alpha = torch::rand({samples}, gen).view({-1, 1, 1, 1});
  auto x = e.input[image].unsqueeze(0).expand({samples, -1, -1, -1});
  if (stdevs > 0) x = x + stdevs * torch::randn(x.sizes().vec(), gen);
  const auto b = dist.select(1, image).index_select(0, index);
  return {x.contiguous(), b, b + alpha * (x - b)};
}

Result shap_result(const Evidence& e, const std::function<ShapImage(int64_t image)>& image, const nlohmann::json& echo) {
  Result r;
  std::vector<torch::Tensor> attrs;
  for (int64_t i = 0; i < e.input.size(0); ++i) {
    const ShapImage one = image(i);
    attrs.push_back(one.attribution);
    r.extra.push_back(completeness(e.target_values[i].item<double>(), one.baseline_score, one.attribution.sum().item<double>(), "f_baseline_mean"));
    r.extra.back().update(echo);
  }
  r.attribution = torch::stack(attrs);
  r.maps = r.attribution.sum(1);
  r.is_signed = true;
  return r;
}

}  // namespace lumen::detail
