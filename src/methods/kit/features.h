// Internal: feature groups, for the methods that switch parts of the image on and off (feature
// ablation, Shapley value sampling, KernelSHAP, LIME; Captum's feature_mask). The image is split into M
// groups — a grid of --patch squares, or SLIC superpixels (Achanta et al. 2012, OpenCV ximgproc) —
// and a coalition z in {0,1}^M keeps the groups with z = 1 and takes the rest from --baseline.
#pragma once

#include "methods/kit/method.h"

namespace lumen::detail {

std::vector<Param> feature_group_params();  // features, patch, superpixels, baseline, blur_sigma, seed

struct FeatureGroups {
  torch::Tensor labels;  // [H,W] int64, each pixel's group in 0..count-1
  int64_t count = 0;
  std::string kind;      // "grid" | "slic"
};
FeatureGroups feature_groups(const Evidence& e, int64_t image);

// y of image `image` for each coalition row ([S,M], 1 = the group kept, else the baseline's pixels),
// pass by pass, reporting progress as `what`: done0 of this image's `per_image` rows before these.
struct Coalitions {
  const Evidence& e;
  int64_t image;
  const FeatureGroups& groups;
  torch::Tensor baseline;  // [C,H,W]
  std::string what;
  torch::Tensor scores(const torch::Tensor& coalitions, int64_t done0, int64_t per_image) const;
  torch::Tensor inputs(const torch::Tensor& coalitions) const;  // the inputs they stand for, [S,C,H,W]
};

// The loop every feature-group method shares: per image, its groups, its coalitions over the
// baseline, and a CPU generator seeded with seed + i; `phi` returns the groups' values ([M]) and may
// add facts to the image's run.json extra (which already says features, groups and baseline). The
// maps give each pixel its group's value, signed.
using GroupValues = std::function<torch::Tensor(const Coalitions&, at::Generator& gen, nlohmann::json& extra)>;
Result explain_groups(const Evidence& e, const std::string& what, const GroupValues& phi);
// A feature-group method's declaration: its settings (with --samples when it samples).
Method feature_group_method(std::string name, std::string paper, bool samples);

// Per-group values ([M]) on the groups' pixels ([H,W]).
torch::Tensor spread(const torch::Tensor& values, const FeatureGroups& groups);

// Least squares y ~ b0 + X b with sample weights w (X [S,M], y [S], w [S]), in double precision;
// alpha > 0 adds an L1 penalty, scikit-learn's Lasso objective (1 / (2 sum w)) sum w r^2 + alpha |b|_1,
// solved by cyclic coordinate descent (its defaults: 1000 sweeps, tolerance 1e-4). Returns b, [M].
torch::Tensor weighted_linear_fit(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& w, double alpha);

}  // namespace lumen::detail
