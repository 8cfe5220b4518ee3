// Ablation-CAM (Desai & Ramaswamy, WACV 2020, eq. 3): w_k = (y - y_k) / y, where y_k is the target when
// channel k of the layer is set to zero; map = ReLU(sum_k w_k A_k). The ablated copies run only the part
// of the network after the layer (Model::forward_from). A channel that is already all zero cannot change
// anything when ablated: its weight is exactly 0 and it is not run.
//
// --compat pytorch-grad-cam: when the layer's minimum is not 0 (no ReLU before it), that library fills
// the ablated channel with a large negative value instead of 0, and because it modifies its batch in
// place, row r of each batch of 32 gets min - (r + 1) * 1e7. lumen reproduces this, batches included,
// and then runs every channel (a zero channel filled that way is not a no-op).
#include "methods/kit/cam.h"

LUMEN_METHOD(ablationcam) {
  Method m = weighted_cam("ablationcam", "Desai & Ramaswamy 2020, Ablation-CAM", Needs{}, [](const LayerTensors& t, const Evidence& e, size_t layer) {
    const auto& a = t.activations;
    const bool compat = e.pytorch_grad_cam();
    const int64_t n = a.size(0), c = a.size(1), batch = compat ? 32 : e.passes->rows_per_pass();
    std::vector<torch::Tensor> weights;
    for (int64_t i = 0; i < n; ++i) {
      auto y = e.target_values[i].item<double>();
      const double lowest = a[i].min().item<double>();
      const bool fill_negative = compat && lowest != 0;
      auto idx = fill_negative ? torch::arange(c) : (a[i].abs().amax({1, 2}) > 0).nonzero().view({-1});
      auto w = torch::zeros({c});
      for (int64_t start = 0; start < idx.size(0); start += batch) {
        auto k = idx.slice(0, start, std::min<int64_t>(idx.size(0), start + batch));
        auto rows = a[i].unsqueeze(0).repeat({k.size(0), 1, 1, 1});
        auto row = torch::arange(k.size(0));
        if (fill_negative)
          rows.index_put_({row, k}, (lowest - (row.to(torch::kFloat64) + 1) * 1e7).to(a.scalar_type()).view({-1, 1, 1}));
        else
          rows.index_put_({row, k}, 0.0);
        auto yk = e.passes->score_from_layer(layer, rows, i);
        w.index_put_({k}, (y - yk) / (std::abs(y) > 1e-12 || compat ? y : 1e-12));
        e.passes->progress("ablationcam", i * c + start + k.size(0), n * c);
      }
      weights.push_back(w);
      e.passes->progress("ablationcam", (i + 1) * c, n * c);  // skipped channels count as done
    }
    return torch::stack(weights).unsqueeze(-1).unsqueeze(-1);
  });
  m.extra_passes = ExtraPasses::Forward;
  return m;
}
