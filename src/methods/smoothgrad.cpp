// SmoothGrad (Smilkov et al. 2017), a wrapper in the manner of Captum's NoiseTunnel: a method that gives
// an input-space attribution (--smooth-base: saliency by default; guided-backprop, deconvnet,
// input-x-gradient, integrated-gradients, or any later one that declares an attribution) runs on n
// copies of the input with Gaussian noise, sigma = noise * (max(x) - min(x)) of that image, and their
// attributions a_1..a_n are combined (--smooth-type, Captum's NoiseTunnel types):
//   smoothgrad     mean_i a_i                     (the paper)
//   smoothgrad-sq  mean_i a_i^2
//   vargrad        mean_i a_i^2 - (mean_i a_i)^2  (Adebayo et al. 2018)
// The map is made from the combined attribution the way the base makes its own. The noise of image i
// comes from a CPU generator seeded with seed + i, so a run is reproducible whatever the batch.
#include <lumen/error.h>

#include "methods/kit/method.h"

#include <ATen/CPUGeneratorImpl.h>

namespace lumen::detail {
namespace {

void check_base(const std::string& name) {
  std::string bases;
  for (const auto& m : methods())
    if (m.reduce && !m.uses) bases += (bases.empty() ? "" : ", ") + m.name;
  for (const auto& m : methods())
    if (m.name == name && m.reduce && !m.uses) return;
  throw Error("--smooth-base '" + name + "' is not a method with an input attribution (" + bases + ")");
}

}  // namespace
}  // namespace lumen::detail

LUMEN_METHOD(smoothgrad) {
  Method m("smoothgrad", "Smilkov et al. 2017, SmoothGrad", Family::Pixel, Space::Input, ExtraPasses::Gradient);
  Param base = text("smooth_base", "saliency", "smoothgrad: the method it smooths, one that gives an input attribution");
  base.check = check_base;
  m.params = {samples_param(),
              number32("noise", 0.15f, 0, 10, "smoothgrad: sigma as a fraction of the input's range"), base, seed_param(),
              choice("smooth_type", "smoothgrad", {"smoothgrad", "smoothgrad-sq", "vargrad"},
                     "smoothgrad: how the noisy copies' attributions combine: mean, mean of squares, or variance")};
  m.uses = [](const Settings& s) { return std::vector<std::string>{s.text("smooth_base")}; };
  m.compute = [](const Evidence& e, size_t) {
    const Settings& s = *e.settings;
    const Method& base = find_method(s.text("smooth_base"));
    const int64_t samples = s.integer("samples"), n = e.input.size(0);
    const auto seed = static_cast<uint64_t>(s.integer("seed"));
    const std::string type = s.text("smooth_type");
    Result r;
    std::vector<torch::Tensor> attrs;
    for (int64_t i = 0; i < n; ++i) {
      auto x = e.input[i];
      double sigma = s.number("noise") * (x.max() - x.min()).item<double>();
      auto gen = at::detail::createCPUGenerator(seed + static_cast<uint64_t>(i));
      std::vector<int64_t> shape{samples};
      for (auto d : x.sizes()) shape.push_back(d);
      const auto rows = x.unsqueeze(0) + sigma * torch::randn(shape, gen);
      // Pass by pass, so that a long run reports its progress (the passes would chunk the rows alike).
      std::vector<torch::Tensor> parts;
      for (int64_t start = 0; start < samples; start += e.passes->rows_per_pass()) {
        const int64_t end = std::min<int64_t>(samples, start + e.passes->rows_per_pass());
        Result noisy = e.passes->run(base, rows.slice(0, start, end), i);
        parts.push_back(noisy.attribution);
        r.is_signed = type == "smoothgrad" && noisy.is_signed;
        e.passes->progress("smoothgrad", i * samples + end, n * samples);
      }
      const auto a = torch::cat(parts);
      attrs.push_back(type == "smoothgrad" ? a.mean(0) : type == "smoothgrad-sq" ? a.pow(2).mean(0) : a.pow(2).mean(0) - a.mean(0).pow(2));
      r.extra.push_back({{"samples", samples}, {"noise", s.number("noise")}, {"base", base.name}, {"seed", seed + static_cast<uint64_t>(i)}});
      if (type != "smoothgrad") r.extra.back()["type"] = type;
    }
    r.attribution = torch::stack(attrs);
    r.maps = base.reduce(r.attribution);
    return r;
  };
  return m;
}
