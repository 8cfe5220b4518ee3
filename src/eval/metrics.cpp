#include <lumen/error.h>
#include <lumen/metrics.h>

#include <ATen/CPUGeneratorImpl.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lumen::metrics {

double iou(const GtBox& a, const GtBox& b) {
  const double iw = std::max(0.0, std::min(a.x1, b.x1) - std::max(a.x0, b.x0));
  const double ih = std::max(0.0, std::min(a.y1, b.y1) - std::max(a.y0, b.y0));
  const double inter = iw * ih;
  const double uni = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter;
  return uni > 0 ? inter / uni : 0.0;
}

GtBox to_gt(const Box& b) { return {-1, double(b.x0), double(b.y0), double(b.x1), double(b.y1)}; }

double best_iou(const Box& box, const std::vector<GtBox>& gt, int64_t cls) {
  if (!box.valid) return 0.0;
  double best = 0;
  for (const auto& g : gt)
    if (g.label == cls) best = std::max(best, iou(to_gt(box), g));
  return best;
}

bool pointing_hit(int peak_x, int peak_y, const std::vector<GtBox>& gt, int64_t cls, double tolerance) {
  // The peak is a pixel; its centre is what lies in or near the box.
  const double x = peak_x + 0.5, y = peak_y + 0.5;
  for (const auto& g : gt) {
    if (g.label != cls) continue;
    const double dx = std::max({g.x0 - x, 0.0, x - g.x1}), dy = std::max({g.y0 - y, 0.0, y - g.y1});
    if (std::hypot(dx, dy) <= tolerance) return true;
  }
  return false;
}

double energy_inside(const cv::Mat& map, const std::vector<GtBox>& gt, int64_t cls) {
  cv::Mat mask = cv::Mat::zeros(map.size(), CV_32F);
  for (const auto& g : gt) {
    if (g.label != cls) continue;
    // Pixels whose centre lies inside the box.
    const int x0 = std::max(0, static_cast<int>(std::ceil(g.x0 - 0.5))), y0 = std::max(0, static_cast<int>(std::ceil(g.y0 - 0.5)));
    const int x1 = std::min(map.cols, static_cast<int>(std::ceil(g.x1 - 0.5))), y1 = std::min(map.rows, static_cast<int>(std::ceil(g.y1 - 0.5)));
    if (x1 > x0 && y1 > y0) mask(cv::Rect(x0, y0, x1 - x0, y1 - y0)) = 1.0f;
  }
  const double total = cv::sum(map)[0];
  return total > 0 ? cv::sum(map.mul(mask))[0] / total : 0.0;
}

// --- MaxBoxAcc ---------------------------------------------------------------------------------------

std::vector<std::array<int, 4>> wsol_boxes(const cv::Mat& map_u8, int threshold, bool multi_contour) {
  cv::Mat binary;
  cv::threshold(map_u8, binary, threshold, 255, cv::THRESH_BINARY);  // strictly above
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(binary, contours, cv::RETR_TREE, cv::CHAIN_APPROX_SIMPLE);
  if (contours.empty()) return {{0, 0, 0, 0}};
  std::vector<std::array<int, 4>> boxes;
  auto box_of = [&](const std::vector<cv::Point>& c) {
    cv::Rect r = cv::boundingRect(c);
    return std::array<int, 4>{r.x, r.y, std::min(r.x + r.width, map_u8.cols - 1), std::min(r.y + r.height, map_u8.rows - 1)};
  };
  if (multi_contour) {
    for (const auto& c : contours) boxes.push_back(box_of(c));
  } else {
    // Python's max() keeps the first of equal areas.
    size_t best = 0;
    double best_area = cv::contourArea(contours[0]);
    for (size_t i = 1; i < contours.size(); ++i) {
      double a = cv::contourArea(contours[i]);
      if (a > best_area) best_area = a, best = i;
    }
    boxes.push_back(box_of(contours[best]));
  }
  return boxes;
}

double wsol_iou(const std::array<int, 4>& a, const std::array<int, 4>& b) {
  const double iw = std::max(0, std::min(a[2], b[2]) - std::max(a[0], b[0]) + 1);
  const double ih = std::max(0, std::min(a[3], b[3]) - std::max(a[1], b[1]) + 1);
  const double inter = iw * ih;
  const double area_a = double(a[2] - a[0] + 1) * (a[3] - a[1] + 1), area_b = double(b[2] - b[0] + 1) * (b[3] - b[1] + 1);
  const double den = area_a + area_b - inter;
  return den > 0 ? inter / den : 0.0;
}

MaxBoxAcc::MaxBoxAcc(bool multi_contour, std::vector<double> iou_thresholds, int thresholds)
    : multi_(multi_contour), iou_thr_(std::move(iou_thresholds)), thresholds_(thresholds),
      correct_(iou_thr_.size(), std::vector<int64_t>(thresholds, 0)) {}

void MaxBoxAcc::add(const cv::Mat& map, const std::vector<GtBox>& gt) {
  // (map * 255).astype(uint8): truncation, not OpenCV's rounding conversion.
  cv::Mat u8(map.size(), CV_8U);
  for (int r = 0; r < map.rows; ++r)
    for (int c = 0; c < map.cols; ++c) u8.at<uint8_t>(r, c) = static_cast<uint8_t>(std::clamp(map.at<float>(r, c) * 255.f, 0.f, 255.f));
  double mx;
  cv::minMaxLoc(u8, nullptr, &mx);
  std::vector<std::array<int, 4>> truth;
  for (const auto& g : gt) truth.push_back({int(g.x0), int(g.y0), int(g.x1), int(g.y1)});
  std::vector<double> best(thresholds_, 0.0);
  for (int t = 0; t < thresholds_; ++t) {
    const int thresh = static_cast<int>(static_cast<double>(t) / thresholds_ * mx);
    for (const auto& b : wsol_boxes(u8, thresh, multi_))
      for (const auto& g : truth) best[t] = std::max(best[t], wsol_iou(b, g));
  }
  add_ious(best);
}

void MaxBoxAcc::add_ious(const std::vector<double>& best) {
  if (static_cast<int>(best.size()) != thresholds_) throw Error("MaxBoxAcc: wrong number of thresholds");
  for (size_t k = 0; k < iou_thr_.size(); ++k)
    for (int t = 0; t < thresholds_; ++t) correct_[k][t] += best[t] >= iou_thr_[k];
  last_ = best;
  ++count_;
}

std::vector<double> MaxBoxAcc::accuracy() const {
  std::vector<double> out;
  for (const auto& row : correct_)
    out.push_back(count_ ? 100.0 * static_cast<double>(*std::max_element(row.begin(), row.end())) / static_cast<double>(count_) : 0.0);
  return out;
}

double MaxBoxAcc::mean_accuracy() const {
  auto a = accuracy();
  return a.empty() ? 0.0 : std::accumulate(a.begin(), a.end(), 0.0) / static_cast<double>(a.size());
}

// --- infidelity ------------------------------------------------------------------------------------------

double infidelity(const torch::Tensor& x, const cv::Mat& map, double noise, int samples, uint64_t seed,
                  const std::function<torch::Tensor(const torch::Tensor&)>& score, int batch) {
  if (samples < 1) throw Error("infidelity needs at least one perturbation");
  if (map.rows != x.size(1) || map.cols != x.size(2) || map.type() != CV_32F) throw Error("infidelity: the map must be the input's size, float");
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<int64_t> shape{samples};
  for (auto d : x.sizes()) shape.push_back(d);
  const auto perturbation = noise * torch::randn(shape, gen);
  const auto m = torch::from_blob(const_cast<float*>(map.ptr<float>()), {1, 1, map.rows, map.cols}, torch::kFloat32);
  const auto predicted = (perturbation * m).sum({1, 2, 3}).to(torch::kFloat64);
  std::vector<torch::Tensor> parts{score(x.unsqueeze(0))};
  const auto perturbed = x.unsqueeze(0) - perturbation;
  for (int64_t start = 0; start < samples; start += batch) parts.push_back(score(perturbed.slice(0, start, std::min<int64_t>(samples, start + batch))));
  const auto scores = torch::cat(parts).to(torch::kFloat64);
  const auto change = scores[0] - scores.slice(0, 1);
  const double denominator = (predicted * predicted).sum().item<double>();
  const double beta = denominator > 0 ? (predicted * change).sum().item<double>() / denominator : 0.0;
  return (beta * predicted - change).pow(2).mean().item<double>();
}

// --- ARCC ----------------------------------------------------------------------------------------------

double coherency(const cv::Mat& map, const cv::Mat& again) {
  if (map.size() != again.size() || map.type() != CV_32F || again.type() != CV_32F || map.total() < 2)
    throw Error("coherency: the two maps must be float and of one size, with two pixels at least");
  cv::Mat a, b;
  map.convertTo(a, CV_64F);
  again.convertTo(b, CV_64F);
  a -= cv::mean(a)[0];
  b -= cv::mean(b)[0];
  const double n1 = static_cast<double>(map.total() - 1);
  const double r = a.dot(b) / n1 / (std::sqrt(a.dot(a) / n1) * std::sqrt(b.dot(b) / n1) + 1e-8);
  return (r + 1) / 2;
}

double complexity(const cv::Mat& map) { return map.empty() ? 0.0 : cv::norm(map, cv::NORM_L1) / static_cast<double>(map.total()); }

double arcc(double coherency, double complexity, double road) {
  const double road01 = std::clamp(2 * road, 0.0, 1.0);
  return 3 / (1 / (coherency + 1e-8) + 1 / (1 - complexity + 1e-8) + 1 / (road01 + 1e-8));
}

// --- sensitivity-max -----------------------------------------------------------------------------------

double sensitivity_max(const torch::Tensor& x, const torch::Tensor& explanation, double radius, int samples, uint64_t seed,
                       const std::function<torch::Tensor(const torch::Tensor&)>& explain) {
  if (samples < 1) throw Error("sensitivity-max needs at least one perturbation");
  if (!(radius >= 0) || !std::isfinite(radius)) throw Error("sensitivity-max: the radius must be a finite number >= 0");
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<int64_t> shape{samples};
  for (auto d : x.sizes()) shape.push_back(d);
  const auto perturbed = x.unsqueeze(0) + radius * (2 * torch::rand(shape, gen) - 1);
  const auto phi = explanation.to(torch::kFloat64).reshape({1, -1});
  const auto moved = explain(perturbed).to(torch::kFloat64).reshape({samples, -1});
  if (moved.size(1) != phi.size(1)) throw Error("sensitivity-max: the perturbed explanations differ in size from the explanation");
  const double norm = phi.norm().item<double>();
  return ((moved - phi).norm(2, 1) / (norm > 0 ? norm : 1.0)).max().item<double>();
}

// --- deletion / insertion ------------------------------------------------------------------------------

std::vector<double> causal_curve(const torch::Tensor& start, const torch::Tensor& finish, const cv::Mat& map, int steps,
                                 const std::function<torch::Tensor(const torch::Tensor&)>& score, int batch) {
  if (steps < 1) throw Error("deletion/insertion need at least 1 step");
  const int64_t c = start.size(0), h = start.size(1), w = start.size(2), hw = h * w;
  if (map.rows != h || map.cols != w) throw Error("deletion/insertion: map and input sizes differ");
  cv::Mat m = map.isContinuous() ? map : map.clone();
  std::vector<int64_t> order(hw);
  std::iota(order.begin(), order.end(), 0);
  const float* v = m.ptr<float>();
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  // Step s has moved the first ceil(s * hw / steps) pixels of the order.
  auto rank = torch::empty({hw}, torch::kLong);
  for (int64_t i = 0; i < hw; ++i) rank[order[i]] = i;
  rank = rank.view({1, h, w});
  auto s0 = start.unsqueeze(0), f0 = finish.unsqueeze(0);
  std::vector<double> curve;
  for (int first = 0; first <= steps; first += batch) {
    const int last = std::min(steps, first + batch - 1);
    std::vector<torch::Tensor> rows;
    for (int s = first; s <= last; ++s) {
      const int64_t moved = (static_cast<int64_t>(s) * hw + steps - 1) / steps;
      auto mask = (rank < moved).expand({c, h, w}).unsqueeze(0);
      rows.push_back(torch::where(mask, f0, s0));
    }
    auto p = score(torch::cat(rows)).to(torch::kFloat64).contiguous();
    for (int64_t i = 0; i < p.size(0); ++i) curve.push_back(p[i].item<double>());
  }
  return curve;
}

double auc(const std::vector<double>& y) {
  if (y.size() < 2) throw Error("a curve needs at least 2 points");
  double s = 0;
  for (size_t i = 0; i + 1 < y.size(); ++i) s += 0.5 * (y[i] + y[i + 1]);
  return s / static_cast<double>(y.size() - 1);
}

// --- sanity checks -------------------------------------------------------------------------------------

namespace {
std::vector<double> ranks(const cv::Mat& m) {
  cv::Mat c = m.isContinuous() ? m : m.clone();
  const float* v = c.ptr<float>();
  const size_t n = c.total();
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && v[idx[j + 1]] == v[idx[i]]) ++j;
    const double avg = 0.5 * static_cast<double>(i + j);
    for (size_t k = i; k <= j; ++k) r[idx[k]] = avg;
    i = j + 1;
  }
  return r;
}
}  // namespace

double spearman(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size()) throw Error("spearman: maps differ in size");
  auto ra = ranks(a), rb = ranks(b);
  const double n = static_cast<double>(ra.size());
  const double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / n, mb = std::accumulate(rb.begin(), rb.end(), 0.0) / n;
  double num = 0, da = 0, db = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    num += (ra[i] - ma) * (rb[i] - mb);
    da += (ra[i] - ma) * (ra[i] - ma);
    db += (rb[i] - mb) * (rb[i] - mb);
  }
  if (da == 0 || db == 0) return da == db ? 1.0 : 0.0;  // a constant map ranks nothing
  return num / std::sqrt(da * db);
}

double ssim(const cv::Mat& a32, const cv::Mat& b32) {
  if (a32.size() != b32.size()) throw Error("ssim: maps differ in size");
  cv::Mat a, b;
  a32.convertTo(a, CV_64F);
  b32.convertTo(b, CV_64F);
  const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
  auto blur = [](const cv::Mat& m) {
    cv::Mat out;
    cv::GaussianBlur(m, out, cv::Size(11, 11), 1.5, 1.5, cv::BORDER_REFLECT);
    return out;
  };
  cv::Mat mu_a = blur(a), mu_b = blur(b);
  cv::Mat aa = blur(a.mul(a)) - mu_a.mul(mu_a), bb = blur(b.mul(b)) - mu_b.mul(mu_b), ab = blur(a.mul(b)) - mu_a.mul(mu_b);
  cv::Mat num = (2 * mu_a.mul(mu_b) + c1).mul(2 * ab + c2);
  cv::Mat den = (mu_a.mul(mu_a) + mu_b.mul(mu_b) + c1).mul(aa + bb + c2);
  cv::Mat s;
  cv::divide(num, den, s);
  return cv::mean(s)[0];
}

std::vector<std::string> cascade_blocks(const Model& model) {
  std::vector<std::string> blocks;
  for (const auto& sub : model.module().named_modules()) {
    if (sub.name.empty()) continue;
    bool has_params = false;
    for (const auto& p : sub.value.named_parameters(/*recurse=*/false)) has_params |= p.value.defined();
    if (!has_params) continue;
    auto dot = sub.name.find('.');
    auto dot2 = dot == std::string::npos ? dot : sub.name.find('.', dot + 1);
    std::string block = sub.name.substr(0, dot2);
    if (std::find(blocks.begin(), blocks.end(), block) == blocks.end()) blocks.push_back(block);
  }
  std::reverse(blocks.begin(), blocks.end());
  return blocks;
}

Model randomized(const Model& model, const std::vector<std::string>& blocks, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto copy = model.module().clone();
  auto gen = at::detail::createCPUGenerator(seed);
  for (const auto& p : copy.named_parameters(/*recurse=*/true)) {
    bool inside = false;
    for (const auto& b : blocks) inside |= p.name == b || p.name.rfind(b + ".", 0) == 0;
    if (!inside) continue;
    auto t = p.value;
    double s = t.numel() > 1 ? t.std().item<double>() : 0.0;
    if (!(s > 0)) s = 0.01;
    t.copy_(torch::randn(t.sizes(), gen) * s);
  }
  return model.with_module(copy, model.name() + " (randomised)");
}

}  // namespace lumen::metrics
