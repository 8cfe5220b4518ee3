// Line plots as inline SVG, by hand: a plot here is axes, a few polylines, translucent bands and a
// legend, which is less code than wiring a vendored chart library (and its script) into every page,
// and the pages stay static files that work offline.
#include <lumen/report.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace lumen::report {
namespace {

std::string num(double v) { return significant(v, 4); }

// Tableau 10: distinct for the few series a report draws, and readable for most colour vision.
const char* kColours[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

}  // namespace

std::string svg_plot(const Plot& p) {
  const double left = 56, right = 170, top = 28, bottom = 44;
  const double w = p.width - left - right, h = p.height - top - bottom;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : p.series) {
    for (double v : s.x) x0 = std::min(x0, v), x1 = std::max(x1, v);
    for (const auto* ys : {&s.y, &s.low, &s.high})
      for (double v : *ys)
        if (std::isfinite(v)) y0 = std::min(y0, v), y1 = std::max(y1, v);
  }
  if (p.y_min != p.y_max) y0 = p.y_min, y1 = p.y_max;
  if (!(x1 > x0)) x0 = 0, x1 = 1;
  if (!(y1 > y0)) y0 = std::isfinite(y0) ? y0 - 0.5 : 0, y1 = y0 + 1;
  auto X = [&](double v) { return left + (v - x0) / (x1 - x0) * w; };
  auto Y = [&](double v) { return top + (1 - (std::clamp(v, y0, y1) - y0) / (y1 - y0)) * h; };
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(p.width) + "\" height=\"" + std::to_string(p.height) +
                    "\" viewBox=\"0 0 " + std::to_string(p.width) + " " + std::to_string(p.height) +
                    "\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\"><title>" + escape(p.title) + "</title>";
  svg += "<text x=\"" + num(left) + "\" y=\"18\" font-weight=\"bold\">" + escape(p.title) + "</text>";
  // Axes with five ticks each.
  svg += "<g stroke=\"#999\" fill=\"none\"><rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(w) + "\" height=\"" + num(h) + "\"/></g>";
  for (int i = 0; i <= 4; ++i) {
    const double xv = x0 + (x1 - x0) * i / 4, yv = y0 + (y1 - y0) * i / 4;
    svg += "<line x1=\"" + num(X(xv)) + "\" y1=\"" + num(top + h) + "\" x2=\"" + num(X(xv)) + "\" y2=\"" + num(top + h + 4) + "\" stroke=\"#999\"/>";
    svg += "<text x=\"" + num(X(xv)) + "\" y=\"" + num(top + h + 16) + "\" text-anchor=\"middle\">" + num(xv) + "</text>";
    svg += "<line x1=\"" + num(left - 4) + "\" y1=\"" + num(Y(yv)) + "\" x2=\"" + num(left) + "\" y2=\"" + num(Y(yv)) + "\" stroke=\"#999\"/>";
    svg += "<text x=\"" + num(left - 6) + "\" y=\"" + num(Y(yv) + 4) + "\" text-anchor=\"end\">" + num(yv) + "</text>";
  }
  svg += "<text x=\"" + num(left + w / 2) + "\" y=\"" + num(p.height - 8) + "\" text-anchor=\"middle\">" + escape(p.x_label) + "</text>";
  svg += "<text transform=\"translate(14 " + num(top + h / 2) + ") rotate(-90)\" text-anchor=\"middle\">" + escape(p.y_label) + "</text>";
  for (size_t k = 0; k < p.series.size(); ++k) {
    const auto& s = p.series[k];
    const std::string colour = kColours[k % 10];
    const size_t n = std::min(s.x.size(), s.y.size());
    if (s.low.size() >= n && s.high.size() >= n && n > 0) {
      std::string band;
      for (size_t i = 0; i < n; ++i) band += num(X(s.x[i])) + "," + num(Y(s.high[i])) + " ";
      for (size_t i = n; i-- > 0;) band += num(X(s.x[i])) + "," + num(Y(s.low[i])) + " ";
      svg += "<polygon class=\"band\" points=\"" + band + "\" fill=\"" + colour + "\" fill-opacity=\"0.18\" stroke=\"none\"/>";
    }
    std::string line;
    for (size_t i = 0; i < n; ++i) line += num(X(s.x[i])) + "," + num(Y(s.y[i])) + " ";
    svg += "<polyline class=\"series\" data-name=\"" + escape(s.name) + "\" points=\"" + line + "\" fill=\"none\" stroke=\"" + colour +
           "\" stroke-width=\"2\"/>";
    const double ly = top + 8 + 18.0 * static_cast<double>(k);
    svg += "<line x1=\"" + num(left + w + 12) + "\" y1=\"" + num(ly) + "\" x2=\"" + num(left + w + 32) + "\" y2=\"" + num(ly) + "\" stroke=\"" + colour +
           "\" stroke-width=\"3\"/><text x=\"" + num(left + w + 38) + "\" y=\"" + num(ly + 4) + "\">" + escape(s.name) + "</text>";
  }
  return svg + "</svg>";
}

}  // namespace lumen::report
