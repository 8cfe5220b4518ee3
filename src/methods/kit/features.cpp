#include "methods/kit/features.h"

#include <lumen/error.h>

#include <ATen/CPUGeneratorImpl.h>
#include <opencv2/imgproc.hpp>
#include <opencv2/ximgproc/slic.hpp>

#include <cmath>

namespace lumen::detail {

std::vector<Param> feature_group_params() {
  return {choice("features", "grid", {"grid", "slic"}, "feature-group methods: the groups, squares of --patch or SLIC superpixels"),
          patch_param(),
          integer("superpixels", 50, 2, 100000, "feature-group methods: about how many SLIC superpixels (--features slic)"),
          baseline_param(), blur_sigma_param(), seed_param()};
}

FeatureGroups feature_groups(const Evidence& e, int64_t image) {
  const Settings& s = *e.settings;
  const int64_t h = e.input.size(2), w = e.input.size(3);
  FeatureGroups g;
  g.kind = s.text("features");
  if (g.kind == "grid") {
    const int64_t patch = s.integer("patch"), cols = (w + patch - 1) / patch;
    auto ys = torch::arange(h, torch::kLong).div(patch, "floor").view({-1, 1}), xs = torch::arange(w, torch::kLong).div(patch, "floor").view({1, -1});
    g.labels = ys * cols + xs;
    g.count = ((h + patch - 1) / patch) * cols;
    if (g.count < 2)
      throw Error("--patch " + std::to_string(patch) + " makes one feature group of the " + std::to_string(h) + "x" + std::to_string(w) +
                  " input: nothing to compare it with; use a smaller --patch");
    return g;
  }
  // SLIC on the image's own pixels (the preprocessing undone), in CIELAB as the paper does.
  const auto px = e.passes->pixels()[image].clamp(0, 255).round().to(torch::kUInt8).permute({1, 2, 0}).contiguous();
  cv::Mat rgb(static_cast<int>(h), static_cast<int>(w), CV_8UC3, px.data_ptr<uint8_t>()), lab;
  cv::cvtColor(rgb, lab, cv::COLOR_RGB2Lab);
  const int region = std::max(2, static_cast<int>(std::lround(std::sqrt(static_cast<double>(h * w) / static_cast<double>(s.integer("superpixels"))))));
  auto slic = cv::ximgproc::createSuperpixelSLIC(lab, cv::ximgproc::SLIC, region, 10.0f);
  slic->iterate(10);
  slic->enforceLabelConnectivity(25);
  cv::Mat labels;
  slic->getLabels(labels);
  // Relabelled densely (connectivity enforcement can leave gaps in the numbering).
  auto raw = torch::from_blob(labels.data, {h, w}, torch::kInt32).to(torch::kLong);
  auto [unique, inverse] = at::_unique(raw.flatten(), /*sorted=*/true, /*return_inverse=*/true);
  g.labels = inverse.view({h, w});
  g.count = unique.size(0);
  return g;
}

Method feature_group_method(std::string name, std::string paper, bool samples) {
  Method m(std::move(name), std::move(paper), Family::Perturbation, Space::Input, ExtraPasses::Forward);
  m.params = feature_group_params();
  if (samples) m.params.push_back(samples_param());
  return m;
}

Result explain_groups(const Evidence& e, const std::string& what, const GroupValues& phi) {
  const Settings& s = *e.settings;
  const auto seed = static_cast<uint64_t>(s.integer("seed"));
  const auto b = e.passes->reference(s.text("baseline"), seed, s.number("blur_sigma"));
  Result r;
  std::vector<torch::Tensor> maps;
  for (int64_t i = 0; i < e.input.size(0); ++i) {
    const auto groups = feature_groups(e, i);
    const Coalitions c{e, i, groups, b[i], what};
    auto gen = at::detail::createCPUGenerator(seed + static_cast<uint64_t>(i));
    nlohmann::json extra{{"features", groups.kind}, {"groups", groups.count}, {"baseline", s.text("baseline")}};
    maps.push_back(spread(phi(c, gen, extra), groups));
    r.extra.push_back(std::move(extra));
  }
  r.maps = torch::stack(maps);
  r.is_signed = true;
  return r;
}

torch::Tensor Coalitions::inputs(const torch::Tensor& coalitions) const {
  const auto keep = coalitions.to(torch::kBool).index_select(1, groups.labels.flatten()).view({-1, 1, groups.labels.size(0), groups.labels.size(1)});
  return torch::where(keep, e.input[image].unsqueeze(0), baseline.unsqueeze(0));
}

torch::Tensor Coalitions::scores(const torch::Tensor& coalitions, int64_t done0, int64_t per_image) const {
  std::vector<torch::Tensor> parts;
  const int64_t rows = coalitions.size(0), step = e.passes->rows_per_pass();
  for (int64_t start = 0; start < rows; start += step) {
    const int64_t end = std::min(rows, start + step);
    parts.push_back(e.passes->score(inputs(coalitions.slice(0, start, end)), image));
    e.passes->progress(what, image * per_image + done0 + end, e.input.size(0) * per_image);
  }
  return torch::cat(parts).to(torch::kFloat64);
}

torch::Tensor spread(const torch::Tensor& values, const FeatureGroups& groups) {
  return values.to(torch::kFloat32).index_select(0, groups.labels.flatten()).view(groups.labels.sizes());
}

torch::Tensor weighted_linear_fit(const torch::Tensor& x_in, const torch::Tensor& y_in, const torch::Tensor& w_in, double alpha) {
  const auto x = x_in.to(torch::kFloat64), y = y_in.to(torch::kFloat64), w = w_in.to(torch::kFloat64);
  const double wsum = w.sum().item<double>();
  if (!(wsum > 0)) throw Error("the samples' weights sum to zero: no fit is possible (raise --samples)");
  // The intercept is not penalised: centre X and y on their weighted means, fit b, then b0 follows.
  const auto xm = (w.view({-1, 1}) * x).sum(0) / wsum, ym = (w * y).sum() / wsum;
  const auto xc = x - xm, yc = y - ym;
  if (alpha <= 0) {
    const auto sw = w.sqrt().view({-1, 1});
    // Minimum-norm least squares (gelsd) so that groups no sample tells apart share their effect.
    const auto fit = at::linalg_lstsq(sw * xc, (sw.squeeze(1) * yc).unsqueeze(1), c10::nullopt, c10::string_view("gelsd"));
    return std::get<0>(fit).squeeze(1);
  }
  // Cyclic coordinate descent on scikit-learn's Lasso objective with sample weights, in plain loops:
  // M is at most a few hundred groups. (scikit-learn is Python; no Debian C++ package fits a weighted
  // lasso, and the rule is ten lines.)
  const int64_t s = x.size(0), m = x.size(1);
  auto xa = xc.contiguous(), ya = yc.contiguous(), wa = (w / wsum).contiguous();
  const double* X = xa.data_ptr<double>();
  const double* W = wa.data_ptr<double>();
  std::vector<double> b(static_cast<size_t>(m), 0.0), r(ya.data_ptr<double>(), ya.data_ptr<double>() + s), norm(static_cast<size_t>(m), 0.0);
  for (int64_t j = 0; j < m; ++j)
    for (int64_t i = 0; i < s; ++i) norm[static_cast<size_t>(j)] += W[i] * X[i * m + j] * X[i * m + j];
  for (int sweep = 0; sweep < 1000; ++sweep) {
    double largest = 0, bmax = 0;
    for (int64_t j = 0; j < m; ++j) {
      const auto J = static_cast<size_t>(j);
      if (norm[J] == 0) continue;
      double rho = 0;
      for (int64_t i = 0; i < s; ++i) rho += W[i] * X[i * m + j] * (r[static_cast<size_t>(i)] + X[i * m + j] * b[J]);
      const double next = (rho > alpha ? rho - alpha : rho < -alpha ? rho + alpha : 0.0) / norm[J];
      const double change = next - b[J];
      if (change != 0)
        for (int64_t i = 0; i < s; ++i) r[static_cast<size_t>(i)] -= X[i * m + j] * change;
      b[J] = next;
      largest = std::max(largest, std::abs(change));
      bmax = std::max(bmax, std::abs(next));
    }
    if (largest <= 1e-4 * std::max(bmax, 1e-300) || bmax == 0) break;
  }
  return torch::tensor(b, torch::kFloat64);
}

}  // namespace lumen::detail
