// Layer-wise relevance propagation (Bach et al., PLoS ONE 2015; Montavon et al. 2019, "Layer-Wise
// Relevance Propagation: An Overview", eq. 2 and sec. 10.2.1-10.2.3). With the default rules it is
// Captum's LRP: relevance R_k at a layer's output z_k goes to its inputs a_j as
//   R_j = a_j sum_k w_jk R_k / (z_k + eps sign z_k)
// at every convolution, linear layer, batch norm (its own layer, as in Captum) and pooling; ReLU-like
// units pass relevance unchanged (identity rule); residual sums split it by the gradient. Convolutions
// and linear layers may take the gamma rule (w + gamma w+ in the redistribution) or alpha1beta0 (w+),
// for the whole network (--lrp-rule) or per module path (--lrp-layer-rules "conv1=epsilon,layer4=gamma");
// see lumen::LrpRuleSet. Computed as a modified gradient (BackwardRule::Lrp rewritten into lumen's copy
// of the graph): R_input = x * g.
// Conservation: sum(R_input) = y up to what biases and eps absorb; the gap |sum R - y| / |y| is in
// run.json. Map: the signed channel sum.
#include "methods/kit/lrp.h"

LUMEN_METHOD(lrp) {
  // One forward and backward of the rule graph, shared with the forward stage: with no other method the
  // rule graph's forward is the only one (its values are the plain ones, so it also gives y).
  Method m("lrp", "Bach et al. 2015, On Pixel-Wise Explanations by Layer-Wise Relevance Propagation", Family::Pixel, Space::Input);
  m.reduce = sum_over_channels;
  m.params = lrp_params();
  m.needs.input_gradients = {BackwardRule::Lrp};
  m.needs.rule_scope = lrp_rule_scope;
  m.compute = [](const Evidence& e, size_t) {
    Result r;
    r.attribution = e.input * e.input_gradients.at(BackwardRule::Lrp);
    for (int64_t i = 0; i < e.input.size(0); ++i)
      r.extra.push_back(lrp_conservation(*e.settings, e.target_values[i].item<double>(), r.attribution[i].sum().item<double>()));
    r.maps = r.attribution.sum(1);
    r.is_signed = true;
    return r;
  };
  return m;
}
