// Finish: a method's raw map becomes a Map — upsampled to the image, normalised, measured and boxed —
// with what it explains (method, layer, target) written beside it.
#include "explain/pipeline.h"

#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstring>

namespace lumen::detail {
namespace {

cv::Mat to_mat(const torch::Tensor& hw) {
  auto t = hw.detach().to(torch::kFloat32).contiguous();
  cv::Mat m(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_32F);
  std::memcpy(m.data, t.data_ptr<float>(), sizeof(float) * static_cast<size_t>(t.numel()));
  return m;
}

// [C,H,W] tensor -> H x W matrix with C channels.
cv::Mat to_mat_hwc(const torch::Tensor& chw) {
  auto t = chw.detach().to(torch::kFloat32).permute({1, 2, 0}).contiguous();
  cv::Mat m(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_32FC(static_cast<int>(t.size(2))));
  std::memcpy(m.data, t.data_ptr<float>(), sizeof(float) * static_cast<size_t>(t.numel()));
  return m;
}

// Rounding in the affine map can leave -1e-10 or 1+1e-7; the documented range is [0, 1]. Two
// thresholds in place: half the time of cv::max and cv::min with a scalar, which is visible when six
// methods finish 48 maps per batch.
void clamp_unit(cv::Mat& m) {
  cv::threshold(m, m, 1.0, 1.0, cv::THRESH_TRUNC);
  cv::threshold(m, m, 0.0, 0.0, cv::THRESH_TOZERO);
}

// pytorch-grad-cam's scale_cam_image: (t - min) / (max(t - min) + 1e-7).
cv::Mat scale_like_pgc(const cv::Mat& t) {
  double mn, mx;
  cv::minMaxLoc(t, &mn, &mx);
  cv::Mat out;
  t.convertTo(out, CV_32F, 1.0, -mn);
  return out / (mx - mn + 1e-7);
}

// A volume's map: the 3-D versions of the steps of finish_map (trilinear, half-pixel centres as
// torch's interpolate(align_corners=False); the box in 3-D). Slices stay stacked one below another.
void finish_volume(Map& m, const torch::Tensor& raw_stacked, cv::Size image, const Canvas& canvas, bool box) {
  const int depth = canvas.depth, width = image.width, height = image.height;
  m.normalized = cv::Mat();
  m.box = Box();
  m.parts.clear();
  m.depth = depth;
  m.raw = to_mat(raw_stacked);
  const int64_t d = m.raw_depth, h = raw_stacked.size(0) / std::max(1, m.raw_depth), w = raw_stacked.size(1);
  const auto volume = raw_stacked.detach().to(torch::kFloat32).reshape({1, 1, d, h, w});
  const auto up = at::upsample_trilinear3d(volume, {depth, height, width}, /*align_corners=*/false);
  m.upsampled = to_mat(up.reshape({depth * height, width}));
  double mn, mx, umn, umx;
  cv::Point peak;
  cv::minMaxLoc(m.raw, &mn, &mx);
  m.stats.min = static_cast<float>(mn);
  m.stats.max = static_cast<float>(mx);
  m.stats.mean = static_cast<float>(cv::mean(m.raw)[0]);
  cv::minMaxLoc(m.upsampled, &umn, &umx, nullptr, &peak);
  m.stats.peak_x = peak.x;
  m.stats.peak_y = peak.y % height;
  m.stats.peak_z = peak.y / height;
  m.empty = !(umx - umn > 1e-6 * std::max(std::abs(umx), 1e-30));
  if (m.empty) {
    m.normalized = cv::Mat::zeros(depth * height, width, CV_32F);
    return;
  }
  m.upsampled.convertTo(m.normalized, CV_32F, 1.0 / (umx - umn), -umn / (umx - umn));
  clamp_unit(m.normalized);
  if (box) m.box = threshold_box_3d(m.upsampled, depth, canvas.box_threshold);
}

}  // namespace

std::vector<MapPart> finish_parts(const Result& res, int64_t image, cv::Size size, const Canvas& canvas, int raw_depth) {
  std::vector<MapPart> parts;
  for (int64_t j = 0; j < res.parts.size(1); ++j) {
    Map scratch;
    scratch.raw_depth = raw_depth;
    finish_map(scratch, res.parts[image][j], size, canvas, /*box=*/false);  // a part keeps its maps only
    MapPart p{scratch.raw, scratch.normalized, {}};
    if (res.part_scores.defined()) {
      const auto logits = res.part_scores[image][j].to(torch::kFloat64);
      const auto prob = torch::softmax(logits, 0);
      const auto [best, order] = prob.topk(std::min<int64_t>(2, prob.size(0)));
      for (int64_t r = 0; r < order.size(0); ++r) {
        const int64_t cls = order[r].item<int64_t>();
        p.top.push_back({cls, label_of(canvas.labels, cls), logits[cls].item<float>(), best[r].item<float>()});
      }
    }
    parts.push_back(std::move(p));
  }
  return parts;
}

// The raw map at the image's size. Half-pixel-centre bilinear, as torch's interpolate(align_corners=False)
// and pytorch-grad-cam's cv2.resize (they agree to 1e-7 of the map's range). OpenCV's vectorised kernel
// takes ~40 us for a 7x7 -> 224x224 map where at::upsample_bilinear2d takes ~600 us, which several
// methods times a batch of maps makes visible next to the forward.
// A layer of a model that pads its own canvas (a torchvision detector) covers more than the image: its
// map is laid over that canvas in the model input's pixels and the input's part is cut out before it
// is stretched to the image. A map at the input's size (an input gradient) covers the input already.
namespace {
cv::Mat at_image_size(const cv::Mat& raw, cv::Size image, const Canvas& canvas) {
  cv::Mat up;
  if ((canvas.content_rows >= 1 && canvas.content_cols >= 1) || raw.size() == canvas.input) {
    cv::resize(raw, up, image, 0, 0, cv::INTER_LINEAR);
    return up;
  }
  const cv::Size whole(static_cast<int>(std::lround(canvas.input.width / canvas.content_cols)),
                       static_cast<int>(std::lround(canvas.input.height / canvas.content_rows)));
  cv::Mat over;
  cv::resize(raw, over, whole, 0, 0, cv::INTER_LINEAR);
  cv::resize(over(cv::Rect(0, 0, std::min(canvas.input.width, whole.width), std::min(canvas.input.height, whole.height))), up, image, 0, 0,
             cv::INTER_LINEAR);
  return up;
}
}  // namespace

void finish_map(Map& m, const torch::Tensor& raw_hw, cv::Size image, const Canvas& canvas, bool box) {
  box = box && canvas.boxes;
  if (canvas.depth > 0) return finish_volume(m, raw_hw, image, canvas, box);
  const int width = image.width, height = image.height;
  // A Map copied from another shares its matrices; writing into them would change both.
  m.normalized = cv::Mat();
  m.upsampled = cv::Mat();
  m.box = Box();
  m.parts.clear();  // a map made from other maps (aggregation, contrast, aug-smooth) is not a decomposition
  m.raw = to_mat(raw_hw);
  m.upsampled = at_image_size(m.raw, image, canvas);
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
    return;
  }
  if (canvas.compat) {
    // Per layer: scale, resize to the input (cv2.resize, bilinear), scale again after "aggregating".
    cv::Mat at_input;
    cv::resize(scale_like_pgc(m.raw), at_input, canvas.input, 0, 0, cv::INTER_LINEAR);
    m.normalized = scale_like_pgc(at_input);
    if (m.normalized.size() != image) cv::resize(m.normalized, m.normalized, image, 0, 0, cv::INTER_LINEAR);
  } else {
    m.upsampled.convertTo(m.normalized, CV_32F, 1.0 / (umx - umn), -umn / (umx - umn));
  }
  clamp_unit(m.normalized);
  if (box) m.box = threshold_box(m.upsampled, canvas.box_threshold, umx);
}

namespace {
// A detector's boxes, from the model input's pixels to the image's (the input is the image stretched).
std::vector<Detection> in_image_pixels(std::vector<Detection> boxes, cv::Size input, cv::Size image, const std::vector<std::string>* labels) {
  const float sx = static_cast<float>(image.width) / static_cast<float>(input.width);
  const float sy = static_cast<float>(image.height) / static_cast<float>(input.height);
  for (auto& b : boxes) b.x0 *= sx, b.x1 *= sx, b.y0 *= sy, b.y1 *= sy, b.label = label_of(labels, b.cls);
  return boxes;
}
}  // namespace

void finish_jobs(const std::vector<Job>& jobs, const Plan& plan, const Forward& forward, const Target& target,
                 const torch::Tensor& target_values, const Canvas& canvas, std::vector<std::vector<Map>>& maps) {
  const auto n = static_cast<int64_t>(canvas.images.size());
  // Upsampling, normalising and boxing each map is independent of the others: all maps of all
  // methods are spread over the threads at once. OpenCV's own loop, because OpenCV runs its nested
  // parallel calls (connected components) serially there; from ATen's threads each of them spread
  // over OpenCV's threads as well, and two threads finished maps no faster than one.
  std::vector<Map> finished(jobs.size() * static_cast<size_t>(n));
  const cv::Range all_maps(0, static_cast<int>(finished.size()));
  cv::parallel_for_(all_maps, [&](const cv::Range& range) {
    for (int64_t f = range.start; f < range.end; ++f) {
      const Job& job = jobs[static_cast<size_t>(f / n)];
      const Result& res = job.result;
      const int64_t i = f % n;
      if (!target.explains(i)) continue;  // this image has no such box: no map
      Map& m = finished[static_cast<size_t>(f)];
      m.method = job.method->name;
      m.layer = job.layer_name(plan);
      m.target = target.name;
      m.cls = target.classes.empty() ? -1 : target.classes[static_cast<size_t>(i)];
      m.label = label_of(canvas.labels, m.cls);
      m.counterfactual = target.counterfactual;
      m.target_value = target_values[i].item<float>();
      m.detections = in_image_pixels(target.boxes_of(i), canvas.input, canvas.images[static_cast<size_t>(i)], canvas.labels);
      m.is_signed = res.is_signed;
      if (job.method->per_layer() && forward.layouts[job.layer].kind == TokenLayout::Kind::Volume)
        m.raw_depth = static_cast<int>(forward.layouts[job.layer].grid_d);
      finish_map(m, res.maps[i], canvas.images[static_cast<size_t>(i)], canvas);
      if (res.attribution.defined()) m.attribution = to_mat_hwc(res.attribution[i]);
      if (i < static_cast<int64_t>(res.extra.size())) m.extra = res.extra[static_cast<size_t>(i)];
      if (res.parts.defined()) m.parts = finish_parts(res, i, canvas.images[static_cast<size_t>(i)], canvas, m.raw_depth);
      if (canvas.compat) m.extra["compat"] = "pytorch-grad-cam";
      if (job.method->per_layer() && forward.layouts[job.layer].kind != TokenLayout::Kind::ChannelsFirst)
        m.extra["layout"] = forward.layouts[job.layer].describe();
      if (job.method->space == Space::Attention) {
        m.extra["layout"] = forward.attention.tokens.describe();
        m.extra["blocks"] = forward.attention.maps.size();
      }
      if (job.method->extra_passes != ExtraPasses::None) m.extra["rows_per_pass"] = plan.shared.rows_per_pass;
    }
  }, static_cast<double>(all_maps.end));
  for (size_t j = 0; j < jobs.size(); ++j)
    for (int64_t i = 0; i < n; ++i)
      if (target.explains(i)) maps[static_cast<size_t>(i)].push_back(std::move(finished[j * static_cast<size_t>(n) + static_cast<size_t>(i)]));
}

}  // namespace lumen::detail
