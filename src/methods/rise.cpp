// RISE (Petsiuk et al., BMVC 2018, eq. 6): N random masks — cells x cells binary grids (each cell kept
// with probability p), bilinearly upsampled to (cells + 1) * ceil(H / cells) pixels and cropped at a
// random shift of up to one cell — weight the input; the map is sum_i f(x o M_i) M_i / (N p).
// Masks come from a CPU generator seeded with --seed: all grids first, then all shifts, so a run is
// reproducible whatever the batch size (and reproducible in Python with torch.Generator).
#include <lumen/error.h>

#include "methods/kit/method.h"

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

}  // namespace lumen::detail

LUMEN_METHOD(rise) {
  Method m("rise", "Petsiuk et al. 2018, RISE", Family::Perturbation, Space::Input, ExtraPasses::Forward);
  Param keep = number32("keep", 0.5f, 0, 1, "rise: probability that a cell is kept");
  keep.above_min = true;
  m.params = {integer("masks", 2000, 1, 10000000, "rise: number of masks"), integer("cells", 7, 1, 1000, "rise: grid cells per side"),
              keep, seed_param()};
  m.compute = [](const Evidence& e, size_t) {
    const Settings& s = *e.settings;
    const int64_t masks = s.integer("masks"), cells = s.integer("cells"), rows_per_pass = e.passes->rows_per_pass();
    const auto keep = static_cast<float>(s.number("keep"));
    const int64_t n = e.input.size(0), h = e.input.size(2), w = e.input.size(3);
    const int64_t ch = (h + cells - 1) / cells, cw = (w + cells - 1) / cells;
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(s.integer("seed")));
    auto grids = (torch::rand({masks, 1, cells, cells}, gen) < keep).to(torch::kFloat32);
    auto shifts = torch::stack({torch::randint(0, ch, {masks}, gen), torch::randint(0, cw, {masks}, gen)}, 1);
    std::vector<torch::Tensor> maps;
    for (int64_t i = 0; i < n; ++i) {
      auto sal = torch::zeros({h, w});
      for (int64_t start = 0; start < masks; start += rows_per_pass) {
        const int64_t count = std::min<int64_t>(rows_per_pass, masks - start);
        auto batch = rise_masks(grids, shifts, start, count, h, w, cells);
        auto scores = e.passes->score(e.input[i].unsqueeze(0) * batch, i);
        sal += (scores.view({-1, 1, 1}) * batch.squeeze(1)).sum(0);
        e.passes->progress("rise", i * masks + start + count, n * masks);
      }
      maps.push_back(sal / (static_cast<float>(masks) * keep));
    }
    Result r{torch::stack(maps)};
    for (int64_t i = 0; i < n; ++i)
      r.extra.push_back({{"masks", masks}, {"cells", cells}, {"keep", static_cast<double>(keep)}, {"seed", s.integer("seed")}});
    return r;
  };
  return m;
}
