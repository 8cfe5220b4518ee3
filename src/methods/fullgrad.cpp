// FullGrad (Srinivas & Fleuret, NeurIPS 2019, eq. 6): the input-gradient term plus every bias-gradient
// term of the network,
//   S(x) = psi(|x * df/dx|) + sum_l sum_c psi(|b_lc * df/dz_lc|),
// where z_l is the output of a layer with bias b_l (Conv2d with a bias; BatchNorm2d, whose effective
// bias is beta - mean * gamma / sqrt(var + eps); ONNX Conv and BatchNormalization nodes likewise) and psi rescales to [0, 1] and upsamples (bilinear,
// half-pixel centres) to the input. psi rescales each image's term jointly over its channels, as the
// authors' code does; --compat pytorch-grad-cam rescales every channel on its own ((t - min) /
// (max + 1e-7)) as that library does. Linear layers' biases have no spatial extent and are left out, as
// in both. A model without Conv2d/BatchNorm2d bias layers cannot be explained this way (an error).
#include <lumen/error.h>

#include "methods/kit/method.h"

#include <torch/csrc/jit/ir/ir.h>

namespace lumen::detail {
namespace {

torch::Tensor psi(const torch::Tensor& term, int64_t height, int64_t width, bool per_channel) {
  auto a = term.abs();
  std::vector<int64_t> dims = per_channel ? std::vector<int64_t>{2, 3} : std::vector<int64_t>{1, 2, 3};
  a = a - a.amin(dims, true);
  auto hi = a.amax(dims, true);
  a = per_channel ? a / (hi + 1e-7) : a / torch::where(hi > 0, hi, torch::ones_like(hi));
  if (a.size(2) != height || a.size(3) != width) a = at::upsample_bilinear2d(a, {height, width}, /*align_corners=*/false);
  return a.sum(1);
}

// eps of a batch-norm module: its attribute (scripted), else the constant in its forward graph (traced).
double batch_norm_eps(const torch::jit::Module& bn, const std::string& path) {
  if (bn.hasattr("eps") && bn.attr("eps").isDouble()) return bn.attr("eps").toDouble();
  for (auto* node : bn.get_method("forward").graph()->nodes()) {
    if (node->kind() == c10::Symbol::fromQualString("aten::batch_norm")) {
      if (auto v = torch::jit::toIValue(node->input(7)); v && v->isDouble()) return v->toDouble();
    }
  }
  throw Error("fullgrad: cannot find the epsilon of batch-norm layer '" + path + "'");
}

std::vector<std::pair<std::string, torch::Tensor>> bias_layers(const Model& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& sub : model.module().named_modules()) {
    if (sub.name.empty()) continue;
    auto type = sub.value.type()->name();
    const std::string kind = type ? type->name() : "";
    const auto& m = sub.value;
    if ((kind == "Conv2d" || kind == "Conv") && m.hasattr("bias") && m.attr("bias").isTensor()) {
      out.emplace_back(sub.name, m.attr("bias").toTensor().detach());
    } else if (kind == "BatchNorm2d" || kind == "BatchNormalization") {
      if (!m.hasattr("running_mean") || !m.attr("running_mean").isTensor() || !m.hasattr("weight") || !m.attr("weight").isTensor())
        throw Error("fullgrad: batch-norm layer '" + sub.name + "' has no running statistics or no affine weights");
      auto mean = m.attr("running_mean").toTensor(), var = m.attr("running_var").toTensor();
      auto gamma = m.attr("weight").toTensor(), beta = m.attr("bias").toTensor();
      out.emplace_back(sub.name, (beta - mean * gamma / torch::sqrt(var + batch_norm_eps(m, sub.name))).detach());
    }
  }
  if (out.empty())
    throw Error("fullgrad needs layers with biases (Conv2d with bias, BatchNorm2d); model '" + model.name() + "' has none");
  return out;
}

}  // namespace
}  // namespace lumen::detail

LUMEN_METHOD(fullgrad) {
  Method m("fullgrad", "Srinivas & Fleuret 2019, FullGrad", Family::Cam, Space::Input);
  m.needs.input_gradients = {BackwardRule::Plain};
  m.needs.model_layers = [](const Model& model) {
    std::vector<std::string> paths;
    for (const auto& b : bias_layers(model)) paths.push_back(b.first);
    return paths;
  };
  m.compute = [](const Evidence& e, size_t) {
    const bool per_channel = e.pytorch_grad_cam();
    const int64_t h = e.input.size(2), w = e.input.size(3);
    auto map = psi(e.input * e.input_gradients.at(BackwardRule::Plain), h, w, per_channel);
    const auto biases = bias_layers(*e.model);
    for (size_t b = 0; b < biases.size(); ++b) {
      const auto& g = e.model_layers.at(b).gradients;
      if (g.dim() != 4) continue;  // a bias layer outside the convolutional trunk
      map = map + psi(g * biases[b].second.view({1, -1, 1, 1}), h, w, per_channel);
    }
    return Result{map};
  };
  return m;
}
