// Integrated Gradients (Sundararajan et al., ICML 2017, eq. 1 and 3):
//   attr = (x - b) * integral_0^1 dy/dx(b + a (x - b)) da,
// the integral by an m-point rule on [0, 1]: Gauss-Legendre (default) or the trapezoid rule on m evenly
// spaced points. The map sums the channels (signed). Completeness says sum(attr) = f(x) - f(b); the gap
// |sum(attr) - (f(x) - f(b))| / |f(x) - f(b)| is reported per image.
#include <lumen/error.h>

#include "methods/kit/method.h"

#include <cmath>

namespace lumen::detail {
namespace {

// Gauss-Legendre nodes and weights on [0, 1], by Newton's method on the Legendre polynomial — a few
// lines, where a quadrature library would be a new dependency for one function.
void gauss_legendre(int m, std::vector<double>& nodes, std::vector<double>& weights) {
  nodes.assign(m, 0);
  weights.assign(m, 0);
  for (int i = 0; i < m; ++i) {
    double z = std::cos(M_PI * (i + 0.75) / (m + 0.5)), dp = 0;
    for (int it = 0; it < 100; ++it) {
      double p0 = 1, p1 = z;
      for (int k = 2; k <= m; ++k) {
        double p2 = ((2 * k - 1) * z * p1 - (k - 1) * p0) / k;
        p0 = p1;
        p1 = p2;
      }
      dp = m * (z * p1 - p0) / (z * z - 1);
      double dz = p1 / dp;
      z -= dz;
      if (std::abs(dz) < 1e-15) break;
    }
    nodes[i] = 0.5 * (1 - z);
    weights[i] = 1.0 / ((1 - z * z) * dp * dp);  // = 2/((1-z^2) P'^2) scaled by 1/2 for [0, 1]
  }
}

void trapezoid(int m, std::vector<double>& nodes, std::vector<double>& weights) {
  if (m < 2) throw Error("integrated-gradients: the trapezoid rule needs at least 2 steps");
  nodes.resize(m);
  weights.assign(m, 1.0 / (m - 1));
  for (int i = 0; i < m; ++i) nodes[i] = static_cast<double>(i) / (m - 1);
  weights.front() *= 0.5;
  weights.back() *= 0.5;
}

}  // namespace

}  // namespace lumen::detail

LUMEN_METHOD(integrated_gradients) {
  Method m("integrated-gradients", "Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks", Family::Pixel, Space::Input,
           ExtraPasses::Gradient);
  m.reduce = sum_over_channels;
  m.params = {integer("steps", 50, 1, 100000, "integrated-gradients: points of the integration rule"),
              choice("integration", "gauss-legendre", {"gauss-legendre", "trapezoid"}, "integrated-gradients: the rule"),
              reference_param("baseline", "black", "integrated-gradients: black, blur, noise, a pixel value 0-255 or an image path"),
              blur_sigma_param(), seed_param()};
  m.check = [](const Settings& s) {
    if (s.text("integration") == "trapezoid" && s.integer("steps") < 2)
      throw Error("--integration trapezoid needs --steps of at least 2, got " + std::to_string(s.integer("steps")));
  };
  m.compute = [](const Evidence& e, size_t) {
    const Settings& s = *e.settings;
    const int steps = static_cast<int>(s.integer("steps"));
    const std::string integration = s.text("integration"), baseline = s.text("baseline");
    std::vector<double> nodes, weights;
    if (integration == "gauss-legendre") gauss_legendre(steps, nodes, weights);
    else trapezoid(steps, nodes, weights);
    auto alphas = torch::tensor(nodes, torch::kFloat32), w = torch::tensor(weights, torch::kFloat32);
    const auto b = e.passes->reference(baseline, static_cast<uint64_t>(s.integer("seed")), s.number("blur_sigma"));
    Result r;
    std::vector<torch::Tensor> attrs;
    for (int64_t i = 0; i < e.input.size(0); ++i) {
      auto diff = e.input[i] - b[i];
      auto view = std::vector<int64_t>{-1, 1, 1, 1};
      auto rows = b[i].unsqueeze(0) + alphas.view(view) * diff.unsqueeze(0);
      // Pass by pass, so that a long run reports its progress (the passes would chunk the rows alike).
      std::vector<torch::Tensor> parts;
      for (int64_t start = 0; start < steps; start += e.passes->rows_per_pass()) {
        const int64_t end = std::min<int64_t>(steps, start + e.passes->rows_per_pass());
        parts.push_back(e.passes->gradient(rows.slice(0, start, end), i, BackwardRule::Plain));
        e.passes->progress("integrated-gradients", i * steps + end, e.input.size(0) * steps);
      }
      auto grads = torch::cat(parts);
      auto attr = diff * (w.view(view) * grads).sum(0);
      attrs.push_back(attr);
      double fx = e.target_values[i].item<double>();
      double fb = e.passes->score(b[i].unsqueeze(0), i)[0].item<double>();
      double total = attr.sum().item<double>();
      double gap = std::abs(total - (fx - fb)) / std::max(std::abs(fx - fb), 1e-12);
      r.extra.push_back({{"steps", steps}, {"integration", integration}, {"baseline", baseline},
                         {"f_input", fx}, {"f_baseline", fb}, {"attribution_sum", total}, {"completeness_gap", gap}});
    }
    r.attribution = torch::stack(attrs);
    r.maps = r.attribution.sum(1);
    r.is_signed = true;
    return r;
  };
  return m;
}
