// lumen: how good is an explanation? Plain functions on maps, boxes and score curves, each checked in
// tests/test_metrics.cpp against hand-made cases whose answer is known in closed form. `lumen eval`
// (tools/lumen/eval.cpp) runs them over datasets; docs/evaluation.md gives the protocols.
#pragma once

#include <lumen/map.h>
#include <lumen/model.h>

#include <opencv2/core.hpp>
#include <torch/script.h>

#include <array>
#include <functional>
#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen::metrics {

// A ground-truth box in image pixels: (x0, y0) top-left, (x1, y1) bottom-right, continuous coordinates.
struct GtBox {
  int64_t label = -1;
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// Intersection over union of two continuous boxes (a predicted Box [x0, x1) counts as [x0, x1]).
double iou(const GtBox& a, const GtBox& b);
GtBox to_gt(const Box& b);

// The Grad-CAM paper's localisation (section 6.1): `box` (from threshold_box at 15% of the map's max)
// is correct when its IoU with some ground-truth box of `cls` is >= `min_iou`. Returns the best IoU
// over the boxes of that class (0 if none).
double best_iou(const Box& box, const std::vector<GtBox>& gt, int64_t cls);

// Pointing game (Zhang et al. 2016): the map's maximum (x, y) hits when it lies within `tolerance`
// pixels of a ground-truth box of `cls`.
bool pointing_hit(int peak_x, int peak_y, const std::vector<GtBox>& gt, int64_t cls, double tolerance = 15);

// MaxBoxAcc (Choe et al. 2020) with the semantics of clovaai/wsolevaluation: ground-truth-known (the
// map of the true class, no classification check), the map scaled to uint8, a strict threshold at
// int(tau * max) for tau in {0, 1/n, ..., (n-1)/n}, boxes from the largest contour (V1) or every contour
// (V2, best box counts), IoU with +1-pixel inclusive areas against integer-truncated ground truth.
class MaxBoxAcc {
 public:
  explicit MaxBoxAcc(bool multi_contour, std::vector<double> iou_thresholds, int thresholds = 100);
  // `map` in [0, 1] (CV_32F), at the size of the image the boxes refer to.
  void add(const cv::Mat& map, const std::vector<GtBox>& gt);
  // Per IoU threshold: the best accuracy (%) over map thresholds.
  std::vector<double> accuracy() const;
  double mean_accuracy() const;
  // Per map threshold, the best IoU this map reached (for resuming runs: add_ious re-adds them).
  const std::vector<double>& last_ious() const { return last_; }
  void add_ious(const std::vector<double>& best_iou_per_threshold);
  int64_t count() const { return count_; }

 private:
  bool multi_;
  std::vector<double> iou_thr_;
  int thresholds_;
  std::vector<std::vector<int64_t>> correct_;  // [iou threshold][map threshold]
  std::vector<double> last_;
  int64_t count_ = 0;
};
// wsolevaluation's boxes for one uint8 map and threshold: x0, y0, x1, y1 with x1, y1 clipped to size-1;
// {0,0,0,0} when nothing is above the threshold.
std::vector<std::array<int, 4>> wsol_boxes(const cv::Mat& map_u8, int threshold, bool multi_contour);
double wsol_iou(const std::array<int, 4>& a, const std::array<int, 4>& b);

// Share of a map's mass (sum of a non-negative map, e.g. the normalised one) inside the union of the
// boxes of `cls`: the bias audit's "is the evidence on the object?". 0 for an all-zero map.
double energy_inside(const cv::Mat& map, const std::vector<GtBox>& gt, int64_t cls);

// Deletion / insertion (Petsiuk et al. 2018). Pixels of `x` ([C,H,W], model input) are moved, in
// decreasing order of `map` (H x W, ties by raster order), from `start` to `finish` in `steps` equal
// steps; `score` gives the class probability for a batch of inputs. Returns the steps + 1 scores.
std::vector<double> causal_curve(const torch::Tensor& start, const torch::Tensor& finish, const cv::Mat& map, int steps,
                                 const std::function<torch::Tensor(const torch::Tensor&)>& score, int batch);
// Area under a curve sampled at equal steps on [0, 1] (trapezoid rule).
double auc(const std::vector<double>& curve);

// ROAD, Remove And Debias (Rong et al. 2022), as pytorch-grad-cam computes it. `road_impute` fills the
// pixels of `x` ([C,H,W]) where `keep` (CV_8U, H x W) is 0 with the noisy linear imputation: each the
// weighted mean of its 8 neighbours (1/6 edge, 1/12 diagonal) solved jointly, plus N(0, noise^2) from a
// CPU generator seeded with `seed`. `road` scores the image, then for each percentile p the image
// with the pixels at or above the p-th percentile of `map` imputed (MoRF: most relevant first) and
// of 1 - map (LeRF); each as score(after) - score(before). Pixels are kept by rank, ties in raster
// order (src/eval/road.cpp says why), which is pytorch-grad-cam's threshold wherever values differ. combined = (mean LeRF - mean MoRF) / 2:
// higher is better (removing what the map calls important hurts more than removing the rest).
torch::Tensor road_impute(const torch::Tensor& x, const cv::Mat& keep, double noise, uint64_t seed);
struct Road {
  std::vector<double> morf, lerf;  // per percentile
  double morf_mean = 0, lerf_mean = 0, combined = 0;
};
inline const std::vector<double> kRoadPercentiles{10, 20, 30, 40, 50, 60, 70, 80, 90};
Road road(const torch::Tensor& x, const cv::Mat& map, const std::vector<double>& percentiles, double noise, uint64_t seed,
          const std::function<torch::Tensor(const torch::Tensor&)>& score, int batch);

// Infidelity (Yeh et al., NeurIPS 2019, def. 2.1; Captum's infidelity with normalize=True): for
// `samples` perturbations I ~ N(0, noise^2) of `x` ([C,H,W], model input; a CPU generator seeded with
// `seed`), the squared error between the map's prediction of the score change, beta * sum(I * map)
// (the H x W map broadcast over channels), and the change itself, score(x) - score(x - I), averaged;
// beta = sum_k (I_k . map) d_k / sum_k (I_k . map)^2 is the least-squares scale, so a map's units do
// not matter. Lower is better.
double infidelity(const torch::Tensor& x, const cv::Mat& map, double noise, int samples, uint64_t seed,
                  const std::function<torch::Tensor(const torch::Tensor&)>& score, int batch);

// ARCC (pytorch-grad-cam's metrics/arcc.py, from the RefineCAM paper, arXiv 2605.14641): one score of
// three, each in [0, 1]:
//   coherency  = (r + 1) / 2, r the Pearson correlation of the map and the same method's map of the
//                model input multiplied by it (sample moments, 1e-8 beside the product of deviations);
//   complexity = mean |map|, the map in [0, 1] (lower is simpler);
//   ROAD'      = clip(2 ROAD, 0, 1), ROAD = road() at kArccRoadPercentiles;
//   ARCC = 3 / (1 / (coherency + 1e-8) + 1 / (1 - complexity + 1e-8) + 1 / (ROAD' + 1e-8)),
// their harmonic mean (the anchor's docstring says geometric; its code, followed here, is harmonic).
// Higher is better.
inline const std::vector<double> kArccRoadPercentiles{20, 40, 60, 80};
double coherency(const cv::Mat& map, const cv::Mat& again);
double complexity(const cv::Mat& map);
double arcc(double coherency, double complexity, double road);

// Max-sensitivity (Yeh et al., NeurIPS 2019, def. 3.1; Captum's sensitivity_max with its default
// perturbation and Frobenius norm): for `samples` perturbations u_j ~ U[-radius, radius) of `x`
// ([C,H,W], model input; radius * (2 rand - 1) drawn as one [samples,C,H,W] tensor from a CPU
// generator seeded with `seed`),
//   max_j ||phi(x + u_j) - phi(x)||_F / ||phi(x)||_F,
// phi(x) = `explanation` (any shape) and `explain` giving phi for a batch of inputs ([M,C,H,W] ->
// [M, ...], the same target). A zero explanation divides by 1, as Captum does. Lower is steadier.
double sensitivity_max(const torch::Tensor& x, const torch::Tensor& explanation, double radius, int samples, uint64_t seed,
                       const std::function<torch::Tensor(const torch::Tensor&)>& explain);

// Average Drop and Increase in Confidence (Chattopadhyay et al. 2018) for one image: y the class score
// on the image, o on the image multiplied by the explanation map.
inline double drop(double y, double o) { return y > 0 ? std::max(0.0, y - o) / y : 0.0; }
inline bool increase(double y, double o) { return o > y; }

// Spearman rank correlation (average ranks for ties) and SSIM (Wang et al. 2004: Gaussian window 11,
// sigma 1.5, data range 1) of two maps of the same size.
double spearman(const cv::Mat& a, const cv::Mat& b);
double ssim(const cv::Mat& a, const cv::Mat& b);

// Cascading randomisation (Adebayo et al. 2018): the parameterised layers grouped into blocks (the
// first two components of the module path: `features.18`, `layer4.1`, `fc`), from the output back.
std::vector<std::string> cascade_blocks(const Model& model);
// A copy of `model` with the parameters of every module under `blocks` redrawn from N(0, s), s the
// tensor's own standard deviation (0.01 when it has none), from a CPU generator seeded with `seed`.
Model randomized(const Model& model, const std::vector<std::string>& blocks, uint64_t seed);

}  // namespace lumen::metrics
#pragma GCC visibility pop
