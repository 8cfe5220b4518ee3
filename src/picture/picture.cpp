#include <lumen/error.h>
#include <lumen/picture.h>
#include <lumen/report.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

namespace lumen {

Colormap parse_colormap(const std::string& name) {
  if (name == "jet") return Colormap::Jet;
  if (name == "turbo") return Colormap::Turbo;
  if (name == "viridis") return Colormap::Viridis;
  if (name == "inferno") return Colormap::Inferno;
  throw Error("unknown colour map '" + name + "' (expected jet, turbo, viridis or inferno)");
}

Sign parse_sign(const std::string& name) {
  if (name == "all") return Sign::All;
  if (name == "positive") return Sign::Positive;
  if (name == "negative") return Sign::Negative;
  if (name == "absolute") return Sign::Absolute;
  throw Error("unknown sign '" + name + "' (expected all, positive, negative or absolute)");
}

std::string to_string(Sign sign) {
  switch (sign) {
    case Sign::All: return "all";
    case Sign::Positive: return "positive";
    case Sign::Negative: return "negative";
    case Sign::Absolute: return "absolute";
  }
  return "all";
}

namespace {

int cv_colormap(Colormap cmap) {
  switch (cmap) {
    case Colormap::Jet: return cv::COLORMAP_JET;
    case Colormap::Turbo: return cv::COLORMAP_TURBO;
    case Colormap::Viridis: return cv::COLORMAP_VIRIDIS;
    case Colormap::Inferno: return cv::COLORMAP_INFERNO;
  }
  return cv::COLORMAP_JET;
}

// The part of a signed map a sign mode draws, as magnitudes >= 0 (All keeps the sign).
cv::Mat signed_part(const cv::Mat& values, Sign sign) {
  cv::Mat out;
  switch (sign) {
    case Sign::All: return values;
    case Sign::Positive: cv::max(values, 0.0, out); return out;
    case Sign::Negative: cv::max(-values, 0.0, out); return out;
    case Sign::Absolute: return cv::abs(values);
  }
  return values;
}

}  // namespace

const cv::Mat& diverging_lut() {
  // ColorBrewer RdBu (Cynthia Brewer, Apache-2.0 colour specifications), 11 classes, reversed so that
  // negative is blue and positive red; interpolated linearly to 256 entries with zero at entry 128.
  static const cv::Mat lut = [] {
    const int rgb[11][3] = {{5, 48, 97},     {33, 102, 172}, {67, 147, 195}, {146, 197, 222}, {209, 229, 240}, {247, 247, 247},
                            {253, 219, 199}, {244, 165, 130}, {214, 96, 77},  {178, 24, 43},   {103, 0, 31}};
    cv::Mat m(1, 256, CV_8UC3);
    for (int i = 0; i < 256; ++i) {
      // Entry 128 is exactly the centre colour; the two halves stretch to the ends.
      const double t = i <= 128 ? 5.0 * i / 128.0 : 5.0 + 5.0 * (i - 128) / 127.0;
      const int k = std::min(9, static_cast<int>(t));
      const double f = t - k;
      cv::Vec3b c;
      for (int ch = 0; ch < 3; ++ch) c[2 - ch] = cv::saturate_cast<uchar>(rgb[k][ch] + f * (rgb[k + 1][ch] - rgb[k][ch]));
      m.at<cv::Vec3b>(0, i) = c;
    }
    return m;
  }();
  return lut;
}

cv::Vec3b diverging_centre() { return diverging_lut().at<cv::Vec3b>(0, 128); }

cv::Mat heatmap(const cv::Mat& normalized, Colormap cmap) {
  cv::Mat u8, out;
  normalized.convertTo(u8, CV_8U, 255.0);
  cv::applyColorMap(u8, out, cv_colormap(cmap));
  return out;
}

cv::Mat diverging_heatmap(const cv::Mat& values, float scale) {
  // value -> index 128 + 127.5 * value / scale, so that 0 lands on the centre entry.
  cv::Mat index, out, grey;
  values.convertTo(index, CV_8U, scale > 0 ? 127.5 / scale : 0.0, 128.0);
  cv::cvtColor(index, grey, cv::COLOR_GRAY2BGR);
  cv::LUT(grey, diverging_lut(), out);
  return out;
}

float signed_scale(const cv::Mat& values, Sign sign) {
  cv::Mat mag = cv::abs(signed_part(values, sign));
  std::vector<float> v(mag.begin<float>(), mag.end<float>());
  if (v.empty()) return 0;
  auto at = v.begin() + static_cast<std::ptrdiff_t>(0.98 * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), at, v.end());
  float s = *at;
  // A map that is zero almost everywhere: the largest value, so that its few pixels still show.
  if (!(s > 0)) s = *std::max_element(v.begin(), v.end());
  return s;
}

cv::Mat signed_picture(const cv::Mat& map) {
  double lo, hi;
  cv::minMaxLoc(map, &lo, &hi);
  double scale = std::max(std::abs(lo), std::abs(hi));
  cv::Mat out;
  // 0 -> mid grey, +max|m| -> white, -max|m| -> black.
  map.convertTo(out, CV_8U, scale > 0 ? 127.5 / scale : 0.0, 127.5);
  return out;
}

cv::Mat attribution_picture(const cv::Mat& attribution, cv::Size size, bool rgb_order) {
  cv::Mat resized;
  cv::resize(attribution, resized, size, 0, 0, cv::INTER_LINEAR);
  std::vector<cv::Mat> planes;
  cv::split(resized, planes);
  double scale = 0;
  for (const auto& p : planes) scale = std::max(scale, cv::norm(p, cv::NORM_INF));
  cv::Mat merged, out;
  if (rgb_order && planes.size() == 3) std::swap(planes[0], planes[2]);
  cv::merge(planes, merged);
  merged.convertTo(out, CV_8U, scale > 0 ? 127.5 / scale : 0.0, 127.5);
  return out;
}

cv::Mat overlay(const cv::Mat& bgr, const cv::Mat& normalized, Colormap cmap, float alpha) {
  cv::Mat heat = heatmap(normalized, cmap), out;
  cv::addWeighted(heat, alpha, bgr, 1.0 - alpha, 0.0, out);
  return out;
}

cv::Mat signed_overlay(const cv::Mat& bgr, const cv::Mat& values, Sign sign, Colormap cmap, float scale, float alpha) {
  const cv::Mat part = signed_part(values, sign);
  cv::Mat colour, weight;
  if (sign == Sign::All) {
    colour = diverging_heatmap(part, scale);
  } else {
    cv::Mat n;
    part.convertTo(n, CV_32F, scale > 0 ? 1.0 / scale : 0.0);
    cv::min(n, 1.0, n);
    colour = heatmap(n, cmap);
  }
  // Opacity |value| / scale (clipped at 1) times alpha: zero shows the image unchanged.
  cv::Mat mag = cv::abs(part);
  mag.convertTo(weight, CV_32F, scale > 0 ? alpha / scale : 0.0);
  cv::min(weight, alpha, weight);
  cv::Mat w3, img_f, col_f, out;
  cv::cvtColor(weight, w3, cv::COLOR_GRAY2BGR);
  bgr.convertTo(img_f, CV_32FC3);
  colour.convertTo(col_f, CV_32FC3);
  cv::Mat blended = img_f + w3.mul(col_f - img_f);
  blended.convertTo(out, CV_8UC3);
  return out;
}

void draw_box(cv::Mat& bgr, const Box& box, const cv::Scalar& colour, int thickness) {
  if (!box.valid) return;
  cv::rectangle(bgr, cv::Point(box.x0, box.y0), cv::Point(box.x1 - 1, box.y1 - 1), colour, thickness);
}

namespace {

constexpr int kMinCaptionWidth = 360;
const cv::Scalar kStripColour(40, 40, 40), kTextColour(235, 235, 235);

// Hershey fonts draw ASCII only: anything else becomes '?', and text too wide for the strip ends in "...".
std::string fit(const std::string& text, double scale, int width) {
  std::string ascii;
  for (unsigned char c : text) ascii += c >= 32 && c < 127 ? static_cast<char>(c) : '?';
  int base = 0;
  if (cv::getTextSize(ascii, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &base).width <= width) return ascii;
  while (!ascii.empty() && cv::getTextSize(ascii + "...", cv::FONT_HERSHEY_SIMPLEX, scale, 1, &base).width > width) ascii.pop_back();
  return ascii + "...";
}

}  // namespace

void draw_detections(cv::Mat& bgr, const std::vector<Detection>& detections) {
  // Green, unlike the paper's white box: the detector's box is what is explained, the white one what
  // the map found.
  const cv::Scalar green(60, 220, 60), black(0, 0, 0);
  const double scale = std::clamp(bgr.cols / 900.0, 0.35, 0.7);
  for (const auto& d : detections) {
    const cv::Point p0(static_cast<int>(std::lround(d.x0)), static_cast<int>(std::lround(d.y0)));
    const cv::Point p1(static_cast<int>(std::lround(d.x1)) - 1, static_cast<int>(std::lround(d.y1)) - 1);
    cv::rectangle(bgr, p0, p1, green, 2);
    const std::string text = fit((d.label.empty() ? std::to_string(d.cls) : d.label) + " " + report::significant(d.score), scale, bgr.cols - 4);
    int base = 0;
    const cv::Size size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &base);
    // The label sits on the box's top edge, inside the picture.
    const int x = std::clamp(p0.x, 0, std::max(0, bgr.cols - size.width - 4));
    const int y = std::clamp(p0.y, size.height + base + 2, bgr.rows);
    cv::rectangle(bgr, cv::Point(x, y - size.height - base - 2), cv::Point(x + size.width + 4, y), green, cv::FILLED);
    cv::putText(bgr, text, {x + 2, y - base}, cv::FONT_HERSHEY_SIMPLEX, scale, black, 1, cv::LINE_AA);
  }
}

cv::Mat caption_strip(const Caption& caption, int width) {
  const double scale = std::clamp(width / 1300.0, 0.36, 0.6);
  const int line = static_cast<int>(std::lround(30 * scale + 4));
  const int margin = 8, bar_h = std::max(8, line / 2);
  const int height = margin + line * static_cast<int>(caption.lines.size()) + bar_h + line + margin;
  cv::Mat strip(height, width, CV_8UC3, kStripColour);
  int y = margin;
  for (const auto& text : caption.lines) {
    y += line;
    cv::putText(strip, fit(text, scale, width - 2 * margin), {margin, y - line / 4}, cv::FONT_HERSHEY_SIMPLEX, scale, kTextColour, 1, cv::LINE_AA);
  }
  // The colour bar: the whole colour map from left to right, with what its ends (and middle) mean.
  y += line / 3;
  const int bar_w = width - 2 * margin;
  cv::Mat ramp(1, bar_w, CV_32F);
  for (int x = 0; x < bar_w; ++x) ramp.at<float>(0, x) = bar_w > 1 ? static_cast<float>(x) / static_cast<float>(bar_w - 1) : 0.f;
  cv::Mat colours = caption.diverging ? diverging_heatmap(ramp * 2.0 - 1.0, 1.0f) : heatmap(ramp, caption.cmap);
  cv::Mat bar;
  cv::resize(colours, bar, {bar_w, bar_h}, 0, 0, cv::INTER_NEAREST);
  bar.copyTo(strip(cv::Rect(margin, y, bar_w, bar_h)));
  y += bar_h + line - line / 4;
  int base = 0;
  auto label = [&](const std::string& text, int x, int align) {  // align: 0 left, 1 centre, 2 right
    const std::string t = fit(text, scale, bar_w / 3);
    const int w = cv::getTextSize(t, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &base).width;
    cv::putText(strip, t, {x - (align == 1 ? w / 2 : align == 2 ? w : 0), y}, cv::FONT_HERSHEY_SIMPLEX, scale, kTextColour, 1, cv::LINE_AA);
  };
  label(caption.low, margin, 0);
  if (!caption.middle.empty()) label(caption.middle, width / 2, 1);
  label(caption.high, width - margin, 2);
  return strip;
}

cv::Mat with_caption(const cv::Mat& picture, const Caption& caption) {
  const int width = std::max(picture.cols, kMinCaptionWidth);
  cv::Mat top(picture.rows, width, CV_8UC3, kStripColour);
  picture.copyTo(top(cv::Rect((width - picture.cols) / 2, 0, picture.cols, picture.rows)));
  cv::Mat out;
  cv::vconcat(top, caption_strip(caption, width), out);
  return out;
}

Caption map_caption(const Map& m, const ImageExplanation& e, const RenderOptions& options) {
  Caption c;
  std::string image = std::filesystem::path(e.source).filename().string();
  std::string target = m.cls >= 0 ? "class " + std::to_string(m.cls) + (m.label.empty() ? "" : " " + m.label) : m.target;
  std::string score = m.target + ", score " + report::significant(m.target_value);
  if (!m.detections.empty()) {
    const Detection& d = m.detections.front();
    target = m.target + ": class " + std::to_string(d.cls) + (d.label.empty() ? "" : " " + d.label) + ", detector score " + report::significant(d.score);
    score = "explained: IoU + score of the best-matching box = " + report::significant(m.target_value);
  }
  for (const auto& p : e.top)
    if (p.cls == m.cls) score += ", probability " + report::significant(p.probability);
  c.lines.push_back(image + " | " + target);
  c.lines.push_back(score);
  std::string what = m.method + " at " + m.layer;
  if (m.counterfactual) what += " | counterfactual: evidence against the class";
  if (m.contrastive) what += " | contrast: this class minus the others";
  c.lines.push_back(what);
  if (m.empty) {
    c.lines.push_back("the map is constant: no spatial evidence");
  }
  if (m.is_signed) {
    const float s = signed_scale(m.upsampled, options.sign);
    c.cmap = options.colormap;
    const std::string S = report::significant(s);
    switch (options.sign) {
      case Sign::All: c.diverging = true, c.low = "-" + S, c.middle = "0", c.high = "+" + S + " (98th pct)"; break;
      case Sign::Positive: c.low = "0", c.high = "+" + S + " (positive part)"; break;
      case Sign::Negative: c.low = "0", c.high = "-" + S + " (negative part)"; break;
      case Sign::Absolute: c.low = "0", c.high = "|" + S + "| (magnitude)"; break;
    }
    if (m.box.valid) c.lines.back() += " | box: positive part";
  } else {
    c.cmap = options.colormap;
    c.low = "low (" + report::significant(m.stats.min) + ")";
    c.middle = "normalised";
    c.high = "high (" + report::significant(m.stats.max) + ")";
  }
  return c;
}

cv::Mat heat_picture(const Map& m, const ImageExplanation& e, const RenderOptions& options) {
  cv::Mat pic;
  if (m.is_signed) {
    const float s = signed_scale(m.upsampled, options.sign);
    if (options.sign == Sign::All) {
      pic = diverging_heatmap(m.upsampled, s);
    } else {
      cv::Mat n;
      signed_part(m.upsampled, options.sign).convertTo(n, CV_32F, s > 0 ? 1.0 / s : 0.0);
      cv::min(n, 1.0, n);
      pic = heatmap(n, options.colormap);
    }
  } else {
    pic = heatmap(m.normalized, options.colormap);
  }
  return options.plain ? pic : with_caption(pic, map_caption(m, e, options));
}

cv::Mat overlay_picture(const cv::Mat& image, const Map& m, const ImageExplanation& e, const RenderOptions& options) {
  cv::Mat pic = m.is_signed ? signed_overlay(image, m.upsampled, options.sign, options.colormap, signed_scale(m.upsampled, options.sign),
                                             std::min(1.0f, 1.6f * options.alpha))
                            : overlay(image, m.normalized, options.colormap, options.alpha);
  if (options.draw_box) draw_box(pic, m.box, cv::Scalar(255, 255, 255), 2);
  draw_detections(pic, m.detections);
  return options.plain ? pic : with_caption(pic, map_caption(m, e, options));
}

namespace {

// Part j of k: evenly spaced hues at full saturation and value (pytorch-grad-cam samples matplotlib's
// gist_rainbow the same way; OpenCV has no such map, and the hue circle gives as distinct colours).
cv::Vec3b part_colour(size_t j, size_t k) {
  cv::Mat hsv(1, 1, CV_8UC3, cv::Scalar(static_cast<double>(170 * j / std::max<size_t>(k, 1)), 255, 255)), bgr;
  cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
  return bgr.at<cv::Vec3b>(0, 0);
}

std::string percent(float p) { return p < 0.005f ? "<1%" : std::to_string(static_cast<int>(std::lround(100 * p))) + "%"; }

}  // namespace

cv::Mat parts_picture(const cv::Mat& image, const Map& m, const ImageExplanation& e, const RenderOptions& options) {
  if (m.parts.empty()) throw Error("the " + m.method + " map has no parts to draw");
  const size_t k = m.parts.size();
  cv::Mat colour(image.size(), CV_32FC3, cv::Scalar::all(0)), best(image.size(), CV_32F, cv::Scalar(-1));
  for (size_t j = 0; j < k; ++j) {
    const cv::Vec3b c = part_colour(j, k);
    const cv::Mat& v = m.parts[j].normalized;
    for (int y = 0; y < image.rows; ++y)
      for (int x = 0; x < image.cols; ++x) {
        const float value = v.at<float>(y, x);
        if (value <= best.at<float>(y, x)) continue;
        best.at<float>(y, x) = value;
        colour.at<cv::Vec3f>(y, x) = cv::Vec3f(c[0], c[1], c[2]) * value;
      }
  }
  cv::Mat img_f, pic;
  image.convertTo(img_f, CV_32FC3);
  cv::Mat blended = img_f * (1.0 - options.alpha) + colour * options.alpha;
  blended.convertTo(pic, CV_8UC3);
  if (options.plain) return pic;
  // The legend: what the colours are, one line per part, its swatch at the left.
  const int width = std::max(pic.cols, kMinCaptionWidth);
  const double scale = std::clamp(width / 1300.0, 0.36, 0.6);
  const int line = static_cast<int>(std::lround(30 * scale + 4)), margin = 8, swatch = line - 6;
  const int chosen = m.extra.value("concept", -1);
  std::vector<std::string> head = {std::filesystem::path(e.source).filename().string() + " | " + m.method + " at " + m.layer + ": " +
                                       std::to_string(k) + " concepts (NMF)",
                                   "colour: the strongest concept; brightness: its strength"};
  const int height = margin + line * static_cast<int>(head.size() + k) + margin;
  cv::Mat strip(height, width, CV_8UC3, kStripColour);
  int y = margin;
  for (const auto& text : head) {
    y += line;
    cv::putText(strip, fit(text, scale, width - 2 * margin), {margin, y - line / 4}, cv::FONT_HERSHEY_SIMPLEX, scale, kTextColour, 1, cv::LINE_AA);
  }
  for (size_t j = 0; j < k; ++j) {
    y += line;
    const cv::Vec3b c = part_colour(j, k);
    cv::rectangle(strip, cv::Rect(margin, y - line + 3, swatch, swatch), cv::Scalar(c[0], c[1], c[2]), cv::FILLED);
    std::string text = "concept " + std::to_string(j + 1);
    if (static_cast<int>(j) == chosen) text += " [the map for " + (m.cls >= 0 ? std::to_string(m.cls) : m.target) + "]";
    text += ":";
    for (size_t r = 0; r < m.parts[j].top.size(); ++r)
      text += (r ? ", " : " ") + (m.parts[j].top[r].label.empty() ? "class " + std::to_string(m.parts[j].top[r].cls) : m.parts[j].top[r].label) +
              " " + percent(m.parts[j].top[r].probability);
    const int x = margin + swatch + 6;
    cv::putText(strip, fit(text, scale, width - x - margin), {x, y - line / 4}, cv::FONT_HERSHEY_SIMPLEX, scale, kTextColour, 1, cv::LINE_AA);
  }
  cv::Mat top(pic.rows, width, CV_8UC3, kStripColour), out;
  pic.copyTo(top(cv::Rect((width - pic.cols) / 2, 0, pic.cols, pic.rows)));
  cv::vconcat(top, strip, out);
  return out;
}

cv::Mat slices_picture(const cv::Mat& slices, const Map& m, const ImageExplanation& e, const RenderOptions& options) {
  const int depth = m.depth;
  if (depth < 1 || m.normalized.rows % depth != 0) throw Error("the " + m.method + " map is no volume");
  const int h = m.normalized.rows / depth, w = m.normalized.cols, peak = m.stats.peak_z;
  constexpr int kMostSlices = 8, kTileHeight = 128, kMostWidth = 1800, kGap = 4, kLabel = 22;
  const int count = std::min(depth, kMostSlices);
  std::vector<int> shown;
  for (int j = 0; j < count; ++j) shown.push_back(count == 1 ? 0 : static_cast<int>(std::lround(static_cast<double>(j) * (depth - 1) / (count - 1))));
  if (std::find(shown.begin(), shown.end(), peak) == shown.end()) {
    auto nearest = std::min_element(shown.begin(), shown.end(), [&](int a, int b) { return std::abs(a - peak) < std::abs(b - peak); });
    *nearest = peak;
    std::sort(shown.begin(), shown.end());
  }
  const int scale = std::max(1, std::min((kTileHeight + h - 1) / h, kMostWidth / std::max(1, count * (w + kGap))));
  const float signed_at = m.is_signed ? signed_scale(m.upsampled, options.sign) : 0.f;
  const int tile_w = w * scale, tile_h = h * scale;
  cv::Mat row(kLabel + tile_h, count * tile_w + (count - 1) * kGap, CV_8UC3, kStripColour);
  for (int j = 0; j < count; ++j) {
    const int z = shown[static_cast<size_t>(j)];
    const cv::Rect in(0, z * h, w, h);
    cv::Mat tile;
    if (m.is_signed)
      tile = slices.empty() ? diverging_heatmap(m.upsampled(in), signed_at)
                            : signed_overlay(slices(in), m.upsampled(in), options.sign, options.colormap, signed_at, std::min(1.0f, 1.6f * options.alpha));
    else
      tile = slices.empty() ? heatmap(m.normalized(in), options.colormap) : overlay(slices(in), m.normalized(in), options.colormap, options.alpha);
    cv::resize(tile, tile, {tile_w, tile_h}, 0, 0, cv::INTER_NEAREST);
    if (options.draw_box && m.box.valid && z >= m.box.z0 && z < m.box.z1) {
      Box b = m.box;
      b.x0 *= scale, b.y0 *= scale, b.x1 *= scale, b.y1 *= scale;
      draw_box(tile, b, cv::Scalar(255, 255, 255), 2);
    }
    const int x = j * (tile_w + kGap);
    tile.copyTo(row(cv::Rect(x, kLabel, tile_w, tile_h)));
    const std::string label = "z=" + std::to_string(z) + (z == peak ? " peak" : "");
    cv::putText(row, fit(label, 0.45, tile_w), {x + 2, kLabel - 6}, cv::FONT_HERSHEY_SIMPLEX, 0.45, kTextColour, 1, cv::LINE_AA);
  }
  if (options.plain) return row;
  Caption c = map_caption(m, e, options);
  std::string volume = "volume " + std::to_string(depth) + "x" + std::to_string(h) + "x" + std::to_string(w) + " (slices x height x width); " +
                       (count < depth ? std::to_string(count) + " of " + std::to_string(depth) + " slices shown" : "every slice shown");
  if (m.box.valid) volume += "; box: slices " + std::to_string(m.box.z0) + "-" + std::to_string(m.box.z1 - 1);
  c.lines.push_back(volume);
  return with_caption(row, c);
}

}  // namespace lumen
