// Internal: what LRP at the input (lrp) and LRP at a layer (layer-lrp) share: their settings, the rule
// scope the forward stage opens around the rule graph, and the conservation record for run.json.
#pragma once

#include "methods/kit/method.h"

namespace lumen::detail {

// lrp_epsilon, lrp_rule, lrp_gamma, lrp_layer_rules.
std::vector<Param> lrp_params();
// Opens the rules and epsilon of the settings while the rule graph is made and run; refuses a
// --lrp-layer-rules path the model does not have.
std::shared_ptr<void> lrp_rule_scope(const Settings& s, const Model& model);
// One image's record: the rules, y, the sum of the relevance and the conservation gap |sum R - y| / |y|.
nlohmann::json lrp_conservation(const Settings& s, double y, double relevance_sum);

}  // namespace lumen::detail
