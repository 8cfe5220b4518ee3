// Layer LRP (Captum's LayerLRP; Bach et al. 2015 stopped at a layer): the relevance of a layer's output
// units under the same rules as lrp (see lrp.cpp), R_A = A * g, where g is the gradient of y at the
// layer through the rule graph above it. Only the network above the layer is backpropagated.
// Conservation at the layer: sum(R_A) = y up to what biases and eps above it absorb; the gap is in
// run.json. Map: the signed channel sum.
#include "methods/kit/lrp.h"

LUMEN_METHOD(layer_lrp) {
  Method m("layer-lrp", "Captum LayerLRP (Bach et al. 2015 at a layer)", Family::Cam);
  m.params = lrp_params();
  m.needs.layer_rule_gradients = {BackwardRule::Lrp};
  m.needs.rule_scope = lrp_rule_scope;
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& l = e.rule_layers.at(BackwardRule::Lrp).at(layer);
    const auto relevance = l.activations * l.gradients;
    Result r{relevance.sum(1)};
    for (int64_t i = 0; i < relevance.size(0); ++i)
      r.extra.push_back(lrp_conservation(*e.settings, e.target_values[i].item<double>(), relevance[i].sum().item<double>()));
    r.is_signed = true;
    return r;
  };
  return m;
}
