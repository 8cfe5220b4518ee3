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
#include <lumen/error.h>

#include "methods/kit/method.h"

namespace lumen::detail {
namespace {

// "conv1=epsilon,layer4=gamma" -> pairs, each rule checked.
std::vector<std::pair<std::string, std::string>> layer_rules(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty()) continue;
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) throw Error("--lrp-layer-rules: '" + item + "' is not LAYER=RULE");
    out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    check_lrp_rule(out.back().second);
  }
  return out;
}

// The rules the settings ask for: what the rule scope opens and what run.json reports.
LrpRuleSet rule_set(const Settings& s) { return {s.text("lrp_rule"), layer_rules(s.text("lrp_layer_rules")), s.number("lrp_gamma")}; }

}  // namespace
}  // namespace lumen::detail

LUMEN_METHOD(lrp) {
  // One forward and backward of the rule graph, shared with the forward stage: with no other method the
  // rule graph's forward is the only one (its values are the plain ones, so it also gives y).
  Method m("lrp", "Bach et al. 2015, On Pixel-Wise Explanations by Layer-Wise Relevance Propagation", Family::Pixel, Space::Input);
  m.reduce = sum_over_channels;
  m.params = {number("lrp_epsilon", 1e-9, 0, 1e6, "lrp: the epsilon rule's stabiliser at every linear-like layer (Captum's default 1e-9)"),
              choice("lrp_rule", "epsilon", {"epsilon", "gamma", "alpha1beta0"}, "lrp: the rule of every convolution and linear layer"),
              number("lrp_gamma", 0.25, 0, 1e6, "lrp: the gamma rule's gamma (Captum's default 0.25)"),
              text("lrp_layer_rules", "", "lrp: rules per module path, LAYER=RULE,... (a layer and what is inside it; the longest path wins)")};
  m.params.back().check = [](const std::string& value) { layer_rules(value); };
  m.needs.input_gradients = {BackwardRule::Lrp};
  m.needs.rule_scope = [](const Settings& s, const Model& model) -> std::shared_ptr<void> {
    LrpRuleSet rules = rule_set(s);
    for (const auto& [path, rule] : rules.layers) model.check_layer(path);
    struct Scopes {
      LrpEpsilon epsilon;
      LrpRules rules;
      Scopes(double eps, LrpRuleSet r) : epsilon(eps), rules(std::move(r)) {}
    };
    return std::make_shared<Scopes>(s.number("lrp_epsilon"), std::move(rules));
  };
  m.compute = [](const Evidence& e, size_t) {
    const Settings& s = *e.settings;
    const std::string rules = rule_set(s).signature();
    Result r;
    r.attribution = e.input * e.input_gradients.at(BackwardRule::Lrp);
    for (int64_t i = 0; i < e.input.size(0); ++i) {
      const double y = e.target_values[i].item<double>(), total = r.attribution[i].sum().item<double>();
      r.extra.push_back({{"lrp_epsilon", s.number("lrp_epsilon")}, {"lrp_rules", rules}, {"f_input", y}, {"relevance_sum", total},
                         {"conservation_gap", std::abs(total - y) / std::max(std::abs(y), 1e-12)}});
    }
    r.maps = r.attribution.sum(1);
    r.is_signed = true;
    return r;
  };
  return m;
}
