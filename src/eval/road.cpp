// ROAD, Remove And Debias (Rong et al., ICML 2022, arXiv 2202.00449), as pytorch-grad-cam ships it
// (metrics/road.py, after the authors' imputations.py). Removing pixels by painting them black (the
// deletion curve) tells the model where they were: the shape of the hole leaks the map. ROAD instead
// fills each removed pixel with the weighted mean of its eight neighbours (1/6 for the four sharing an
// edge, 1/12 for the diagonals), all removed pixels at once — a sparse linear system — plus a little
// noise, so that the filled image carries no trace of which pixels went.
//
// The system is solved with Eigen's sparse Cholesky (SimplicialLDLT) rather than by hand: negated, it
// is symmetric and positive definite whenever every group of removed pixels touches a kept one.
#include <lumen/error.h>
#include <lumen/metrics.h>

#include "core/side_by_side.h"

#include <ATen/CPUGeneratorImpl.h>
#include <Eigen/SparseCholesky>
#include <Eigen/SparseCore>

#include <algorithm>
#include <numeric>

namespace lumen::metrics {
namespace {

struct Neighbour {
  int dy, dx;
  double weight;
};
constexpr Neighbour kNeighbours[] = {{1, 1, 1.0 / 12}, {0, 1, 1.0 / 6},  {-1, 1, 1.0 / 12}, {1, -1, 1.0 / 12},
                                     {0, -1, 1.0 / 6}, {-1, -1, 1.0 / 12}, {1, 0, 1.0 / 6},  {-1, 0, 1.0 / 6}};

// The pixels ROAD keeps at percentile p: pytorch-grad-cam keeps those strictly below numpy's
// p-th percentile (linear interpolation), which for distinct values are the ceil(p (n - 1) / 100)
// smallest. lumen keeps that many by rank, ties in raster order (as deletion orders them), so that a
// map with ties (ReLU's zeros, a constant region) still has the share of pixels removed it should;
// the threshold would remove them all, and the system would have nothing to impute from.
cv::Mat kept_below(const std::vector<float>& values, const std::vector<int64_t>& ascending, double p, int rows, int cols) {
  const auto n = static_cast<double>(values.size());
  const auto count = static_cast<size_t>(std::ceil(p / 100.0 * (n - 1) - 1e-9));
  cv::Mat keep = cv::Mat::zeros(rows, cols, CV_8U);
  for (size_t i = 0; i < count && i < ascending.size(); ++i) keep.data[ascending[i]] = 1;
  return keep;
}

}  // namespace

torch::Tensor road_impute(const torch::Tensor& x, const cv::Mat& keep, double noise, uint64_t seed) {
  if (x.dim() != 3) throw Error("ROAD: the input must be [C,H,W]");
  const int64_t c = x.size(0), h = x.size(1), w = x.size(2);
  if (keep.rows != h || keep.cols != w || keep.type() != CV_8U) throw Error("ROAD: the mask must be an 8-bit map of the input's size");
  const auto img = x.to(torch::kFloat64).contiguous().view({c, h * w});
  const double* px = img.data_ptr<double>();
  std::vector<int64_t> unknown_of(static_cast<size_t>(h * w), -1), unknown;
  for (int64_t i = 0; i < h * w; ++i)
    if (!keep.at<uint8_t>(static_cast<int>(i / w), static_cast<int>(i % w))) unknown_of[static_cast<size_t>(i)] = static_cast<int64_t>(unknown.size()), unknown.push_back(i);
  const auto n = static_cast<int64_t>(unknown.size());
  auto out = x.to(torch::kFloat32).clone().contiguous();
  if (n == 0) return out;
  if (n == h * w) throw Error("ROAD: every pixel is removed, nothing to impute from");
  // Row i: s_i v_i - sum_{removed j} w_ij v_j = sum_{kept j} w_ij x_j, s_i the weights of the
  // neighbours inside the image.
  std::vector<Eigen::Triplet<double>> entries;
  entries.reserve(static_cast<size_t>(n) * 9);
  Eigen::MatrixXd rhs = Eigen::MatrixXd::Zero(n, c);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t y0 = unknown[static_cast<size_t>(k)] / w, x0 = unknown[static_cast<size_t>(k)] % w;
    double sum = 0;
    for (const auto& nb : kNeighbours) {
      const int64_t y = y0 + nb.dy, xx = x0 + nb.dx;
      if (y < 0 || y >= h || xx < 0 || xx >= w) continue;
      sum += nb.weight;
      const int64_t j = y * w + xx, uj = unknown_of[static_cast<size_t>(j)];
      if (uj >= 0) entries.emplace_back(k, uj, -nb.weight);
      else
        for (int64_t ch = 0; ch < c; ++ch) rhs(k, ch) += nb.weight * px[ch * h * w + j];
    }
    entries.emplace_back(k, k, sum);
  }
  Eigen::SparseMatrix<double> system(n, n);
  system.setFromTriplets(entries.begin(), entries.end());
  Eigen::SimplicialLDLT<Eigen::SparseMatrix<double>> solver(system);
  if (solver.info() != Eigen::Success) throw Error("ROAD: the imputation system could not be factorised");
  const Eigen::MatrixXd filled = solver.solve(rhs);
  auto gen = at::detail::createCPUGenerator(seed);
  const auto jitter = torch::randn({c, n}, gen, torch::kFloat64) * noise;
  const double* j = jitter.data_ptr<double>();
  float* o = out.data_ptr<float>();
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t k = 0; k < n; ++k) o[ch * h * w + unknown[static_cast<size_t>(k)]] = static_cast<float>(filled(k, ch) + j[ch * n + k]);
  return out;
}

Road road(const torch::Tensor& x, const cv::Mat& map, const std::vector<double>& percentiles, double noise, uint64_t seed,
          const std::function<torch::Tensor(const torch::Tensor&)>& score, int batch) {
  const int64_t h = x.size(1), w = x.size(2);
  if (map.rows != h || map.cols != w || map.type() != CV_32F) throw Error("ROAD: map and input sizes differ");
  if (percentiles.empty()) throw Error("ROAD needs at least one percentile");
  cv::Mat m = map.isContinuous() ? map : map.clone();
  std::vector<float> most(m.ptr<float>(), m.ptr<float>() + h * w), least(most.size());
  std::transform(most.begin(), most.end(), least.begin(), [](float v) { return 1.0f - v; });
  std::vector<cv::Mat> masks;
  for (const auto* values : {&most, &least}) {
    std::vector<int64_t> ascending(values->size());
    std::iota(ascending.begin(), ascending.end(), 0);
    std::stable_sort(ascending.begin(), ascending.end(), [&](int64_t a, int64_t b) { return (*values)[a] < (*values)[b]; });
    for (double p : percentiles) {
      if (!(p > 0 && p < 100)) throw Error("ROAD percentiles must lie between 0 and 100");
      masks.push_back(kept_below(*values, ascending, p, static_cast<int>(h), static_cast<int>(w)));
    }
  }
  // The solves are independent and Eigen's sparse Cholesky runs on one thread: they go side by side,
  // row k + 1 seeded with seed + k + 1 as when they ran in turn.
  std::vector<torch::Tensor> rows(masks.size() + 1);
  rows[0] = x.to(torch::kFloat32);
  detail::side_by_side(static_cast<int64_t>(masks.size()), [&](int64_t k) {
    rows[static_cast<size_t>(k) + 1] = road_impute(x, masks[static_cast<size_t>(k)], noise, seed + static_cast<uint64_t>(k) + 1);
  });
  std::vector<double> scores;
  const auto all = torch::stack(rows);
  for (int64_t first = 0; first < all.size(0); first += std::max(1, batch)) {
    auto p = score(all.slice(0, first, std::min<int64_t>(all.size(0), first + std::max(1, batch)))).to(torch::kFloat64).contiguous();
    for (int64_t i = 0; i < p.size(0); ++i) scores.push_back(p[i].item<double>());
  }
  Road r;
  const size_t n = percentiles.size();
  for (size_t k = 0; k < n; ++k) {
    r.morf.push_back(scores[1 + k] - scores[0]);
    r.lerf.push_back(scores[1 + n + k] - scores[0]);
  }
  r.morf_mean = std::accumulate(r.morf.begin(), r.morf.end(), 0.0) / static_cast<double>(n);
  r.lerf_mean = std::accumulate(r.lerf.begin(), r.lerf.end(), 0.0) / static_cast<double>(n);
  r.combined = (r.lerf_mean - r.morf_mean) / 2;
  return r;
}

}  // namespace lumen::metrics
