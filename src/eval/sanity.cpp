// The sanity cascade of `lumen eval` (Adebayo et al. 2018): do the maps change when what the model
// learned is destroyed, block by block from the output back?
#include <lumen/error.h>

#include "eval/eval_run.h"

namespace lumen::detail {
namespace {

cv::Mat scaled_to_max(const cv::Mat& x) {
  double mx;
  cv::minMaxLoc(x, nullptr, &mx);
  return mx > 0 ? cv::Mat(x / mx) : x;
}

}  // namespace

std::string sanity_key(const nlohmann::json& r) {
  return r["method"].get<std::string>() + "\n" + std::to_string(r["step"].get<int>()) + "\n" + r["image"].get<std::string>();
}

void sanity_cascade(const Explainer& explainer, const Dataset& data, const DatasetRun& run, const ExplainOptions& base,
                    const std::set<std::string>& done, const std::function<void(const nlohmann::json&)>& append) {
  const size_t k = std::min<size_t>(static_cast<size_t>(std::max(1, run.sanity_images)), data.samples.size());
  std::vector<cv::Mat> images;
  std::vector<int64_t> labels;
  std::vector<std::string> names;
  for (size_t i = 0; i < k; ++i) {
    images.push_back(read_image(data.samples[i].path));
    labels.push_back(data.samples[i].label);
    names.push_back(data.samples[i].name);
  }
  const auto blocks = metrics::cascade_blocks(explainer.model());
  std::map<std::string, std::vector<cv::Mat>> original;
  auto maps_of = [&](const Explainer& ex, const std::string& method) {
    std::vector<cv::Mat> out;
    for (auto& e : ex.explain(images, detail::for_method(base, method, labels), names)) out.push_back(cv::abs(e.maps.back().upsampled));
    return out;
  };
  for (size_t step = 1; step <= blocks.size(); ++step) {
    std::vector<std::string> todo;
    for (const auto& m : run.methods)
      for (size_t i = 0; i < k; ++i)
        if (!done.count(m + "\n" + std::to_string(step) + "\n" + names[i])) {
          todo.push_back(m);
          break;
        }
    if (todo.empty()) continue;
    if (run.progress) run.progress("sanity: randomised down to " + blocks[step - 1], static_cast<int64_t>(step), static_cast<int64_t>(blocks.size()));
    const Model random = metrics::randomized(explainer.model(), {blocks.begin(), blocks.begin() + static_cast<int64_t>(step)}, run.seed + 1);
    const Explainer ex(random, explainer.preprocess(), explainer.labels());
    for (const auto& m : todo) {
      if (!original.count(m)) original[m] = maps_of(explainer, m);
      const auto after = maps_of(ex, m);
      for (size_t i = 0; i < k; ++i)
        append({{"sanity", true}, {"method", m}, {"step", static_cast<int>(step)}, {"block", blocks[step - 1]}, {"image", names[i]},
                {"spearman", metrics::spearman(original[m][i], after[i])},
                {"ssim", metrics::ssim(scaled_to_max(original[m][i]), scaled_to_max(after[i]))}});
    }
  }
}

}  // namespace lumen::detail
