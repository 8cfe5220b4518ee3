// Ablation-CAM (Desai & Ramaswamy, WACV 2020, eq. 3): w_k = (y - y_k) / y, where y_k is the target when
// channel k of the layer is set to zero; map = ReLU(sum_k w_k A_k). The ablated copies run only the part
// of the network after the layer (Model::forward_from). A channel that is already all zero cannot change
// anything when ablated: its weight is exactly 0 and it is not run.
#include "methods/cam_family.h"
#include "methods/method.h"

namespace lumen::detail {

Method ablationcam() {
  Method m;
  m.name = "ablationcam";
  m.paper = "Desai & Ramaswamy 2020, Ablation-CAM";
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& a = e.layers[layer].activations;
    const int64_t n = a.size(0), c = a.size(1), batch = e.options->batch_size;
    std::vector<torch::Tensor> weights;
    for (int64_t i = 0; i < n; ++i) {
      auto y = e.target_values[i].item<double>();
      auto idx = (a[i].abs().amax({1, 2}) > 0).nonzero().view({-1});
      auto w = torch::zeros({c});
      for (int64_t start = 0; start < idx.size(0); start += batch) {
        auto k = idx.slice(0, start, std::min<int64_t>(idx.size(0), start + batch));
        auto rows = a[i].unsqueeze(0).repeat({k.size(0), 1, 1, 1});
        rows.index_put_({torch::arange(k.size(0)), k}, 0.0);
        auto yk = e.score_from_layer(layer, rows, i);
        w.index_put_({k}, (y - yk) / (std::abs(y) > 1e-12 ? y : 1e-12));
        if (e.progress) e.progress("ablationcam", i * c + start + k.size(0), n * c);
      }
      weights.push_back(w);
      if (e.progress) e.progress("ablationcam", (i + 1) * c, n * c);  // skipped channels count as done
    }
    return Result{weighted_sum(torch::stack(weights), a)};
  };
  return m;
}

}  // namespace lumen::detail
