// Integrated Gradients (Sundararajan et al., ICML 2017, eq. 1 and 3):
//   attr = (x - b) * integral_0^1 dy/dx(b + a (x - b)) da,
// the integral by an m-point rule on [0, 1]: Gauss-Legendre (default) or the trapezoid rule on m evenly
// spaced points. The map sums the channels (signed). Completeness says sum(attr) = f(x) - f(b); the gap
// |sum(attr) - (f(x) - f(b))| / |f(x) - f(b)| is reported per image.
#include <lumen/error.h>

#include "methods/kit/path.h"

LUMEN_METHOD(integrated_gradients) {
  Method m("integrated-gradients", "Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks", Family::Pixel, Space::Input,
           ExtraPasses::Gradient);
  m.reduce = sum_over_channels;
  m.params = path_params();
  m.check = check_path;
  m.compute = [](const Evidence& e, size_t) {
    const Settings& s = *e.settings;
    const int steps = static_cast<int>(s.integer("steps"));
    const std::string integration = s.text("integration"), baseline = s.text("baseline");
    const auto [alphas, w] = quadrature(s);
    const auto b = e.passes->reference(baseline, static_cast<uint64_t>(s.integer("seed")), s.number("blur_sigma"));
    Result r;
    std::vector<torch::Tensor> attrs;
    for (int64_t i = 0; i < e.input.size(0); ++i) {
      auto diff = e.input[i] - b[i];
      auto view = std::vector<int64_t>{-1, 1, 1, 1};
      auto rows = path_points(e.input[i], b[i], alphas);
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
      r.extra.push_back(completeness(fx, fb, total));
      r.extra.back().update({{"steps", steps}, {"integration", integration}, {"baseline", baseline}});
    }
    r.attribution = torch::stack(attrs);
    r.maps = r.attribution.sum(1);
    r.is_signed = true;
    return r;
  };
  return m;
}
