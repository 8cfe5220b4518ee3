// RISE (Petsiuk et al., BMVC 2018, eq. 6): N random masks — cells x cells binary grids (each cell kept
// with probability p), bilinearly upsampled to (cells + 1) * ceil(H / cells) pixels and cropped at a
// random shift of up to one cell — weight the input; the map is sum_i f(x o M_i) M_i / (N p).
// Masks come from a CPU generator seeded with --seed: all grids first, then all shifts, so a run is
// reproducible whatever the batch size (and reproducible in Python with torch.Generator).
#include <lumen/error.h>

#include "methods/method.h"

#include <ATen/CPUGeneratorImpl.h>

namespace lumen::detail {

// Masks [count,1,h,w] number first..first+count of the set described by grids/shifts.
torch::Tensor rise_masks(const torch::Tensor& grids, const torch::Tensor& shifts, int64_t first, int64_t count, int64_t h,
                         int64_t w, int64_t cells) {
  const int64_t ch = (h + cells - 1) / cells, cw = (w + cells - 1) / cells;
  auto up = at::upsample_bilinear2d(grids.slice(0, first, first + count), {(cells + 1) * ch, (cells + 1) * cw}, false);
  std::vector<torch::Tensor> out;
  for (int64_t k = 0; k < count; ++k) {
    int64_t dy = shifts[first + k][0].item<int64_t>(), dx = shifts[first + k][1].item<int64_t>();
    out.push_back(up[k].slice(1, dy, dy + h).slice(2, dx, dx + w));
  }
  return torch::stack(out);
}

Method rise() {
  Method m;
  m.name = "rise";
  m.paper = "Petsiuk et al. 2018, RISE";
  m.extra_passes = ExtraPasses::Forward;
  m.per_layer = false;
  m.compute = [](const Evidence& e, size_t) {
    const MethodOptions& o = *e.options;
    if (o.masks < 1 || o.cells < 1 || !(o.keep > 0 && o.keep <= 1)) throw Error("rise needs --masks >= 1, --cells >= 1, 0 < --keep <= 1");
    const int64_t n = e.input.size(0), h = e.input.size(2), w = e.input.size(3);
    const int64_t ch = (h + o.cells - 1) / o.cells, cw = (w + o.cells - 1) / o.cells;
    auto gen = at::detail::createCPUGenerator(o.seed);
    auto grids = (torch::rand({o.masks, 1, o.cells, o.cells}, gen) < o.keep).to(torch::kFloat32);
    auto shifts = torch::stack({torch::randint(0, ch, {o.masks}, gen), torch::randint(0, cw, {o.masks}, gen)}, 1);
    std::vector<torch::Tensor> maps;
    for (int64_t i = 0; i < n; ++i) {
      auto sal = torch::zeros({h, w});
      for (int64_t start = 0; start < o.masks; start += o.batch_size) {
        int64_t count = std::min<int64_t>(o.batch_size, o.masks - start);
        auto masks = rise_masks(grids, shifts, start, count, h, w, o.cells);
        auto scores = e.score(e.input[i].unsqueeze(0) * masks, i);
        sal += (scores.view({-1, 1, 1}) * masks.squeeze(1)).sum(0);
        if (e.progress) e.progress("rise", i * o.masks + start + count, n * o.masks);
      }
      maps.push_back(sal / (o.masks * o.keep));
    }
    Result r{torch::stack(maps)};
    for (int64_t i = 0; i < n; ++i) r.extra.push_back({{"masks", o.masks}, {"cells", o.cells}, {"keep", o.keep}, {"seed", o.seed}});
    return r;
  };
  return m;
}

}  // namespace lumen::detail
