#include <lumen/error.h>
#include <lumen/explain.h>
#include <lumen/runtime.h>

#include <ATen/Parallel.h>

#include "methods/cam_family.h"
#include "methods/method.h"

#include <torch/csrc/autograd/autograd.h>

#include <opencv2/imgproc.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

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

// pytorch-grad-cam's scale_cam_image: (t - min) / (max(t - min) + 1e-7).
cv::Mat scale_like_pgc(const cv::Mat& t) {
  double mn, mx;
  cv::minMaxLoc(t, &mn, &mx);
  cv::Mat out;
  t.convertTo(out, CV_32F, 1.0, -mn);
  return out / (mx - mn + 1e-7);
}

// Raw map -> upsampled, normalised, stats, box. `input` is the model input's size (where
// pytorch-grad-cam's pipeline resizes to).
void finish_map(Map& m, const torch::Tensor& raw_hw, int width, int height, cv::Size input, float box_threshold, bool compat) {
  // A Map copied from another shares its matrices; writing into them would change both.
  m.normalized = cv::Mat();
  m.upsampled = cv::Mat();
  m.box = Box();
  m.raw = to_mat(raw_hw);
  // Half-pixel-centre bilinear, as torch's interpolate(align_corners=False) and pytorch-grad-cam's
  // cv2.resize (they agree to 1e-7 of the map's range). OpenCV's vectorised kernel takes ~40 us for a
  // 7x7 -> 224x224 map where at::upsample_bilinear2d takes ~600 us, which several methods times a batch
  // of maps makes visible next to the forward.
  cv::resize(m.raw, m.upsampled, {width, height}, 0, 0, cv::INTER_LINEAR);
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
    if (compat) {
      // Per layer: scale, resize to the input (cv2.resize, bilinear), scale again after "aggregating".
      cv::Mat at_input;
      cv::resize(scale_like_pgc(m.raw), at_input, input, 0, 0, cv::INTER_LINEAR);
      m.normalized = scale_like_pgc(at_input);
      if (m.normalized.size() != cv::Size(width, height)) cv::resize(m.normalized, m.normalized, {width, height}, 0, 0, cv::INTER_LINEAR);
    } else {
      m.upsampled.convertTo(m.normalized, CV_32F, 1.0 / (umx - umn), -umn / (umx - umn));
    }
    // Rounding in the affine map can leave -1e-10 or 1+1e-7; the documented range is [0, 1].
    cv::max(m.normalized, 0.0, m.normalized);
    cv::min(m.normalized, 1.0, m.normalized);
    m.box = threshold_box(m.upsampled, box_threshold);
  }
}

// [C,H,W] tensor -> H x W matrix with C channels.
cv::Mat to_mat_hwc(const torch::Tensor& chw) {
  auto t = chw.detach().to(torch::kFloat32).permute({1, 2, 0}).contiguous();
  cv::Mat m(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_32FC(static_cast<int>(t.size(2))));
  std::memcpy(m.data, t.data_ptr<float>(), sizeof(float) * t.numel());
  return m;
}

// Rows per extra pass when the caller left it to lumen: the preferred count (small batches were the
// fastest on CPU, see MethodOptions::batch_size), fewer when that many rows of the heaviest requested
// pass would not fit the budget. A row of a forward pass holds about three of its largest layer output
// at once (an op's input and output and a skip connection); a row that records gradients also keeps
// every leaf module's output for the backward.
int rows_per_pass(const Model& model, const std::vector<const detail::Method*>& methods, const torch::Tensor& batch, int64_t budget_mib) {
  constexpr int kPreferred = 8;
  auto heaviest = detail::ExtraPasses::None;
  for (const auto* m : methods) heaviest = std::max(heaviest, m->extra_passes);
  if (heaviest == detail::ExtraPasses::None) return kPreferred;
  auto shape = batch.sizes().vec();
  shape[0] = 1;
  const auto bytes = model.activation_bytes(shape);
  const double row = static_cast<double>(batch[0].numel() * 4 + 3 * bytes.largest +
                                         (heaviest == detail::ExtraPasses::Gradient ? bytes.leaves : 0));
  const double budget = (budget_mib > 0 ? static_cast<double>(budget_mib) : available_mib() / 4) * 1024 * 1024;
  if (!(budget > 0) || !(row > 0)) return kPreferred;
  return static_cast<int>(std::clamp(std::floor(budget / row), 1.0, static_cast<double>(kPreferred)));
}

// The target for `rows` copies of image `image` (extra passes of SmoothGrad, IG, perturbations).
// A custom target has no per-image classes and is called on the copies as they are.
Target for_rows(const Target& t, int64_t image, int64_t rows) {
  if (t.classes.empty()) return t;
  return class_target(std::vector<int64_t>(rows, t.classes.at(image)), t.score, t.counterfactual, t.select);
}

}  // namespace

// Reference inputs in model-input space (IG baselines, occlusion fills): "black", a pixel value
// "0".."255", "noise", "blur", or the path of an image.
torch::Tensor reference_input(const torch::Tensor& x, const std::string& kind, const MethodOptions& o, const Preprocess& p) {
  auto mean = torch::tensor(p.mean).view({1, 3, 1, 1}), std = torch::tensor(p.std).view({1, 3, 1, 1});
  if (kind == "black") return ((torch::zeros_like(x) - mean) / std);
  if (!kind.empty() && kind.find_first_not_of("0123456789.") == std::string::npos)
    return ((torch::full_like(x, std::stod(kind)) - mean) / std);  // a pixel value
  if (kind == "noise") {
    auto gen = at::detail::createCPUGenerator(o.seed);
    return (torch::rand(x.sizes(), gen) * 255.0 - mean) / std;
  }
  if (kind == "blur") return gaussian_blur(x, std::max(0.5, static_cast<double>(o.blur_sigma) * x.size(3)));  // sigma: share of width
  cv::Mat img = read_image(kind);  // a user's image
  return to_input(img, p).unsqueeze(0).expand_as(x).contiguous();
}

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

// Multi-layer aggregation and class-difference maps, appended after the maps they are made from.
void derive_maps(std::vector<ImageExplanation>& results, const ExplainOptions& opt, const std::vector<std::string>& layers,
                 cv::Size input) {
  const bool compat = opt.method.compat == Compat::PytorchGradCam;
  if (!opt.aggregate.empty()) {
    static const std::set<std::string> modes{"mean", "max", "product", "weighted"};
    if (!modes.count(opt.aggregate)) throw Error("unknown aggregation '" + opt.aggregate + "' (mean, max, product, weighted)");
    if (layers.size() < 2) throw Error("--aggregate needs at least two layers");
    std::vector<double> w(layers.size(), 1.0 / static_cast<double>(layers.size()));
    if (opt.aggregate == "weighted") {
      if (opt.layer_weights.size() != layers.size())
        throw Error("--aggregate weighted needs one weight per layer (" + std::to_string(layers.size()) + ")");
      double sum = 0;
      for (float v : opt.layer_weights) {
        if (!(v >= 0)) throw Error("layer weights must be non-negative");
        sum += v;
      }
      if (!(sum > 0)) throw Error("layer weights sum to zero");
      for (size_t l = 0; l < layers.size(); ++l) w[l] = opt.layer_weights[l] / sum;
    }
    std::string joined;
    for (const auto& l : layers) joined += (joined.empty() ? "" : "+") + l;
    for (auto& r : results) {
      // Group the per-layer maps of each (method, target).
      std::map<std::pair<std::string, std::string>, std::vector<const Map*>> groups;
      std::vector<std::pair<std::string, std::string>> order;
      for (const auto& m : r.maps) {
        if (std::find(layers.begin(), layers.end(), m.layer) == layers.end()) continue;
        auto key = std::make_pair(m.method, m.target);
        if (!groups.count(key)) order.push_back(key);
        groups[key].push_back(&m);
      }
      std::vector<Map> added;
      for (const auto& key : order) {
        const auto& g = groups[key];
        if (g.size() != layers.size()) continue;
        cv::Mat acc;
        for (size_t l = 0; l < g.size(); ++l) {
          cv::Mat n = minmax(g[l]->upsampled);
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
        finish_map(m, to_tensor(acc), r.width, r.height, input, opt.box_threshold, compat);
        added.push_back(std::move(m));
      }
      for (auto& m : added) r.maps.push_back(std::move(m));
    }
  }
  if (opt.contrast) {
    for (auto& r : results) {
      std::map<std::pair<std::string, std::string>, std::vector<const Map*>> groups;  // (method, layer) -> targets
      std::vector<std::pair<std::string, std::string>> order;
      for (const auto& m : r.maps) {
        auto key = std::make_pair(m.method, m.layer);
        if (!groups.count(key)) order.push_back(key);
        groups[key].push_back(&m);
      }
      std::vector<Map> added;
      for (const auto& key : order) {
        const auto& g = groups[key];
        if (g.size() < 2) throw Error("--contrast needs at least two targets (use --top-k 2 or more, or several classes)");
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
          finish_map(m, to_tensor(acc), r.width, r.height, input, opt.box_threshold, compat);
          added.push_back(std::move(m));
        }
      }
      for (auto& m : added) r.maps.push_back(std::move(m));
    }
  }
}

}  // namespace

std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const auto& m : detail::methods()) names.push_back(m.name);
  return names;
}

Box threshold_box(const cv::Mat& map, float fraction) {
  Box box;
  double mx;
  cv::minMaxLoc(map, nullptr, &mx);
  if (!(mx > 0)) return box;
  const cv::Mat mask = map >= fraction * mx;
  // Labels only: connectedComponentsWithStats also accumulates centroids in double precision, which
  // tripled the cost of a box. The areas are one counting pass; the largest region's extent is
  // OpenCV's bounding rectangle of its mask.
  cv::Mat labels;
  const int n = cv::connectedComponents(mask, labels, 8, CV_32S);
  if (n < 2) return box;
  std::vector<int> area(static_cast<size_t>(n), 0);
  for (int y = 0; y < labels.rows; ++y) {
    const int* row = labels.ptr<int>(y);
    for (int x = 0; x < labels.cols; ++x) ++area[static_cast<size_t>(row[x])];
  }
  // The first label of the largest area, as the stats-based version chose.
  const int best = static_cast<int>(std::max_element(area.begin() + 1, area.end()) - area.begin());
  const cv::Rect r = cv::boundingRect(labels == best);
  box.x0 = r.x;
  box.y0 = r.y;
  box.x1 = r.x + r.width;
  box.y1 = r.y + r.height;
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
  if (!opt.method.aug_smooth) return run(batch, opt, sizes, sources, nullptr);
  // Test-time augmentation (pytorch-grad-cam's aug_smooth): horizontal flip x input scaled by 0.9, 1,
  // 1.1 in model-input space. Every augmented copy explains the targets resolved on the original, and
  // each map is flipped back before averaging. Papers mode averages the raw maps (same targets, so
  // their scales are comparable) and normalises once; compat averages the normalised maps, as that
  // library does.
  std::vector<Target> used;
  auto results = run(batch, opt, sizes, sources, &used);
  ExplainOptions fixed = opt;
  fixed.targets = used;
  fixed.method.aug_smooth = false;
  const bool compat = opt.method.compat == Compat::PytorchGradCam;
  int count = 1;
  for (bool flip : {false, true}) {
    for (double factor : {0.9, 1.0, 1.1}) {
      if (!flip && factor == 1.0) continue;  // the original, already explained
      auto xb = batch * factor;
      if (flip) xb = xb.flip({3});
      auto aug = run(xb, fixed, sizes, sources, nullptr);
      ++count;
      for (size_t i = 0; i < results.size(); ++i) {
        for (size_t j = 0; j < results[i].maps.size(); ++j) {
          Map& into = results[i].maps[j];
          Map& from = aug[i].maps[j];
          auto back = [&](cv::Mat& m) {
            if (flip && !m.empty()) cv::flip(m, m, 1);
            return m;
          };
          into.raw += back(from.raw);
          if (!into.attribution.empty()) into.attribution += back(from.attribution);
          if (compat) into.normalized += back(from.normalized);
        }
      }
    }
  }
  const cv::Size input(static_cast<int>(batch.size(3)), static_cast<int>(batch.size(2)));
  for (auto& r : results) {
    for (auto& m : r.maps) {
      cv::Mat raw = m.raw / count, normalized = m.normalized / count;
      if (!m.attribution.empty()) m.attribution /= count;
      auto t = torch::from_blob(raw.data, {raw.rows, raw.cols}, torch::kFloat32).clone();
      finish_map(m, t, r.width, r.height, input, opt.box_threshold, compat);
      if (compat) m.normalized = normalized;
      m.extra["aug_smooth"] = count;
    }
  }
  return results;
}

std::vector<ImageExplanation> Explainer::run(const torch::Tensor& batch, const ExplainOptions& opt, const std::vector<cv::Size>& sizes,
                                             const std::vector<std::string>& sources, std::vector<Target>* targets_used) const {
  if (batch.dim() != 4 || batch.size(0) < 1) throw Error("model input must be a non-empty [N,C,H,W] batch");
  if (!sizes.empty() && static_cast<int64_t>(sizes.size()) != batch.size(0))
    throw Error("one image size per batch row is needed");
  if (opt.methods.empty()) throw Error("no method given");

  // Plan: the union of what the requested methods need decides which passes run.
  std::vector<const detail::Method*> methods;
  bool need_layers = false, any_per_layer = false, need_biases = false, any_weighted = false;
  std::set<BackwardRule> rules;
  for (const auto& name : opt.methods) {
    methods.push_back(&detail::find_method(name));
    need_layers |= methods.back()->needs.layer_gradients;
    need_biases |= methods.back()->needs.bias_gradients;
    any_per_layer |= methods.back()->per_layer;
    any_weighted |= methods.back()->weighted;
    for (auto r : methods.back()->needs.input_gradients) rules.insert(r);
  }
  if (opt.method.eigen_smooth && !any_weighted) {
    std::string names;
    for (const auto& m : detail::methods())
      if (m.weighted) names += (names.empty() ? "" : ", ") + m.name;
    throw Error("--eigen-smooth changes only CAM methods that weight activations (" + names + "); none was asked for");
  }
  if (any_per_layer && opt.layers.empty())
    throw Error("no layer given to explain (use --layer; `lumen layers MODEL` lists them)");
  for (const auto& l : opt.layers) model_.check_layer(l);
  if (opt.targets.empty() && opt.classes.empty() && opt.top_k < 1) throw Error("top-k must be at least 1");
  MethodOptions mo = opt.method;
  if (mo.batch_size <= 0) mo.batch_size = rows_per_pass(model_, methods, batch, mo.memory_budget_mib);
  const int64_t n = batch.size(0);
  const cv::Size input_size(static_cast<int>(batch.size(3)), static_cast<int>(batch.size(2)));
  const bool compat = mo.compat == Compat::PytorchGradCam;
  const std::vector<std::string> taps = any_per_layer ? opt.layers : std::vector<std::string>{};
  // FullGrad also needs every bias layer's output gradient; those layers are captured after the user's.
  const auto bias_layers = need_biases ? detail::bias_layers(model_) : std::vector<std::pair<std::string, torch::Tensor>>{};
  std::vector<std::string> captured = taps;
  for (const auto& b : bias_layers) captured.push_back(b.first);

  // Pass 1: forward with the layers captured. When plain input gradients are needed the input requires
  // grad here, so one backward per target serves both the layers and the input.
  torch::AutoGradMode grad_mode(true);
  const bool plain_input = rules.count(BackwardRule::Plain) > 0;
  // When the only thing needed is one rule's input gradient (guided-backprop alone, say), the rule's
  // graph also gives the predictions — its forward values are the plain ones — and pass 1 is skipped.
  const bool rule_only = captured.empty() && !plain_input && rules.size() == 1;
  torch::Tensor x = batch.detach();
  if (plain_input || rule_only) x = x.clone().requires_grad_(true);
  Capture cap = rule_only ? model_.forward(x, {}, *rules.begin(), mo.strict_nonlinearities) : model_.forward(x, captured);
  for (size_t i = 0; i < taps.size(); ++i) {
    const auto& a = cap.layers[i];
    if (a.dim() != 4)
      throw Error("layer '" + taps[i] + "' outputs shape " + c10::str(a.sizes()) +
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
  // Custom targets (a caption's tokens, say) may explain an output that is not [N, classes]: no top-5 then.
  if (logits.defined() && !opt.targets.empty() && logits.dim() != 2) logits = torch::Tensor();
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
  if (targets_used) *targets_used = targets;

  // Pass 2 (only for guided backprop / deconvnet): the same forward on a copy of the graph whose
  // ReLU-like units backpropagate by the rule. Its forward values are the plain ones.
  std::map<BackwardRule, std::pair<torch::Tensor, torch::IValue>> rule_passes;
  for (auto rule : rules) {
    if (rule == BackwardRule::Plain) continue;
    if (rule_only) {
      rule_passes[rule] = {x, cap.output};
      continue;
    }
    auto xr = batch.detach().clone().requires_grad_(true);
    rule_passes[rule] = {xr, model_.forward(xr, {}, rule, mo.strict_nonlinearities).output};
  }

  // Extra passes on demand, for methods that probe other inputs of one image.
  auto gradient_at = [&](const Target& target, const torch::Tensor& rows, int64_t image, BackwardRule rule) {
    torch::AutoGradMode enable(true);  // methods run under no-grad; their extra passes need it back
    return detail::in_chunks(rows, mo.batch_size, [&](const torch::Tensor& chunk) {
      auto xr = chunk.detach().clone().requires_grad_(true);
      auto out = model_.forward(xr, {}, rule, mo.strict_nonlinearities).output;
      auto y = for_rows(target, image, chunk.size(0))(out);
      return torch::autograd::grad({y.sum()}, {xr})[0];
    });
  };
  auto score_at = [&](const Target& target, const torch::Tensor& rows, int64_t image) {
    torch::NoGradGuard no_grad;
    return detail::in_chunks(rows, mo.batch_size, [&](const torch::Tensor& chunk) {
      return for_rows(target, image, chunk.size(0))(model_.forward(chunk.detach()).output);
    });
  };

  // Several targets at one layer: their layer gradients from one backward. The captured activation is
  // repeated once per target and the network is run from the layer on (the head only), each copy scored
  // by its own target. One backward then serves all targets, and a large head (VGG's 100M-weight
  // classifier) is read once per pass instead of once per target. This pays only where the head has no
  // convolutions: re-running convolutional blocks k times costs more than k backward passes through
  // them. Elsewhere, and for heads that cannot be run from the layer on or outputs that are not
  // tensors, each target has its own backward over the retained graph.
  auto light_head = [&](const std::string& layer) {
    try {
      return model_.convolutions_after(layer) == 0;
    } catch (const Error&) {  // no suffix graph from this layer
      return false;
    }
  };
  std::vector<torch::Tensor> batched_gradients;
  if (targets.size() > 1 && need_layers && !need_biases && !plain_input && taps.size() == 1 && cap.output.isTensor() &&
      light_head(taps[0])) {
    try {
      const auto k = static_cast<int64_t>(targets.size());
      auto a = cap.layers[0].detach().repeat({k, 1, 1, 1}).requires_grad_(true);
      auto out = model_.forward_from(taps[0], a, batch.detach().repeat({k, 1, 1, 1}));
      if (out.isTensor() && out.toTensor().size(0) == k * n) {
        torch::Tensor total;
        for (int64_t t = 0; t < k; ++t) {
          auto yt = targets[t](torch::IValue(out.toTensor().narrow(0, t * n, n))).sum();
          total = total.defined() ? total + yt : yt;
        }
        auto g = torch::autograd::grad({total}, {a}, {}, /*retain_graph=*/false, false, /*allow_unused=*/true)[0];
        if (g.defined())
          for (int64_t t = 0; t < k; ++t) batched_gradients.push_back(g.narrow(0, t * n, n));
      }
    } catch (const Error&) {
      batched_gradients.clear();
    }
  }

  for (size_t ti = 0; ti < targets.size(); ++ti) {
    const Target& target = targets[ti];
    const bool last = ti + 1 == targets.size();
    torch::Tensor y = target(cap.output);
    if (y.dim() != 1 || y.size(0) != n)
      throw Error("target '" + target.name + "' must give one value per image ([" + std::to_string(n) + "]), got shape " +
                  c10::str(y.sizes()));
    check_finite(y.detach(), "target '" + target.name + "'");

    detail::Evidence ev;
    ev.input = batch.detach();
    ev.target_values = y.detach();
    ev.options = &mo;
    ev.target = &target;
    ev.model = &model_;
    ev.gradient = [&](const torch::Tensor& rows, int64_t image, BackwardRule rule) { return gradient_at(target, rows, image, rule); };
    ev.score = [&](const torch::Tensor& rows, int64_t image) { return score_at(target, rows, image); };
    ev.score_from_layer = [&](size_t layer, const torch::Tensor& acts, int64_t image) {
      torch::NoGradGuard no_grad;
      return detail::in_chunks(acts, mo.batch_size, [&](const torch::Tensor& chunk) {
        auto input = batch[image].unsqueeze(0).expand({chunk.size(0), -1, -1, -1});
        return for_rows(target, image, chunk.size(0))(model_.forward_from(taps.at(layer), chunk, input));
      });
    };
    ev.progress = mo.progress;
    ev.reference = [&](const std::string& kind) { return reference_input(batch.detach(), kind, mo, preprocess_); };
    for (size_t l = 0; l < taps.size(); ++l) ev.layers.push_back({cap.layers[l].detach(), torch::Tensor()});

    // One backward per target: through the head down to the layers (and to the input when asked).
    std::vector<torch::Tensor> wrt;
    if (need_layers) wrt.assign(cap.layers.begin(), cap.layers.begin() + static_cast<int64_t>(taps.size()));
    if (need_biases) wrt.insert(wrt.end(), cap.layers.begin() + static_cast<int64_t>(taps.size()), cap.layers.end());
    if (plain_input) wrt.push_back(x);
    if (!batched_gradients.empty()) {
      if (!y.requires_grad())
        throw Error("target '" + target.name + "' does not depend on the captured layers (no gradient path)");
      ev.layers[0].gradients = batched_gradients[ti];
    } else if (!wrt.empty()) {
      if (!y.requires_grad())
        throw Error("target '" + target.name + "' does not depend on the captured layers (no gradient path)");
      // Parameters never require grad in lumen's copy, so this backward runs through the network's
      // head only and stops at the layers.
      auto g = torch::autograd::grad({y.sum()}, wrt, {}, /*retain_graph=*/!last, /*create_graph=*/false, /*allow_unused=*/true);
      size_t k = 0;
      if (need_layers)
        for (size_t l = 0; l < taps.size(); ++l, ++k) ev.layers[l].gradients = g[k].defined() ? g[k] : torch::zeros_like(cap.layers[l]);
      if (need_biases) {
        for (size_t b = 0; b < bias_layers.size(); ++b, ++k) {
          const auto& z = cap.layers[taps.size() + b];
          ev.biases.push_back({bias_layers[b].first, g[k].defined() ? g[k] : torch::zeros_like(z), bias_layers[b].second});
        }
      }
      if (plain_input) ev.input_gradients[BackwardRule::Plain] = g[k].defined() ? g[k] : torch::zeros_like(x);
    }
    for (auto& [rule, pass] : rule_passes) {
      auto yr = target(pass.second);
      auto g = torch::autograd::grad({yr.sum()}, {pass.first}, {}, /*retain_graph=*/!last, false, /*allow_unused=*/true)[0];
      ev.input_gradients[rule] = g.defined() ? g : torch::zeros_like(pass.first);
    }

    auto y_values = y.detach();
    struct Job {
      const detail::Method* method;
      size_t layer;
      detail::Result res;
      bool eigen_smoothed = false;
    };
    std::vector<Job> jobs;
    for (const auto* method : methods)
      for (size_t l = 0; l < (method->per_layer ? taps.size() : 1); ++l) jobs.push_back({method, l, {}, false});
    auto compute = [&](Job& job) {
      torch::NoGradGuard no_grad;  // grad mode is per thread: set it on the worker too
      job.res = job.method->compute(ev, job.layer);
      if (job.res.weighted.defined()) {
        job.res.maps = torch::relu(mo.eigen_smooth ? detail::first_component(job.res.weighted) : job.res.weighted.sum(1));
        job.eigen_smoothed = mo.eigen_smooth;
        job.res.weighted = torch::Tensor();  // [N,C,h,w] per job; the maps are all that is kept until every job is done
      }
    };
    // A method without extra passes is a handful of small tensor ops. One after another, every op
    // wakes both threads for a few hundred microseconds of work, and six CAMs cost 5 ms each beyond
    // their maps; side by side, each on one thread (ATen runs ops serially inside a parallel region),
    // they do not. Methods with extra passes run alone, so that their forwards keep every thread.
    std::vector<size_t> side_by_side;
    for (size_t j = 0; j < jobs.size(); ++j)
      if (jobs[j].method->extra_passes == detail::ExtraPasses::None) side_by_side.push_back(j);
    at::parallel_for(0, static_cast<int64_t>(side_by_side.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) compute(jobs[side_by_side[static_cast<size_t>(k)]]);
    });
    for (auto& job : jobs)
      if (job.method->extra_passes != detail::ExtraPasses::None) compute(job);
    auto layer_of = [&](const Job& job) { return job.method->per_layer ? taps[job.layer] : std::string("input"); };
    for (const auto& job : jobs)
      check_finite(job.res.maps, job.method->name + " map at " +
                                     (job.method->per_layer ? "layer '" + layer_of(job) + "'" : "the input"));

    // Upsampling, normalising and boxing each map is independent of the others: all maps of all
    // methods are spread over the threads at once. OpenCV's own loop, because OpenCV runs its nested
    // parallel calls (connected components) serially there; from ATen's threads each of them spread
    // over OpenCV's threads as well, and two threads finished maps no faster than one.
    std::vector<Map> finished(jobs.size() * static_cast<size_t>(n));
    const cv::Range all_maps(0, static_cast<int>(finished.size()));
    cv::parallel_for_(all_maps, [&](const cv::Range& range) {
      for (int64_t f = range.start; f < range.end; ++f) {
        const Job& job = jobs[static_cast<size_t>(f / n)];
        const detail::Result& res = job.res;
        const int64_t i = f % n;
        Map& m = finished[static_cast<size_t>(f)];
        m.method = job.method->name;
        m.layer = layer_of(job);
        m.target = target.name;
        m.cls = target.classes.empty() ? -1 : target.classes[i];
        m.label = label_of(m.cls);
        m.counterfactual = target.counterfactual;
        m.target_value = y_values[i].item<float>();
        m.is_signed = res.is_signed;
        finish_map(m, res.maps[i], results[i].width, results[i].height, input_size, opt.box_threshold, compat);
        if (res.attribution.defined()) m.attribution = to_mat_hwc(res.attribution[i]);
        if (i < static_cast<int64_t>(res.extra.size())) m.extra = res.extra[i];
        if (job.eigen_smoothed) m.extra["eigen_smooth"] = true;
        if (compat) m.extra["compat"] = "pytorch-grad-cam";
        if (job.method->extra_passes != detail::ExtraPasses::None) m.extra["rows_per_pass"] = mo.batch_size;
      }
    }, static_cast<double>(all_maps.end));
    for (size_t j = 0; j < jobs.size(); ++j)
      for (int64_t i = 0; i < n; ++i) results[i].maps.push_back(std::move(finished[j * static_cast<size_t>(n) + static_cast<size_t>(i)]));
  }
  derive_maps(results, opt, taps, input_size);
  return results;
}

}  // namespace lumen
