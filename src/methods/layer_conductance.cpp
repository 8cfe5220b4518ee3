// Layer conductance (Dhamdhere et al., ICLR 2019, eq. 2; Captum's LayerConductance): the flow of
// integrated gradients through each unit of the layer,
//   attr = sum_k dy/dA(x_k) * (A(x_{k+1}) - A(x_k)),  x_k = b + a_k (x - b),
// over the --steps + 1 ascending nodes a_k of --integration (Captum takes n_steps + 1 points of its rule
// and their differences; the rule's weights are not used). Summed over the layer it approximates
// y(x) - y(b) (completeness; the gap is reported). The map sums the channels, signed.
#include "methods/kit/path.h"

LUMEN_METHOD(layer_conductance) {
  Method m("layer-conductance", "Dhamdhere et al. 2019, How Important Is a Neuron?", Family::Cam, Space::Layer, ExtraPasses::Gradient);
  m.params = path_params();
  m.check = check_path;
  m.compute = [](const Evidence& e, size_t layer) {
    const Settings& s = *e.settings;
    const auto q = quadrature(s, s.integer("steps") + 1);
    const auto b = e.passes->reference(s.text("baseline"), static_cast<uint64_t>(s.integer("seed")), s.number("blur_sigma"));
    const int64_t n = e.input.size(0);
    Result r;
    std::vector<torch::Tensor> maps;
    for (int64_t i = 0; i < n; ++i) {
      const auto t = e.passes->layer_at(path_points(e.input[i], b[i], q.nodes), i, layer);
      const auto steps = t.activations.size(0) - 1;
      const auto attr = (t.gradients.slice(0, 0, steps) * (t.activations.slice(0, 1) - t.activations.slice(0, 0, steps))).sum(0);
      maps.push_back(attr.sum(0));
      const double fx = e.target_values[i].item<double>(), fb = e.passes->score(b[i].unsqueeze(0), i)[0].item<double>();
      const double total = attr.sum().item<double>();
      r.extra.push_back(completeness(fx, fb, total));
      r.extra.back().update({{"steps", steps}, {"integration", s.text("integration")}, {"baseline", s.text("baseline")}});
      e.passes->progress("layer-conductance", i + 1, n);
    }
    r.maps = torch::stack(maps);
    r.is_signed = true;
    return r;
  };
  return m;
}
