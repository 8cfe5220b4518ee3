// CAM (Zhou et al., CVPR 2016, eq. 2): for a network whose logits are y^c = sum_k w^c_k mean_ij A_k(ij)
// + b^c (global average pooling, then one linear layer), M_c = sum_k w^c_k A_k, ReLU'd like the rest
// of the family. Grad-CAM reduces to it there: alpha^c_k = w^c_k / Z, so Grad-CAM = CAM / Z.
//
// The classifier is the Linear module named by --classifier, else the last Linear whose input width is
// the layer's channel count. Its use is checked, not assumed: the explained logits must equal
// W mean(A) + b for the batch (relative error 1e-4), otherwise the model has no such head after this
// layer and CAM is refused with that reason.
#include <lumen/error.h>

#include "methods/method.h"

namespace lumen::detail {
namespace {

std::pair<std::string, torch::jit::Module> find_classifier(const Model& model, const std::string& wanted, int64_t channels) {
  std::pair<std::string, torch::jit::Module> found{"", torch::jit::Module()};
  for (const auto& sub : model.module().named_modules()) {
    auto type = sub.value.type()->name();
    const bool linear = type && (type->name() == "Linear" || type->name() == "Gemm") && sub.value.hasattr("weight") && sub.value.attr("weight").isTensor();
    if (!wanted.empty()) {
      if (sub.name != wanted) continue;
      if (!linear) throw Error("cam: --classifier '" + wanted + "' is not a Linear layer");
      return {sub.name, sub.value};
    }
    if (linear && sub.value.attr("weight").toTensor().dim() == 2 && sub.value.attr("weight").toTensor().size(1) == channels)
      found = {sub.name, sub.value};
  }
  if (!wanted.empty()) throw Error("cam: no module '" + wanted + "' in the model");
  if (found.first.empty())
    throw Error("cam needs a global-average-pooling + linear head: the model has no Linear layer taking " + std::to_string(channels) +
                " inputs (the layer's channels); pick the last convolutional layer or use gradcam");
  return found;
}

}  // namespace

Method cam() {
  Method m;
  m.name = "cam";
  m.paper = "Zhou et al. 2016, Class Activation Mapping";
  m.weighted = true;
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& a = e.layers[layer].activations;
    const Target& t = *e.target;
    if (t.classes.empty()) throw Error("cam explains a class: it needs a class target, not a custom function");
    if (t.score != Score::Logit) throw Error("cam explains class logits; --target " + to_string(t.score) + " is not defined for it");
    auto [name, fc] = find_classifier(*e.model, e.options->classifier, a.size(1));
    auto w = fc.attr("weight").toTensor().detach().to(torch::kFloat32);
    auto b = fc.hasattr("bias") && fc.attr("bias").isTensor() ? fc.attr("bias").toTensor().detach() : torch::zeros({w.size(0)});
    auto cls = torch::tensor(t.classes);
    if (cls.max().item<int64_t>() >= w.size(0))
      throw Error("cam: classifier '" + name + "' has " + std::to_string(w.size(0)) + " outputs, fewer than the class index");
    auto wc = w.index_select(0, cls);                                          // [N,C]
    auto logit = (wc * a.mean({2, 3})).sum(1) + b.index_select(0, cls);       // what the head would give
    auto y = t.counterfactual ? -e.target_values : e.target_values;
    auto err = ((logit - y).abs() / y.abs().clamp_min(1.0)).max().item<double>();
    if (err > 1e-4)
      throw Error("cam: the model's logits are not '" + name + "'(mean over positions of the layer) — no global-average-pooling + "
                  "linear head right after this layer (relative mismatch " + c10::str(err) + "); use gradcam");
    return Result::cam((t.counterfactual ? -wc : wc).unsqueeze(-1).unsqueeze(-1) * a);
  };
  return m;
}

}  // namespace lumen::detail
