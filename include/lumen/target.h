// lumen: targets. A target turns the model's output into one scalar per image — the y^c whose
// gradient an explanation follows. Built-in: a class logit (default), its softmax probability or
// log-probability, each optionally negated (counterfactual: evidence *against* the class).
// Anything else (a head of a multi-output model, a dict entry) is a user function.
#pragma once

#include <torch/script.h>

#include <lumen/map.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

// Picks the [N,K] class-score tensor out of the model's output.
using OutputSelector = std::function<torch::Tensor(const torch::IValue& output)>;
// Maps the model's output to a [N] tensor of scalars to explain.
using TargetFn = std::function<torch::Tensor(const torch::IValue& output)>;

enum class Score { Logit, Probability, LogProbability };
Score parse_score(const std::string& name);     // "logit" | "prob" | "logprob"
std::string to_string(Score s);

struct Target {
  std::string name;                 // e.g. "class 171", "top-2"
  std::vector<int64_t> classes;     // the class explained for each image; empty for custom targets
  Score score = Score::Logit;
  bool counterfactual = false;
  OutputSelector select;            // class targets: where the class scores are
  TargetFn fn;                      // output -> [N]
  // A target that reads the explained batch's own output (a segmentation's predicted pixels) is fixed
  // once from it: the explainer calls `bind` with each forward's output, so that the extra passes of
  // perturbation methods score what the image itself predicted (pytorch-grad-cam's fixed masks), not
  // what each masked copy predicts. `rows_of` is the bound target for rows that are copies of the
  // given images (indices into the rows it was bound to). Both empty for class and most custom targets.
  std::function<Target(const torch::IValue& output)> bind;
  std::function<Target(const std::vector<int64_t>& images)> rows_of;
  // Detection targets: the boxes explained, in the model input's pixels, one list per row of the batch
  // (one list alone: the same for every row). A row whose list is empty is not explained, and gets no
  // map: the k-th box of a batch exists only in the images that have k boxes.
  std::vector<std::vector<Detection>> boxes;
  const std::vector<Detection>& boxes_of(int64_t row) const;  // empty when there are none
  bool explains(int64_t row) const { return boxes.empty() || !boxes_of(row).empty(); }

  torch::Tensor operator()(const torch::IValue& output) const { return fn(output); }
};
// The target for rows that are copies of the batch's images `images` (one index per row): class targets
// take each image's class, bound targets their image's part, other custom targets are called as they are.
Target target_for_images(const Target& t, const std::vector<int64_t>& images);

// y = score_s(select(output))[n, classes[n]], negated when counterfactual. `classes` holds one entry
// per image of the batch. Throws lumen::Error when a class index is out of range.
Target class_target(std::vector<int64_t> classes, Score score = Score::Logit,
                    bool counterfactual = false, OutputSelector select = {});
Target custom_target(std::string name, TargetFn fn);
// FinerCAM's target (Zhang et al. 2025; pytorch-grad-cam's FinerWeightedTarget): each image's class c
// against the `comparisons` classes whose logits lie closest to c's, weighted by their probabilities,
//   y = sum_j p_j (z_c - alpha z_j) / (sum_j p_j + 1e-9),   p = softmax(z) (differentiated, as there).
// The comparison classes are read from the logits of each call. `main` must be a class target.
// Semantic segmentation (pytorch-grad-cam's SemanticSegmentationTarget): y = the sum of class `cls`'s
// scores over a mask, from a [N, classes, h, w] output (`select`; by default segmentation_scores()).
// The mask is `region` ([H, W] of any size, nonzero = inside) laid over the whole output — the model
// input is the whole image stretched, so a mask drawn at the image's size lines up — or, when
// `region` is undefined, the pixels whose highest score is `cls` in the explained image's output (bound
// once, Target::bind; unbound, in the output being scored). Named "seg-<cls>".
Target segmentation_target(int64_t cls, torch::Tensor region = {}, OutputSelector select = {});
// The same with one region per image of the batch (each [H, W] at its own image's size: a rectangle
// given in each image's pixels), the extra passes' copies scored against their image's region.
Target segmentation_target(int64_t cls, std::vector<torch::Tensor> regions, OutputSelector select = {});
// A region for segmentation_target: [height, width], 1 inside the rectangle x0, y0, x1, y1 (pixels,
// clipped to the image; fractions truncated), 0 outside. Undefined when nothing of it is in the image.
torch::Tensor rectangle_region(double x0, double y0, double x1, double y1, int64_t width, int64_t height);
// The [N, classes, h, w] scores of a segmentation network: the output itself, or a dict's "out" entry
// (torchvision's FCN, DeepLabV3 and LR-ASPP return {"out": ..., "aux": ...}).
OutputSelector segmentation_scores();
Target finer_target(const Target& main, double alpha = 1.0, int comparisons = 3);
// Embedding similarity (pytorch-grad-cam's SimilarityToConceptTarget): y = cos(e, concept), where e is
// the model's embedding (`select`, by default the output tensor; [N, D], any further dimensions
// flattened into D) and `concept` a [D] vector (e.g. the mean embedding of reference images,
// Explainer::embed); negated when `dissimilar` (what makes the image unlike the concept). Named
// "similarity" or "dissimilarity". Throws lumen::Error when the lengths differ or the concept is zero,
// NaN or infinite.
Target similarity_target(torch::Tensor concept, bool dissimilar = false, OutputSelector select = {});

// Object detection. How a detector's output holds its boxes:
// - Torchvision: a list of one dict per image with "boxes" [M, 4] (x0, y0, x1, y1 in input pixels),
//   "labels" [M] and "scores" [M], after the model's own NMS — or a tuple holding such a list (a
//   scripted torchvision detector returns (losses, detections)).
// - YoloV5: the raw [N, B, 5 + C] tensor of YOLOv5-style exports: per candidate cx, cy, w, h (input
//   pixels), objectness, C class probabilities; score = objectness x class probability.
// - YoloV8: the raw [N, 4 + C, B] tensor of YOLOv8-style exports: cx, cy, w, h, C class probabilities.
// - Boxes: [N, K, 6] rows x0, y0, x1, y1, score, class of a model that selects its own boxes (an export
//   that ends in NMS, such as ONNX's NonMaxSuppression); like torchvision's, they get no NMS here.
// A YOLO candidate's label is its best class. The detections of a raw output are its candidates
// scoring at least `score_threshold` after class-aware NMS at `nms_iou` (OpenCV's NMSBoxes).
enum class DetectionFormat { Torchvision, YoloV5, YoloV8, Boxes };
DetectionFormat parse_detection_format(const std::string& name);  // "torchvision" | "yolov5" | "yolov8" | "boxes"
std::string to_string(DetectionFormat format);

struct DetectionSettings {
  DetectionFormat format = DetectionFormat::Torchvision;
  float score_threshold = 0.5f;   // detections explained (and, for raw outputs, kept) score at least this
  int max_boxes = 100;            // at most this many, the best
  double iou = 0.5;               // a candidate matches a reference box when their IoU exceeds this
  float nms_iou = 0.45f;          // raw outputs: NMS between candidates of one class
  std::vector<int64_t> classes;   // only these labels (empty: all)
};

// Throws lumen::Error naming the first setting out of range (a threshold outside [0, 1], no boxes).
void check_detection_settings(const DetectionSettings& settings);
// The detections of row `image` of a detector's output, best first. Throws lumen::Error, saying what
// the output holds, when it is not the format's.
std::vector<Detection> read_detections(const torch::IValue& output, int64_t image, const DetectionSettings& settings = {});
// Intersection over union of two boxes (0 when either is empty).
float box_iou(const Detection& a, const Detection& b);
// pytorch-grad-cam's FasterRCNNBoxScoreTarget: for each reference box, the candidate whose IoU with it
// is largest (every candidate of a raw output, before NMS); when that IoU exceeds `settings.iou` and its
// label is the reference's, y += IoU + its score. y = 0 for a row where nothing matches (a perturbed
// copy that lost the object). Every row is scored against the same references. Named "boxes",
// Target::boxes = {references}.
Target detection_target(std::vector<Detection> references, const DetectionSettings& settings = {});
// The same, with each row's own references (one list per image of the batch; an empty list: that image
// is not explained, y = 0 and no map).
Target detection_target(std::vector<std::vector<Detection>> references_per_row, const DetectionSettings& settings = {});
// The candidate of row `image` that detection_target scores for `reference` (its rule above, with its
// score and label); nullopt when nothing matches, so y would be 0 — how a user's box is checked first.
std::optional<Detection> matched_detection(const torch::IValue& output, int64_t image, const Detection& reference,
                                           const DetectionSettings& settings = {});
// The detections `settings` selects in each image of `output`, as targets: "box-k" explains each
// image's k-th best box (in the images that have k), so every image's boxes come from one forward and
// a batch of images shares the k-th backward.
std::vector<Target> detection_targets(const torch::IValue& output, const DetectionSettings& settings = {});
// A box the user gives (`box`: corners in each image's own pixels, and its class) explained in each
// image: scaled into the model input's pixels by `scales` (one (input / image width, input / image
// height) per image), scored as detection_target scores it, with the score of the detection it
// matches. For ExplainOptions::targets_from_output. Throws lumen::Error naming `sources[n]` when an
// image has no detection of the box's class that overlaps it by IoU > settings.iou.
std::function<std::vector<Target>(const torch::IValue& output, int64_t images)> given_box_targets(
    const Detection& box, const std::vector<std::pair<float, float>>& scales, const DetectionSettings& settings,
    std::vector<std::string> sources);

// The CLI's small target language, also usable from C++.
// An output path picks a tensor out of nested tuples, lists and dicts: components separated by '.',
// each an index ("1") or a key ("logits"): "", "1", "logits", "heads.1". Empty: default_logits.
OutputSelector output_path(const std::string& path);
// Position `t` of a [N, T, V] sequence output (a captioner's step t), as [N, V] class scores.
OutputSelector at_position(OutputSelector select, int64_t t);
// A teacher-forced sequence: y = sum_t log_softmax(select(output)[:, t, :])[tokens[t]], the same tokens
// for every image (the log-probability of a whole caption).
Target sequence_target(std::vector<int64_t> tokens, OutputSelector select = {});

}  // namespace lumen
#pragma GCC visibility pop
