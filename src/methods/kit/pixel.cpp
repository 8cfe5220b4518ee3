#include "methods/kit/pixel.h"

namespace lumen::detail {

torch::Tensor max_abs_over_channels(const torch::Tensor& attribution) { return std::get<0>(attribution.abs().max(1)); }
torch::Tensor sum_over_channels(const torch::Tensor& attribution) { return attribution.sum(1); }

nlohmann::json completeness(double fx, double fb, double total, const std::string& baseline_key) {
  return {{"f_input", fx}, {baseline_key, fb}, {"attribution_sum", total},
          {"completeness_gap", std::abs(total - (fx - fb)) / std::max(std::abs(fx - fb), 1e-12)}};
}

Method input_gradient_method(std::string name, std::string paper, BackwardRule rule, bool times_input) {
  Method m(std::move(name), std::move(paper), Family::Pixel, Space::Input);
  m.needs.input_gradients = {rule};
  m.reduce = times_input ? sum_over_channels : max_abs_over_channels;
  m.compute = [rule, times_input](const Evidence& e, size_t) {
    const auto& g = e.input_gradients.at(rule);
    auto attr = times_input ? e.input * g : g;
    Result r{times_input ? sum_over_channels(attr) : max_abs_over_channels(attr), attr};
    r.is_signed = times_input;
    return r;
  };
  return m;
}

}  // namespace lumen::detail
