// Aug-smooth (pytorch-grad-cam's aug_smooth): every map is averaged over the horizontal flip x the input
// scaled by 0.9, 1, 1.1 in model-input space. Every augmented copy explains the targets resolved on the
// original, and each map is flipped back before averaging. Papers mode averages the raw maps (same
// targets, so their scales are comparable) and normalises once; compat averages the normalised maps,
// as that library does.
#include "explain/pipeline.h"

namespace lumen::detail {

void aug_smooth(std::vector<std::vector<Map>>& maps, const torch::Tensor& batch, const Canvas& canvas,
                const std::function<std::vector<std::vector<Map>>(const torch::Tensor&)>& explain_at) {
  int count = 1;
  for (bool flip : {false, true}) {
    for (double factor : {0.9, 1.0, 1.1}) {
      if (!flip && factor == 1.0) continue;  // the original, already explained
      auto xb = batch * factor;
      if (flip) xb = xb.flip({3});
      auto augmented = explain_at(xb);
      ++count;
      auto back = [&](cv::Mat& m) -> cv::Mat& {
        if (flip && !m.empty()) cv::flip(m, m, 1);
        return m;
      };
      for (size_t i = 0; i < maps.size(); ++i) {
        for (size_t j = 0; j < maps[i].size(); ++j) {
          Map& into = maps[i][j];
          Map& from = augmented[i][j];
          into.raw += back(from.raw);
          if (!into.attribution.empty()) into.attribution += back(from.attribution);
          if (canvas.compat) into.normalized += back(from.normalized);
        }
      }
    }
  }
  for (size_t i = 0; i < maps.size(); ++i) {
    for (auto& m : maps[i]) {
      cv::Mat raw = m.raw / count, normalized = m.normalized / count;
      if (!m.attribution.empty()) m.attribution /= count;
      auto t = torch::from_blob(raw.data, {raw.rows, raw.cols}, torch::kFloat32).clone();
      finish_map(m, t, canvas.images[i], canvas);
      if (canvas.compat) m.normalized = normalized;
      m.extra["aug_smooth"] = count;
    }
  }
}

}  // namespace lumen::detail
