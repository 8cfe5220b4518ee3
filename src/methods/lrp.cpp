// Layer-wise relevance propagation with the epsilon rule (Bach et al., PLoS ONE 2015; Montavon et al.
// 2019, "Layer-Wise Relevance Propagation: An Overview", eq. 2 and sec. 10.2.1), as Captum's LRP with
// its default rules: relevance R_k at a layer's output z_k goes to its inputs a_j as
//   R_j = a_j sum_k w_jk R_k / (z_k + eps sign z_k)
// at every convolution, linear layer, batch norm (its own layer, as in Captum) and pooling; ReLU-like
// units pass relevance unchanged (identity rule); residual sums split it by the gradient. Computed as a
// modified gradient (BackwardRule::Lrp rewritten into lumen's copy of the graph): R_input = x * g.
// Conservation: sum(R_input) = y up to what biases and eps absorb; the gap |sum R - y| / |y| is in
// run.json. Map: the signed channel sum.
#include "methods/kit/method.h"

LUMEN_METHOD(lrp) {
  Method m("lrp", "Bach et al. 2015, On Pixel-Wise Explanations by Layer-Wise Relevance Propagation (epsilon rule)", Family::Pixel,
           Space::Input, ExtraPasses::Gradient);
  m.reduce = sum_over_channels;
  m.params = {number("lrp_epsilon", 1e-9, 0, 1e6, "lrp: the epsilon rule's stabiliser at every linear-like layer (Captum's default 1e-9)")};
  m.compute = [](const Evidence& e, size_t) {
    const LrpEpsilon scope(e.settings->number("lrp_epsilon"));
    Result r;
    std::vector<torch::Tensor> attrs;
    for (int64_t i = 0; i < e.input.size(0); ++i) {
      const auto x = e.input[i].unsqueeze(0);
      const auto attr = (x * e.passes->gradient(x, i, BackwardRule::Lrp))[0];
      attrs.push_back(attr);
      const double y = e.target_values[i].item<double>(), total = attr.sum().item<double>();
      r.extra.push_back({{"lrp_epsilon", e.settings->number("lrp_epsilon")}, {"f_input", y}, {"relevance_sum", total},
                         {"conservation_gap", std::abs(total - y) / std::max(std::abs(y), 1e-12)}});
    }
    r.attribution = torch::stack(attrs);
    r.maps = r.attribution.sum(1);
    r.is_signed = true;
    return r;
  };
  return m;
}
