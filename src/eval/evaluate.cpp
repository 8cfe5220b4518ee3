#include <lumen/error.h>
#include <lumen/evaluate.h>

#include "core/hash.h"
#include "core/side_by_side.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

namespace lumen {
namespace {

const std::vector<double> kV2Ious{0.3, 0.5, 0.7};

// The batch in one piece per thread, side by side (core/side_by_side.h).
torch::Tensor class_probability(const Model& model, const torch::Tensor& batch, int64_t cls) {
  torch::NoGradGuard no_grad;
  return detail::rows_side_by_side(batch, batch.size(0), [&](const torch::Tensor& rows) {
    auto logits = default_logits(model.forward(rows).output);
    return torch::softmax(logits.to(torch::kFloat64), 1).select(1, cls);
  });
}

// Curves are kept in the records (so that a report can draw them again) to 6 decimals: probabilities,
// where more digits are noise and would triple the records file.
std::vector<double> rounded(const std::vector<double>& curve) {
  std::vector<double> out;
  for (double v : curve) out.push_back(std::round(v * 1e6) / 1e6);
  return out;
}

}  // namespace

bool EvalOptions::has(const std::string& m) const { return std::find(metrics.begin(), metrics.end(), m) != metrics.end(); }
bool EvalOptions::runs_model() const { return has("deletion") || has("insertion") || has("drop") || has("cam-mult") || has("road") || has("infidelity") || has("arcc"); }

nlohmann::json measure_image(const Model& model, const Preprocess& pre, const Sample& sample, const ImageExplanation& explained,
                             const Map& map, const torch::Tensor& x, const EvalOptions& o) {
  nlohmann::json r;
  r["image"] = sample.name;
  r["label"] = sample.label;
  std::vector<int64_t> top;
  for (const auto& p : explained.top) top.push_back(p.cls);
  r["top5"] = top;
  const bool top1 = !top.empty() && top[0] == sample.label;
  const bool top5 = std::find(top.begin(), top.end(), sample.label) != top.end();
  r["top1_correct"] = top1;
  r["top5_correct"] = top5;
  r["empty"] = map.empty;

  if (o.has("loc")) {
    // The paper's protocol on the ground-truth class's map: top-1 needs the top class to be right,
    // top-5 needs the true class among the five (only its map can then match a box of its class).
    const double iou = map.empty ? 0.0 : metrics::best_iou(map.box, sample.boxes, sample.label);
    r["iou"] = iou;
    r["box"] = map.box.valid ? nlohmann::json{map.box.x0, map.box.y0, map.box.x1, map.box.y1} : nlohmann::json(nullptr);
    r["loc_top1"] = top1 && iou >= 0.5;
    r["loc_top5"] = top5 && iou >= 0.5;
    // MaxBoxAcc V1 / V2: best IoU at each of the 100 map thresholds (ground truth known).
    std::vector<metrics::GtBox> own;
    for (const auto& b : sample.boxes)
      if (b.label == sample.label) own.push_back(b);
    for (bool multi : {false, true}) {
      metrics::MaxBoxAcc acc(multi, multi ? kV2Ious : std::vector<double>{0.5});
      acc.add(map.normalized, own);
      std::vector<double> rounded;
      for (double v : acc.last_ious()) rounded.push_back(std::round(v * 1e6) / 1e6);
      r[multi ? "maxbox_v2" : "maxbox_v1"] = rounded;
    }
  }
  if (o.has("pointing"))
    r["pointing"] = !map.empty && metrics::pointing_hit(map.stats.peak_x, map.stats.peak_y, sample.boxes, sample.label, o.pointing_tolerance);

  // Faithfulness metrics work on the model input: the map is resized to it.
  if (o.runs_model()) {
    cv::Mat m;
    cv::resize(map.normalized, m, cv::Size(static_cast<int>(x.size(2)), static_cast<int>(x.size(1))), 0, 0, cv::INTER_LINEAR);
    auto score = [&](const torch::Tensor& b) { return class_probability(model, b, sample.label); };
    if (o.has("deletion")) {
      auto black = reference_input(x.unsqueeze(0), "black", pre)[0];
      auto curve = metrics::causal_curve(x, black, m, o.steps, score, o.curve_batch);
      r["deletion"] = metrics::auc(curve);
      r["deletion_curve"] = rounded(curve);
    }
    if (o.has("insertion")) {
      auto curve = metrics::causal_curve(gaussian_blur(x.unsqueeze(0), o.insertion_blur_sigma)[0], x, m, o.steps, score, o.curve_batch);
      r["insertion"] = metrics::auc(curve);
      r["insertion_curve"] = rounded(curve);
    }
    if (o.has("road")) {
      // The noise of an image is seeded by its name, so that a resumed or sharded run draws the same
      // numbers for it wherever it falls.
      const uint64_t seed = detail::fnv1a(sample.name);
      const auto road = metrics::road(x, m, metrics::kRoadPercentiles, o.road_noise, seed, score, o.curve_batch);
      r["road"] = road.combined;
      r["road_morf"] = road.morf_mean;
      r["road_lerf"] = road.lerf_mean;
      r["road_morf_curve"] = rounded(road.morf);
      r["road_lerf_curve"] = rounded(road.lerf);
    }
    if (o.has("arcc")) {
      // Its complexity and ROAD; the coherency needs the method again (dataset_run.cpp), and so does the
      // score that combines the three. ROAD's noise is seeded as above, at ARCC's own percentiles.
      r["arcc_complexity"] = metrics::complexity(m);
      r["arcc_road"] = metrics::road(x, m, metrics::kArccRoadPercentiles, o.road_noise, detail::fnv1a(sample.name), score, o.curve_batch).combined;
    }
    if (o.has("drop")) {
      // The image's pixels (0-255) times the map, then normalised again.
      auto mean = torch::tensor(pre.mean).view({-1, 1, 1}), std = torch::tensor(pre.std).view({-1, 1, 1});
      auto mt = torch::from_blob(m.data, {1, m.rows, m.cols}, torch::kFloat32).clone();
      auto masked = ((x * std + mean) * mt - mean) / std;
      auto p = score(torch::stack({x, masked}));
      const double y = p[0].item<double>(), out = p[1].item<double>();
      r["y"] = y;
      r["o"] = out;
      r["drop"] = metrics::drop(y, out);
      r["increase"] = metrics::increase(y, out);
    }
    if (o.has("infidelity")) {
      // Seeded by the image's name, like ROAD, so that a resumed or sharded run draws the same noise.
      r["infidelity"] = metrics::infidelity(x, m, o.infidelity_noise, o.infidelity_samples, detail::fnv1a(sample.name) + 1, score, o.curve_batch);
    }
    if (o.has("cam-mult")) {
      // pytorch-grad-cam's CamMultImageConfidenceChange: the model input itself times the map (in its
      // own units, where 0 is the mean colour, unlike drop's pixels), the class probability's change.
      auto mt = torch::from_blob(m.data, {1, m.rows, m.cols}, torch::kFloat32).clone();
      auto p = score(torch::stack({x, x * mt}));
      const double change = p[1].item<double>() - p[0].item<double>();
      r["cam_mult"] = change;
      r["cam_mult_drop"] = std::max(0.0, -change);  // its DropInConfidence
      r["cam_mult_increase"] = change > 0;          // its IncreaseInConfidence
    }
  }
  return r;
}

Summary::Summary(EvalOptions options) : options_(std::move(options)), v1_(false, {0.5}), v2_(true, kV2Ious) {}

void Summary::add(const nlohmann::json& r) {
  ++images_;
  for (const char* key : {"top1_correct", "top5_correct", "empty", "loc_top1", "loc_top5", "pointing", "increase", "cam_mult_increase"})
    counts_[key] += r.value(key, false) ? 1 : 0;
  for (const char* key : {"deletion", "insertion", "drop", "cam_mult", "cam_mult_drop", "infidelity", "sensitivity", "road", "road_morf", "road_lerf",
                          "arcc", "arcc_coherency", "arcc_complexity", "arcc_road"}) {
    if (r.contains(key) && r[key].is_number()) {
      means_[key].sum += r[key].get<double>();
      ++means_[key].n;
    }
  }
  for (const char* key : {"deletion_curve", "insertion_curve", "road_morf_curve", "road_lerf_curve"}) {
    // Records of runs before curves were kept have none; the plot then says how many it averages.
    if (!r.contains(key) || !r[key].is_array()) continue;
    const auto curve = r[key].get<std::vector<double>>();
    auto& c = curves_[key];
    if (c.n == 0) c.sum.assign(curve.size(), 0.0), c.sq.assign(curve.size(), 0.0);
    if (curve.size() != c.sum.size()) continue;
    for (size_t i = 0; i < curve.size(); ++i) c.sum[i] += curve[i], c.sq[i] += curve[i] * curve[i];
    ++c.n;
  }
  auto& cls = per_class_[r.value("label", int64_t{-1})];
  ++cls.images;
  cls.loc += r.value("loc_top1", false) ? 1 : 0;
  cls.pointing += r.value("pointing", false) ? 1 : 0;
  cls.correct += r.value("top1_correct", false) ? 1 : 0;
  if (options_.has("loc")) {
    v1_.add_ious(r.at("maxbox_v1").get<std::vector<double>>());
    v2_.add_ious(r.at("maxbox_v2").get<std::vector<double>>());
  }
}

void Summary::add_sanity(const nlohmann::json& r) { sanity_.push_back(r); }

nlohmann::json Summary::result() const {
  nlohmann::json s;
  const auto& o = options_;
  s["images"] = images_;
  if (images_ == 0) return s;
  auto rate = [&](const std::string& key) {
    auto it = counts_.find(key);
    return 100.0 * static_cast<double>(it == counts_.end() ? 0 : it->second) / static_cast<double>(images_);
  };
  auto mean = [&](const std::string& key) {
    auto it = means_.find(key);
    return it == means_.end() || it->second.n == 0 ? std::nan("") : it->second.sum / static_cast<double>(it->second.n);
  };
  s["cls_top1_error"] = 100.0 - rate("top1_correct");
  s["cls_top5_error"] = 100.0 - rate("top5_correct");
  s["empty_maps"] = counts_.count("empty") ? counts_.at("empty") : 0;
  if (o.has("loc")) {
    s["loc_top1_error"] = 100.0 - rate("loc_top1");
    s["loc_top5_error"] = 100.0 - rate("loc_top5");
    s["maxboxacc"] = v1_.accuracy()[0];
    auto per = v2_.accuracy();
    s["maxboxacc_v2"] = v2_.mean_accuracy();
    s["maxboxacc_v2_at"] = {{"0.3", per[0]}, {"0.5", per[1]}, {"0.7", per[2]}};
  }
  if (o.has("pointing")) s["pointing_accuracy"] = rate("pointing");
  if (o.has("deletion")) s["deletion_auc"] = mean("deletion");
  if (o.has("insertion")) s["insertion_auc"] = mean("insertion");
  if (o.has("road")) {
    s["road"] = mean("road");
    s["road_morf"] = mean("road_morf");
    s["road_lerf"] = mean("road_lerf");
  }
  // The mean curve and its standard deviation per step (fraction of pixels k / steps).
  for (const auto& [key, c] : curves_) {
    if (c.n == 0) continue;
    std::vector<double> mean_curve, sd;
    for (size_t i = 0; i < c.sum.size(); ++i) {
      const double m = c.sum[i] / static_cast<double>(c.n);
      mean_curve.push_back(m);
      sd.push_back(std::sqrt(std::max(0.0, c.sq[i] / static_cast<double>(c.n) - m * m)));
    }
    s[key] = {{"mean", mean_curve}, {"sd", sd}, {"images", c.n}};
  }
  nlohmann::json classes = nlohmann::json::object();
  for (const auto& [label, c] : per_class_) {
    nlohmann::json row{{"images", c.images}, {"top1_correct", c.correct}};
    if (o.has("loc")) row["loc_top1"] = c.loc;
    if (o.has("pointing")) row["pointing"] = c.pointing;
    classes[std::to_string(label)] = row;
  }
  s["per_class"] = classes;
  if (o.has("drop")) {
    s["average_drop"] = 100.0 * mean("drop");
    s["increase_in_confidence"] = rate("increase");
  }
  if (o.has("infidelity")) s["infidelity"] = mean("infidelity");
  if (o.has("sensitivity")) s["sensitivity_max"] = mean("sensitivity");
  if (o.has("arcc"))
    for (const char* key : {"arcc", "arcc_coherency", "arcc_complexity", "arcc_road"}) s[key] = mean(key);
  if (o.has("cam-mult")) {
    s["cam_mult_change"] = 100.0 * mean("cam_mult");
    s["cam_mult_drop"] = 100.0 * mean("cam_mult_drop");
    s["cam_mult_increase"] = rate("cam_mult_increase");
  }
  if (o.has("sanity") && !sanity_.empty()) {
    // Per cascade step: mean Spearman / SSIM between the original and the randomised maps.
    std::map<int, std::pair<std::vector<double>, std::vector<double>>> steps;
    std::map<int, std::string> names;
    for (const auto& r : sanity_) {
      int k = r.at("step");
      steps[k].first.push_back(r.at("spearman"));
      steps[k].second.push_back(r.at("ssim"));
      names[k] = r.at("block");
    }
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& [k, v] : steps) {
      auto avg = [](const std::vector<double>& a) { return std::accumulate(a.begin(), a.end(), 0.0) / static_cast<double>(a.size()); };
      curve.push_back({{"step", k}, {"randomised_down_to", names.at(k)}, {"spearman", avg(v.first)}, {"ssim", avg(v.second)}});
    }
    s["sanity"] = curve;
    // Adebayo et al.: a map that stays the same while the top half of the network is random does not
    // depend on what the model learned (guided backprop's edge maps are the known case).
    const size_t half = (curve.size() + 1) / 2 - 1;
    s["sanity_top_spearman"] = curve.front()["spearman"];
    s["sanity_half_spearman"] = curve[half]["spearman"];
    s["sanity_final_spearman"] = curve.back()["spearman"];
    s["sanity_flag"] = curve[half]["spearman"].get<double>() > 0.5;
  }
  return s;
}

}  // namespace lumen
