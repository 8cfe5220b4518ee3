// Occlusion (Zeiler & Fergus, ECCV 2014, sec. 4.2): a patch (--patch px, --stride px) filled with a
// constant pixel value or a blurred copy of the image slides over the input; each position's score drop
// y - y_p is spread over the patch's pixels, and every pixel gets the mean drop of the patches covering
// it (Captum's Occlusion). The last row/column of positions is aligned with the image edge, so every
// pixel is covered. Positive = occluding the pixel lowers the target.
#include <lumen/error.h>

#include "methods/kit/method.h"

LUMEN_METHOD(occlusion) {
  Method m("occlusion", "Zeiler & Fergus 2014, occlusion sensitivity", Family::Perturbation, Space::Input, ExtraPasses::Forward);
  m.params = {patch_param(),
              integer("stride", 16, 1, 100000, "occlusion: stride in input pixels"),
              reference_param("fill", "0", "occlusion: what fills the patch: a pixel value 0-255, black, blur, noise or an image"),
              blur_sigma_param(), seed_param()};
  m.compute = [](const Evidence& e, size_t) {
    const Settings& s = *e.settings;
    const int64_t patch = s.integer("patch"), stride = s.integer("stride"), rows_per_pass = e.passes->rows_per_pass();
    const int64_t n = e.input.size(0), h = e.input.size(2), w = e.input.size(3);
    const int64_t ph = std::min<int64_t>(patch, h), pw = std::min<int64_t>(patch, w);
    auto starts = [&](int64_t size, int64_t extent) {
      std::vector<int64_t> at;
      for (int64_t p = 0; p + extent <= size; p += stride) at.push_back(p);
      if (at.back() + extent < size) at.push_back(size - extent);
      return at;
    };
    const auto ys = starts(h, ph), xs = starts(w, pw);
    std::vector<std::pair<int64_t, int64_t>> positions;
    for (auto y : ys)
      for (auto x : xs) positions.emplace_back(y, x);
    const auto fill = e.passes->reference(s.text("fill"), static_cast<uint64_t>(s.integer("seed")), s.number("blur_sigma"));
    const auto total = static_cast<int64_t>(positions.size());
    std::vector<torch::Tensor> maps;
    for (int64_t i = 0; i < n; ++i) {
      auto x = e.input[i];
      auto sum = torch::zeros({h, w}), count = torch::zeros({h, w});
      const double y0 = e.target_values[i].item<double>();
      for (int64_t start = 0; start < total; start += rows_per_pass) {
        const int64_t end = std::min(total, start + rows_per_pass);
        auto rows = x.unsqueeze(0).repeat({end - start, 1, 1, 1});
        for (int64_t p = start; p < end; ++p) {
          auto [py, px] = positions[static_cast<size_t>(p)];
          rows[p - start].slice(1, py, py + ph).slice(2, px, px + pw).copy_(fill[i].slice(1, py, py + ph).slice(2, px, px + pw));
        }
        auto scores = e.passes->score(rows, i);
        for (int64_t p = start; p < end; ++p) {
          auto [py, px] = positions[static_cast<size_t>(p)];
          sum.slice(0, py, py + ph).slice(1, px, px + pw) += y0 - scores[p - start].item<double>();
          count.slice(0, py, py + ph).slice(1, px, px + pw) += 1;
        }
        e.passes->progress("occlusion", i * total + end, n * total);
      }
      maps.push_back(sum / count.clamp_min(1));
    }
    Result r{torch::stack(maps)};
    r.is_signed = true;
    for (int64_t i = 0; i < n; ++i)
      r.extra.push_back({{"patch", patch}, {"stride", stride}, {"fill", s.text("fill")}, {"positions", positions.size()}});
    return r;
  };
  return m;
}
