// Feature ablation (Captum's FeatureAblation with a feature mask): each group g of the image
// (kit/features.h) is replaced by the baseline on its own, and the group's attribution is the drop
//   phi_g = y(x) - y(x with g from the baseline),
// M forwards per image. Positive = removing the group lowers the target.
#include "methods/kit/features.h"

LUMEN_METHOD(feature_ablation) {
  Method m = feature_group_method("feature-ablation", "Captum FeatureAblation (leave-one-group-out perturbation)", /*samples=*/false);
  m.compute = [](const Evidence& e, size_t) {
    return explain_groups(e, "feature-ablation", [&](const Coalitions& c, at::Generator&, nlohmann::json&) {
      const int64_t groups = c.groups.count;
      const auto all_but_one = 1 - torch::eye(groups, torch::kLong);  // row g: every group but g
      return e.target_values[c.image].item<double>() - c.scores(all_but_one, 0, groups);
    });
  };
  return m;
}
