#include "methods/kit/lrp.h"

#include <lumen/error.h>

#include <sstream>

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

std::vector<Param> lrp_params() {
  std::vector<Param> p = {
      number("lrp_epsilon", 1e-9, 0, 1e6, "lrp, layer-lrp: the epsilon rule's stabiliser at every linear-like layer (Captum's default 1e-9)"),
      choice("lrp_rule", "epsilon", {"epsilon", "gamma", "alpha1beta0"}, "lrp, layer-lrp: the rule of every convolution and linear layer"),
      number("lrp_gamma", 0.25, 0, 1e6, "lrp, layer-lrp: the gamma rule's gamma (Captum's default 0.25)"),
      text("lrp_layer_rules", "", "lrp, layer-lrp: rules per module path, LAYER=RULE,... (a layer and what is inside it; the longest path wins)")};
  p.back().check = [](const std::string& value) { layer_rules(value); };
  return p;
}

std::shared_ptr<void> lrp_rule_scope(const Settings& s, const Model& model) {
  LrpRuleSet rules = rule_set(s);
  for (const auto& [path, rule] : rules.layers) model.check_layer(path);
  struct Scopes {
    LrpEpsilon epsilon;
    LrpRules rules;
    Scopes(double eps, LrpRuleSet r) : epsilon(eps), rules(std::move(r)) {}
  };
  return std::make_shared<Scopes>(s.number("lrp_epsilon"), std::move(rules));
}

nlohmann::json lrp_conservation(const Settings& s, double y, double relevance_sum) {
  return {{"lrp_epsilon", s.number("lrp_epsilon")}, {"lrp_rules", rule_set(s).signature()}, {"f_input", y}, {"relevance_sum", relevance_sum},
          {"conservation_gap", std::abs(relevance_sum - y) / std::max(std::abs(y), 1e-12)}};
}

}  // namespace lumen::detail
