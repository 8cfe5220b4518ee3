// Maps made from other maps, after the methods' own: multi-layer aggregation (each method's per-layer
// maps, upsampled and min-max normalised, combined) and class-difference maps (each target against the
// others, from the raw maps of the same method and layer). Both are finished like any other map.
#include "explain/pipeline.h"

#include <algorithm>

namespace lumen::detail {
namespace {

cv::Mat minmax(const cv::Mat& m) {
  double lo, hi;
  cv::minMaxLoc(m, &lo, &hi);
  if (!(hi > lo)) return cv::Mat::zeros(m.size(), CV_32F);
  cv::Mat out;
  m.convertTo(out, CV_32F, 1.0 / (hi - lo), -lo / (hi - lo));
  return out;
}

torch::Tensor to_tensor(const cv::Mat& m) {
  cv::Mat c = m.isContinuous() ? m : m.clone();
  return torch::from_blob(c.data, {c.rows, c.cols}, torch::kFloat32).clone();
}

// The maps of one image grouped by a key, in the order the groups first appear.
template <typename Key>
std::vector<std::pair<Key, std::vector<const Map*>>> grouped(const std::vector<Map>& maps, const std::function<bool(const Map&)>& keep,
                                                             const std::function<Key(const Map&)>& key) {
  std::vector<std::pair<Key, std::vector<const Map*>>> groups;
  for (const auto& m : maps) {
    if (!keep(m)) continue;
    auto k = key(m);
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == k; });
    if (it == groups.end()) it = groups.insert(groups.end(), {k, {}});
    it->second.push_back(&m);
  }
  return groups;
}

std::vector<double> layer_weights(const ExplainOptions& opt, size_t layers) {
  std::vector<double> w(layers, 1.0 / static_cast<double>(layers));
  if (opt.aggregate != "weighted") return w;
  double sum = 0;
  for (float v : opt.layer_weights) sum += v;
  for (size_t l = 0; l < layers; ++l) w[l] = opt.layer_weights[l] / sum;
  return w;
}

// Shimoda & Yanai 2016: per (method, target), the layers' normalised maps combined into one more map.
void aggregate(std::vector<Map>& maps, const ExplainOptions& opt, const std::vector<std::string>& layers, cv::Size image, const Canvas& canvas) {
  const auto w = layer_weights(opt, layers.size());
  std::string joined;
  for (const auto& l : layers) joined += (joined.empty() ? "" : "+") + l;
  using Key = std::pair<std::string, std::string>;
  const auto groups = grouped<Key>(
      maps, [&](const Map& m) { return std::find(layers.begin(), layers.end(), m.layer) != layers.end(); },
      [](const Map& m) { return Key{m.method, m.target}; });
  std::vector<Map> added;
  for (const auto& [key, g] : groups) {
    if (g.size() != layers.size()) continue;
    cv::Mat acc;
    for (size_t l = 0; l < g.size(); ++l) {
      // --compat pytorch-grad-cam: each layer's map as that library finishes it (scaled at the layer,
      // resized, scaled again), so that "product" is its RefineCAM exactly.
      cv::Mat n = canvas.compat ? g[l]->normalized : minmax(g[l]->upsampled);
      if (l == 0) acc = opt.aggregate == "product" ? n : (opt.aggregate == "max" ? n : n * w[0]);
      else if (opt.aggregate == "max") acc = cv::max(acc, n);
      else if (opt.aggregate == "product") acc = acc.mul(n);
      else acc += n * w[l];
    }
    Map m = *g[0];
    m.layer = joined;
    m.attribution = cv::Mat();
    m.extra = {{"aggregate", opt.aggregate}, {"layers", layers}};
    if (opt.aggregate == "weighted") m.extra["weights"] = w;
    finish_map(m, to_tensor(acc), image, canvas);
    added.push_back(std::move(m));
  }
  for (auto& m : added) maps.push_back(std::move(m));
}

// Per (method, layer): for each target c, sum over the other targets c' of max(M_c - M_c', 0).
void contrast(std::vector<Map>& maps, cv::Size image, const Canvas& canvas) {
  using Key = std::pair<std::string, std::string>;
  const auto groups = grouped<Key>(maps, [](const Map&) { return true; }, [](const Map& m) { return Key{m.method, m.layer}; });
  std::vector<Map> added;
  for (const auto& [key, g] : groups) {
    for (const Map* mc : g) {
      cv::Mat acc = cv::Mat::zeros(mc->raw.size(), CV_32F);
      std::vector<int64_t> against;
      for (const Map* other : g) {
        if (other == mc) continue;
        acc += cv::max(mc->raw - other->raw, 0.0);
        against.push_back(other->cls);
      }
      Map m = *mc;
      m.contrastive = true;
      m.attribution = cv::Mat();
      m.is_signed = false;
      m.extra["contrast_against"] = against;
      finish_map(m, to_tensor(acc), image, canvas);
      added.push_back(std::move(m));
    }
  }
  for (auto& m : added) maps.push_back(std::move(m));
}

}  // namespace

void combine_maps(std::vector<std::vector<Map>>& maps, const ExplainOptions& opt, const Plan& plan, const Canvas& canvas) {
  for (size_t i = 0; i < maps.size(); ++i) {
    if (!opt.aggregate.empty()) aggregate(maps[i], opt, plan.layers, canvas.images[i], canvas);
    if (opt.contrast) contrast(maps[i], canvas.images[i], canvas);
  }
}

}  // namespace lumen::detail
