// Score-CAM (Wang et al., CVPR workshops 2020, eq. 4-6): each channel A_k, bilinearly upsampled to the
// input and min-max normalised to H_k, masks the input; its weight is the increase of the target score
// over a baseline input, C(A_k) = f(X o H_k) - f(X_b), with X_b = 0 in model-input space (no softmax
// over channels: the paper's score increase). map = ReLU(sum_k C(A_k) A_k). Channels whose activation
// is constant (all zero, typically) have no mask and are skipped: their weight is exactly 0.
//
// --compat pytorch-grad-cam: upsampling with align_corners=True, H_k = (up - min) / (max - min + 1e-8),
// weights = softmax over channels of f(X o H_k). A constant channel's mask is then 0 and its score is
// f(0), computed once for all of them.
//
// Volumes: each channel is upsampled trilinearly (half-pixel centres) over the input's slices and masks
// the whole clip or volume.
#include "methods/kit/cam.h"

LUMEN_METHOD(scorecam) {
  Method m = weighted_cam("scorecam", "Wang et al. 2020, Score-CAM", Needs{}, [](const LayerTensors& t, const Evidence& e, size_t) {
    const auto& a = t.activations;
    const int64_t n = a.size(0), c = a.size(1), batch = e.passes->rows_per_pass();
    const bool compat = e.pytorch_grad_cam();
    std::vector<torch::Tensor> weights;
    for (int64_t i = 0; i < n; ++i) {
      auto x = e.input[i];
      // Each channel at the input's size, one row per channel: bilinear, or trilinear over a volume's slices.
      // Contiguous first: a channels-last forward's activations would give channels-last maps, and each
      // channel's row below would be a strided copy of all of them (about a second of Score-CAM's seven).
      const auto ai = a[i].contiguous();
      const auto up = t.depth > 0 ? at::upsample_trilinear3d(ai.reshape({1, c, t.depth, a.size(2) / t.depth, a.size(3)}),
                                                              {x.size(1), x.size(2), x.size(3)}, /*align_corners=*/false)[0]
                                  : at::upsample_bilinear2d(ai.unsqueeze(0), {x.size(1), x.size(2)}, /*align_corners=*/compat)[0];
      const auto flat = up.flatten(1);
      auto lo = flat.amin(1, true), hi = flat.amax(1, true);
      auto live = (hi - lo).view({c}) > 0;
      auto idx = live.nonzero().view({-1});
      auto f_base = e.passes->score(torch::zeros_like(x).unsqueeze(0), i)[0];
      // Skipped channels: weight 0 (papers), or the score of the all-zero input (compat, before softmax).
      auto w = compat ? torch::full({c}, f_base.item<float>()) : torch::zeros({c});
      for (int64_t start = 0; start < idx.size(0); start += batch) {
        auto k = idx.slice(0, start, std::min<int64_t>(idx.size(0), start + batch));
        auto range = hi.index_select(0, k) - lo.index_select(0, k);
        auto shape = up.sizes().vec();  // [k, 1, (D,) H, W]: one mask per row, over every input channel
        shape[0] = k.size(0);
        shape.insert(shape.begin() + 1, 1);
        auto masks = ((flat.index_select(0, k) - lo.index_select(0, k)) / (compat ? range + 1e-8 : range)).view(shape);
        auto scores = e.passes->score(x.unsqueeze(0) * masks, i);
        w.index_put_({k}, compat ? scores : scores - f_base);
        e.passes->progress("scorecam", i * c + start + k.size(0), n * c);
      }
      weights.push_back(compat ? torch::softmax(w, 0) : w);
      e.passes->progress("scorecam", (i + 1) * c, n * c);  // skipped channels count as done
    }
    return torch::stack(weights).unsqueeze(-1).unsqueeze(-1);
  });
  m.extra_passes = ExtraPasses::Forward;
  return m;
}
