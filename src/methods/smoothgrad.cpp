// SmoothGrad (Smilkov et al. 2017): the mean of a pixel method's attribution over n copies of the input
// with Gaussian noise, sigma = noise * (max(x) - min(x)) of that image. The base method is a gradient
// method: saliency (plain gradient), guided-backprop, deconvnet or input-x-gradient. The noise of image i
// comes from a CPU generator seeded with seed + i, so a run is reproducible whatever the batch.
#include <lumen/error.h>

#include "methods/method.h"

#include <ATen/CPUGeneratorImpl.h>

namespace lumen::detail {

Method smoothgrad() {
  Method m;
  m.name = "smoothgrad";
  m.paper = "Smilkov et al. 2017, SmoothGrad";
  m.extra_passes = ExtraPasses::Gradient;
  m.per_layer = false;
  m.compute = [](const Evidence& e, size_t) {
    const MethodOptions& o = *e.options;
    BackwardRule rule = BackwardRule::Plain;
    if (o.smooth_base == "guided-backprop") rule = BackwardRule::Guided;
    if (o.smooth_base == "deconvnet") rule = BackwardRule::Deconvnet;
    const bool times_input = o.smooth_base == "input-x-gradient";
    std::vector<torch::Tensor> attrs;
    for (int64_t i = 0; i < e.input.size(0); ++i) {
      auto x = e.input[i];
      double sigma = o.noise * (x.max() - x.min()).item<double>();
      auto gen = at::detail::createCPUGenerator(o.seed + static_cast<uint64_t>(i));
      std::vector<int64_t> shape{o.samples};
      for (auto s : x.sizes()) shape.push_back(s);
      auto rows = x.unsqueeze(0) + sigma * torch::randn(shape, gen);
      auto grads = e.gradient(rows, i, rule);
      attrs.push_back((times_input ? rows * grads : grads).mean(0));
    }
    auto attr = torch::stack(attrs);
    Result r{times_input ? attr.sum(1) : max_abs_over_channels(attr), attr};
    r.is_signed = times_input;
    for (int64_t i = 0; i < e.input.size(0); ++i)
      r.extra.push_back({{"samples", o.samples}, {"noise", o.noise}, {"base", o.smooth_base}, {"seed", o.seed + i}});
    return r;
  };
  return m;
}

}  // namespace lumen::detail
