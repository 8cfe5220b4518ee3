// CAM (Zhou et al., CVPR 2016, eq. 2): for a network whose logits are y^c = sum_k w^c_k mean_ij A_k(ij)
// + b^c (global average pooling, then one linear layer), M_c = sum_k w^c_k A_k, ReLU'd like the rest
// of the family. Grad-CAM reduces to it there: alpha^c_k = w^c_k / Z, so Grad-CAM = CAM / Z.
//
// The classifier is the Linear module named by --classifier, else the last Linear whose input width is
// the layer's channel count. Its use is checked, not assumed: the explained logits must equal
// W mean(A) + b for the batch (relative error 1e-4), otherwise the model has no such head after this
// layer and CAM is refused with that reason.
#include <lumen/error.h>

#include "methods/kit/cam.h"

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
}  // namespace lumen::detail

LUMEN_METHOD(cam) {
  Method m = weighted_cam("cam", "Zhou et al. 2016, Class Activation Mapping", Needs{}, [](const LayerTensors& t, const Evidence& e, size_t) {
    const auto& a = t.activations;
    const Target& target = *e.target;
    if (target.classes.empty()) throw Error("cam explains a class: it needs a class target, not a custom function");
    if (target.score != Score::Logit) throw Error("cam explains class logits; --target " + to_string(target.score) + " is not defined for it");
    auto [name, fc] = find_classifier(*e.model, e.settings->text("classifier"), a.size(1));
    auto w = fc.attr("weight").toTensor().detach().to(torch::kFloat32);
    auto b = fc.hasattr("bias") && fc.attr("bias").isTensor() ? fc.attr("bias").toTensor().detach() : torch::zeros({w.size(0)});
    auto cls = torch::tensor(target.classes);
    if (cls.max().item<int64_t>() >= w.size(0))
      throw Error("cam: classifier '" + name + "' has " + std::to_string(w.size(0)) + " outputs, fewer than the class index");
    auto wc = w.index_select(0, cls);                                          // [N,C]
    auto logit = (wc * a.mean({2, 3})).sum(1) + b.index_select(0, cls);       // what the head would give
    auto y = target.counterfactual ? -e.target_values : e.target_values;
    auto err = ((logit - y).abs() / y.abs().clamp_min(1.0)).max().item<double>();
    if (err > 1e-4)
      throw Error("cam: the model's logits are not '" + name + "'(mean over positions of the layer) — no global-average-pooling + "
                  "linear head right after this layer (relative mismatch " + c10::str(err) + "); use gradcam");
    return (target.counterfactual ? -wc : wc).unsqueeze(-1).unsqueeze(-1);
  });
  m.params.push_back(text("classifier", "", "cam: module path of the linear classifier after global average pooling"));
  return m;
}
