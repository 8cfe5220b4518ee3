#include <lumen/error.h>

#include "methods/method.h"

namespace lumen::detail {

const std::vector<Method>& methods() {
  static const std::vector<Method> all{
      // CAM family: maps at a layer
      cam(), gradcam(), gradcam_plus_plus(), hirescam(), xgradcam(), layercam(), gradcam_elementwise(), eigengradcam(), eigencam(),
      scorecam(), ablationcam(), fullgrad(),
      // perturbation
      occlusion(), rise(),
      // pixel space
      saliency(), input_x_gradient(), guided_backprop(), deconvnet(), guided_gradcam(), smoothgrad(), integrated_gradients()};
  return all;
}

const Method& find_method(const std::string& name) {
  std::string known;
  for (const auto& m : methods()) {
    if (m.name == name) return m;
    known += (known.empty() ? "" : ", ") + m.name;
  }
  throw Error("unknown method '" + name + "' (available: " + known + ")");
}

torch::Tensor in_chunks(const torch::Tensor& rows, int batch, const std::function<torch::Tensor(const torch::Tensor&)>& fn) {
  if (batch < 1) throw Error("batch size must be at least 1");
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < rows.size(0); start += batch)
    parts.push_back(fn(rows.slice(0, start, std::min<int64_t>(rows.size(0), start + batch))));
  return torch::cat(parts);
}

}  // namespace lumen::detail
