// Occlusion (Zeiler & Fergus, ECCV 2014, sec. 4.2): a patch (--patch px, --stride px) filled with a
// constant pixel value or a blurred copy of the image slides over the input; each position's score drop
// y - y_p is spread over the patch's pixels, and every pixel gets the mean drop of the patches covering
// it (Captum's Occlusion). The last row/column of positions is aligned with the image edge, so every
// pixel is covered. Positive = occluding the pixel lowers the target.
#include <lumen/error.h>

#include "methods/method.h"

namespace lumen::detail {

Method occlusion() {
  Method m;
  m.name = "occlusion";
  m.paper = "Zeiler & Fergus 2014, occlusion sensitivity";
  m.extra_passes = ExtraPasses::Forward;
  m.per_layer = false;
  m.compute = [](const Evidence& e, size_t) {
    const MethodOptions& o = *e.options;
    const int64_t n = e.input.size(0), h = e.input.size(2), w = e.input.size(3);
    const int64_t ph = std::min<int64_t>(o.patch, h), pw = std::min<int64_t>(o.patch, w);
    if (o.patch < 1 || o.stride < 1) throw Error("occlusion needs --patch and --stride of at least 1");
    auto starts = [&](int64_t size, int64_t patch) {
      std::vector<int64_t> s;
      for (int64_t p = 0; p + patch <= size; p += o.stride) s.push_back(p);
      if (s.back() + patch < size) s.push_back(size - patch);
      return s;
    };
    const auto ys = starts(h, ph), xs = starts(w, pw);
    std::vector<std::pair<int64_t, int64_t>> positions;
    for (auto y : ys)
      for (auto x : xs) positions.emplace_back(y, x);
    const auto fill = e.reference(o.fill);
    std::vector<torch::Tensor> maps;
    for (int64_t i = 0; i < n; ++i) {
      auto x = e.input[i];
      auto sum = torch::zeros({h, w}), count = torch::zeros({h, w});
      const double y0 = e.target_values[i].item<double>();
      for (size_t start = 0; start < positions.size(); start += o.batch_size) {
        size_t end = std::min(positions.size(), start + static_cast<size_t>(o.batch_size));
        auto rows = x.unsqueeze(0).repeat({static_cast<int64_t>(end - start), 1, 1, 1});
        for (size_t p = start; p < end; ++p) {
          auto [py, px] = positions[p];
          rows[p - start].slice(1, py, py + ph).slice(2, px, px + pw).copy_(fill[i].slice(1, py, py + ph).slice(2, px, px + pw));
        }
        auto scores = e.score(rows, i);
        for (size_t p = start; p < end; ++p) {
          auto [py, px] = positions[p];
          sum.slice(0, py, py + ph).slice(1, px, px + pw) += y0 - scores[p - start].item<double>();
          count.slice(0, py, py + ph).slice(1, px, px + pw) += 1;
        }
        if (e.progress) e.progress("occlusion", i * positions.size() + end, n * positions.size());
      }
      maps.push_back(sum / count.clamp_min(1));
    }
    Result r{torch::stack(maps)};
    r.is_signed = true;
    for (int64_t i = 0; i < n; ++i)
      r.extra.push_back({{"patch", o.patch}, {"stride", o.stride}, {"fill", o.fill}, {"positions", positions.size()}});
    return r;
  };
  return m;
}

}  // namespace lumen::detail
