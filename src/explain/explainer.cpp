#include <lumen/error.h>
#include <lumen/explain.h>

#include "methods/method.h"

#include <torch/csrc/autograd/autograd.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace lumen {
namespace {

cv::Mat to_mat(const torch::Tensor& hw) {
  auto t = hw.detach().to(torch::kFloat32).contiguous();
  cv::Mat m(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_32F);
  std::memcpy(m.data, t.data_ptr<float>(), sizeof(float) * t.numel());
  return m;
}

void check_finite(const torch::Tensor& t, const std::string& what) {
  if (!torch::isfinite(t).all().item<bool>()) throw Error(what + " contains NaN or infinity");
}

// Raw map -> upsampled, normalised, stats, box.
void finish_map(Map& m, const torch::Tensor& raw_hw, int width, int height, float box_threshold) {
  m.raw = to_mat(raw_hw);
  // Half-pixel-centre bilinear, as torch's interpolate(align_corners=False) and pytorch-grad-cam's resize.
  auto up = at::upsample_bilinear2d(raw_hw.detach().view({1, 1, raw_hw.size(0), raw_hw.size(1)}), {height, width}, false);
  m.upsampled = to_mat(up.view({height, width}));
  double mn, mx;
  cv::Point peak;
  cv::minMaxLoc(m.raw, &mn, &mx);
  m.stats.min = static_cast<float>(mn);
  m.stats.max = static_cast<float>(mx);
  m.stats.mean = static_cast<float>(cv::mean(m.raw)[0]);
  double umn, umx;
  cv::minMaxLoc(m.upsampled, &umn, &umx, nullptr, &peak);
  m.stats.peak_x = peak.x;
  m.stats.peak_y = peak.y;
  // Empty: a constant map carries no spatial evidence (e.g. every gradient is zero). Relative test so
  // that maps of tiny but genuine magnitude are kept.
  m.empty = !(umx - umn > 1e-6 * std::max(std::abs(umx), 1e-30));
  if (m.empty) {
    m.normalized = cv::Mat::zeros(height, width, CV_32F);
  } else {
    m.upsampled.convertTo(m.normalized, CV_32F, 1.0 / (umx - umn), -umn / (umx - umn));
    // Rounding in the affine map can leave -1e-10 or 1+1e-7; the documented range is [0, 1].
    cv::max(m.normalized, 0.0, m.normalized);
    cv::min(m.normalized, 1.0, m.normalized);
    m.box = threshold_box(m.upsampled, box_threshold);
  }
}

}  // namespace

std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const auto& m : detail::cam_methods()) names.push_back(m.name);
  return names;
}

Box threshold_box(const cv::Mat& map, float fraction) {
  Box box;
  double mx;
  cv::minMaxLoc(map, nullptr, &mx);
  if (!(mx > 0)) return box;
  cv::Mat mask = map >= fraction * mx;
  cv::Mat labels, stats, centroids;
  int n = cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S);
  int best = -1, best_area = 0;
  for (int i = 1; i < n; ++i) {
    int area = stats.at<int>(i, cv::CC_STAT_AREA);
    if (area > best_area) best_area = area, best = i;
  }
  if (best < 0) return box;
  box.x0 = stats.at<int>(best, cv::CC_STAT_LEFT);
  box.y0 = stats.at<int>(best, cv::CC_STAT_TOP);
  box.x1 = box.x0 + stats.at<int>(best, cv::CC_STAT_WIDTH);
  box.y1 = box.y0 + stats.at<int>(best, cv::CC_STAT_HEIGHT);
  box.valid = true;
  return box;
}

Explainer::Explainer(const Model& model, Preprocess preprocess, std::vector<std::string> labels)
    : model_(model), preprocess_(std::move(preprocess)), labels_(std::move(labels)) {}

std::vector<ImageExplanation> Explainer::explain(const std::vector<cv::Mat>& images, const ExplainOptions& opt,
                                                 const std::vector<std::string>& sources) const {
  if (images.empty()) throw Error("no images to explain");
  std::vector<cv::Size> sizes;
  for (const auto& img : images) sizes.push_back(img.size());
  return explain_tensor(to_batch(images, preprocess_), opt, sizes, sources);
}

std::vector<ImageExplanation> Explainer::explain_tensor(const torch::Tensor& batch, const ExplainOptions& opt,
                                                        const std::vector<cv::Size>& sizes,
                                                        const std::vector<std::string>& sources) const {
  if (batch.dim() != 4 || batch.size(0) < 1) throw Error("model input must be a non-empty [N,C,H,W] batch");
  if (!sizes.empty() && static_cast<int64_t>(sizes.size()) != batch.size(0))
    throw Error("one image size per batch row is needed");
  if (opt.layers.empty()) throw Error("no layer given to explain (use --layer; `lumen layers MODEL` lists them)");
  if (opt.methods.empty()) throw Error("no method given");
  std::vector<const detail::CamMethod*> methods;
  bool need_grad = false;
  for (const auto& name : opt.methods) {
    methods.push_back(&detail::find_cam_method(name));
    need_grad |= methods.back()->needs_gradients;
  }
  for (const auto& l : opt.layers) model_.check_layer(l);
  if (opt.targets.empty() && opt.classes.empty() && opt.top_k < 1) throw Error("top-k must be at least 1");

  const int64_t n = batch.size(0);

  torch::AutoGradMode grad_mode(true);
  Capture cap = model_.forward(batch, opt.layers);
  for (size_t i = 0; i < opt.layers.size(); ++i) {
    const auto& a = cap.layers[i];
    if (a.dim() != 4)
      throw Error("layer '" + opt.layers[i] + "' outputs shape " + c10::str(a.sizes()) +
                  ", not a [N,C,H,W] feature map; pick a convolutional layer");
  }

  OutputSelector select = opt.select ? opt.select : OutputSelector(default_logits);
  std::vector<ImageExplanation> results(n);
  torch::Tensor logits;
  try {
    logits = select(cap.output).detach();
  } catch (const Error&) {
    if (opt.targets.empty()) throw;  // a custom target may explain an output without class scores
  }
  if (logits.defined()) {
    if (logits.dim() != 2 || logits.size(0) != n)
      throw Error("model output has shape " + c10::str(logits.sizes()) + ", expected [" + std::to_string(n) + ", classes]");
    check_finite(logits, "the model's output");
    if (!labels_.empty() && static_cast<int64_t>(labels_.size()) != logits.size(1))
      throw Error("labels list has " + std::to_string(labels_.size()) + " entries but the model outputs " +
                  std::to_string(logits.size(1)) + " classes");
  }
  auto label_of = [&](int64_t c) { return c >= 0 && c < static_cast<int64_t>(labels_.size()) ? labels_[c] : std::string(); };

  torch::Tensor order;
  if (logits.defined()) {
    auto probs = torch::softmax(logits, 1);
    const int64_t classes = logits.size(1);
    const int64_t k = std::min<int64_t>(5, classes);
    order = std::get<1>(logits.topk(std::min<int64_t>(classes, std::max<int64_t>(k, opt.top_k)), 1));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t r = 0; r < k; ++r) {
        int64_t c = order[i][r].item<int64_t>();
        results[i].top.push_back({c, label_of(c), logits[i][c].item<float>(), probs[i][c].item<float>()});
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    results[i].source = i < static_cast<int64_t>(sources.size()) ? sources[i] : "image " + std::to_string(i);
    results[i].width = sizes.empty() ? static_cast<int>(batch.size(3)) : sizes[i].width;
    results[i].height = sizes.empty() ? static_cast<int>(batch.size(2)) : sizes[i].height;
  }

  std::vector<Target> targets = opt.targets;
  if (targets.empty()) {
    if (!logits.defined()) throw Error("cannot pick classes: the model's output has no class scores");
    if (!opt.classes.empty()) {
      for (int64_t c : opt.classes) {
        if (c < 0 || c >= logits.size(1))
          throw Error("class index " + std::to_string(c) + " out of range: the model has " + std::to_string(logits.size(1)) +
                      " classes (0.." + std::to_string(logits.size(1) - 1) + ")");
        targets.push_back(class_target(std::vector<int64_t>(n, c), opt.score, opt.counterfactual, select));
        targets.back().name = "class " + std::to_string(c);
      }
    } else {
      if (opt.top_k > logits.size(1))
        throw Error("top-k " + std::to_string(opt.top_k) + " exceeds the model's " + std::to_string(logits.size(1)) + " classes");
      for (int r = 0; r < opt.top_k; ++r) {
        auto col = order.select(1, r).contiguous();
        std::vector<int64_t> cls(col.data_ptr<int64_t>(), col.data_ptr<int64_t>() + n);
        targets.push_back(class_target(cls, opt.score, opt.counterfactual, select));
        targets.back().name = "top-" + std::to_string(r + 1);
      }
    }
  }

  for (size_t ti = 0; ti < targets.size(); ++ti) {
    const Target& target = targets[ti];
    torch::Tensor y = target(cap.output);
    if (y.dim() != 1 || y.size(0) != n)
      throw Error("target '" + target.name + "' must give one value per image ([" + std::to_string(n) + "]), got shape " +
                  c10::str(y.sizes()));
    check_finite(y.detach(), "target '" + target.name + "'");
    std::vector<torch::Tensor> grads(opt.layers.size());
    if (need_grad) {
      if (!y.requires_grad())
        throw Error("target '" + target.name + "' does not depend on the captured layers (no gradient path)");
      // Only d y / d A at the captured layers: parameters never require grad in lumen's copy, so this
      // backward runs through the network's head and stops at the layers.
      auto g = torch::autograd::grad({y.sum()}, cap.layers, {}, /*retain_graph=*/ti + 1 < targets.size(),
                                     /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t l = 0; l < g.size(); ++l) grads[l] = g[l].defined() ? g[l] : torch::zeros_like(cap.layers[l]);
    }
    auto y_values = y.detach();
    for (size_t l = 0; l < opt.layers.size(); ++l) {
      detail::LayerTensors lt{cap.layers[l].detach(), grads[l]};
      for (const auto* method : methods) {
        torch::Tensor maps;
        {
          torch::NoGradGuard no_grad;
          maps = method->compute(lt);
        }
        check_finite(maps, method->name + " map at layer '" + opt.layers[l] + "'");
        for (int64_t i = 0; i < n; ++i) {
          Map m;
          m.method = method->name;
          m.layer = opt.layers[l];
          m.target = target.name;
          m.cls = target.classes.empty() ? -1 : target.classes[i];
          m.label = label_of(m.cls);
          m.counterfactual = target.counterfactual;
          m.target_value = y_values[i].item<float>();
          finish_map(m, maps[i], results[i].width, results[i].height, opt.box_threshold);
          results[i].maps.push_back(std::move(m));
        }
      }
    }
  }
  return results;
}

}  // namespace lumen
