// Internal influence (Leino et al., ITC 2018; Captum's InternalInfluence): the layer's gradient
// integrated along the input path from the baseline,
//   attr = integral_0^1 dy/dA(b + a (x - b)) da   (--steps points of --integration; kit/path.h),
// per unit of the layer, not multiplied by the activations. The map sums the channels, signed.
#include "methods/kit/path.h"

LUMEN_METHOD(internal_influence) {
  Method m("internal-influence", "Leino et al. 2018, Influence-Directed Explanations for Deep Convolutional Networks", Family::Cam,
           Space::Layer, ExtraPasses::Gradient);
  m.params = path_params();
  m.check = check_path;
  m.compute = [](const Evidence& e, size_t layer) {
    const Settings& s = *e.settings;
    const auto [alphas, w] = quadrature(s);
    const auto b = e.passes->reference(s.text("baseline"), static_cast<uint64_t>(s.integer("seed")), s.number("blur_sigma"));
    const int64_t n = e.input.size(0);
    Result r;
    std::vector<torch::Tensor> maps;
    for (int64_t i = 0; i < n; ++i) {
      const auto g = e.passes->layer_at(path_points(e.input[i], b[i], alphas), i, layer).gradients;
      maps.push_back((w.view({-1, 1, 1, 1}) * g).sum(0).sum(0));
      r.extra.push_back({{"steps", alphas.size(0)}, {"integration", s.text("integration")}, {"baseline", s.text("baseline")}});
      e.passes->progress("internal-influence", i + 1, n);
    }
    r.maps = torch::stack(maps);
    r.is_signed = true;
    return r;
  };
  return m;
}
