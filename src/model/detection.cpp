// Detection targets: a detector's output read per image (torchvision's dicts, or a raw YOLO-family
// tensor decoded), and pytorch-grad-cam's box-score target on it.
#include <lumen/error.h>
#include <lumen/target.h>

#include <opencv2/dnn.hpp>

#include <algorithm>
#include <sstream>

namespace lumen {

DetectionFormat parse_detection_format(const std::string& name) {
  if (name == "torchvision") return DetectionFormat::Torchvision;
  if (name == "yolov5") return DetectionFormat::YoloV5;
  if (name == "yolov8") return DetectionFormat::YoloV8;
  if (name == "boxes") return DetectionFormat::Boxes;
  throw Error("unknown detection output '" + name + "' (expected torchvision, yolov5, yolov8 or boxes)");
}

std::string to_string(DetectionFormat format) {
  switch (format) {
    case DetectionFormat::Torchvision: return "torchvision";
    case DetectionFormat::YoloV5: return "yolov5";
    case DetectionFormat::YoloV8: return "yolov8";
    case DetectionFormat::Boxes: return "boxes";
  }
  return "?";
}

namespace {

// One image's candidates, differentiable: boxes [M, 4] (x0, y0, x1, y1), labels [M], scores [M].
struct Boxes {
  torch::Tensor boxes, labels, scores;
};

// torchvision's detectors exported to ONNX take one image and return its (boxes [M, 4], labels [M], scores [M]).
bool is_box_triple(const torch::IValue& output) {
  if (!output.isTuple()) return false;
  const auto& e = output.toTupleRef().elements();
  return e.size() == 3 && e[0].isTensor() && e[1].isTensor() && e[2].isTensor() && e[0].toTensor().dim() == 2 &&
         e[1].toTensor().dim() == 1 && e[2].toTensor().dim() == 1;
}

// The List[Dict[str, Tensor]] of a torchvision detector's output: the output itself or an element of its tuple.
c10::List<c10::IValue> detection_list(const torch::IValue& output) {
  auto is_dicts = [](const torch::IValue& v) {
    if (!v.isList()) return false;
    const auto list = v.toList();
    return list.empty() || list.get(0).isGenericDict();
  };
  if (is_dicts(output)) return output.toList();
  if (output.isTuple())
    for (const auto& e : output.toTupleRef().elements())
      if (is_dicts(e)) return e.toList();
  throw Error("--task detection needs a detector's output (a list of dicts with boxes, labels and scores, as torchvision's "
              "detectors give, or their ONNX export's boxes, labels and scores, or a YOLO tensor with --detection-output yolov5|yolov8|boxes); this model returns " +
              output.type()->annotation_str());
}

Boxes torchvision_boxes(const c10::List<c10::IValue>& list, int64_t image) {
  const auto dict = list.get(static_cast<size_t>(image)).toGenericDict();
  auto entry = [&](const char* key) {
    if (!dict.contains(key) || !dict.at(key).isTensor()) throw Error(std::string("the detector's output has no \"") + key + "\" tensor");
    return dict.at(key).toTensor();
  };
  return {entry("boxes"), entry("labels").to(torch::kInt64), entry("scores")};
}

// A YOLO output [N, B, 5 + C] (v5) or [N, 4 + C, B] (v8) as [N, B, 4 + 1 + C] rows; [N, K, 6] (boxes) as it is.
torch::Tensor yolo_tensor(const torch::IValue& output, DetectionFormat format) {
  torch::Tensor t;
  if (output.isTensor()) t = output.toTensor();
  else if (output.isTuple() && !output.toTupleRef().elements().empty() && output.toTupleRef().elements()[0].isTensor())
    t = output.toTupleRef().elements()[0].toTensor();  // exports that also return the per-level maps
  const int64_t fixed = format == DetectionFormat::YoloV5 ? 5 : 4;
  const bool boxes = format == DetectionFormat::Boxes;
  if (!t.defined() || t.dim() != 3 || (boxes && t.size(2) != 6))
    throw Error("--detection-output " + to_string(format) + " needs a [N, " +
                (boxes ? "K, 6" : format == DetectionFormat::YoloV5 ? "B, 5 + C" : "4 + C, B") + "] tensor; this model returns " +
                (t.defined() ? "a tensor of shape " + c10::str(t.sizes()) : output.type()->annotation_str()));
  if (boxes) return t;
  if (format == DetectionFormat::YoloV8) t = t.transpose(1, 2);
  if (t.size(2) <= fixed) throw Error("the detector's output has shape " + c10::str(t.sizes()) + ": no class columns after the box");
  return t;
}

Boxes yolo_boxes(const torch::Tensor& rows, DetectionFormat format) {
  if (format == DetectionFormat::Boxes) return {rows.slice(1, 0, 4), rows.select(1, 5).round().to(torch::kInt64), rows.select(1, 4)};
  const auto c = rows.slice(1, 0, 2), half = rows.slice(1, 2, 4) / 2;
  const auto boxes = torch::cat({c - half, c + half}, 1);
  auto probs = format == DetectionFormat::YoloV5 ? rows.slice(1, 5) * rows.slice(1, 4, 5) : rows.slice(1, 4);
  const auto best = probs.max(1);
  return {boxes, std::get<1>(best), std::get<0>(best)};
}

int64_t images_in(const torch::IValue& output, DetectionFormat format) {
  if (format != DetectionFormat::Torchvision) return yolo_tensor(output, format).size(0);
  return is_box_triple(output) ? 1 : static_cast<int64_t>(detection_list(output).size());
}

Boxes torchvision_candidates(const torch::IValue& output, int64_t image) {
  if (!is_box_triple(output)) return torchvision_boxes(detection_list(output), image);
  const auto& e = output.toTupleRef().elements();
  return {e[0].toTensor(), e[1].toTensor().to(torch::kInt64), e[2].toTensor()};
}

Boxes candidates(const torch::IValue& output, int64_t image, DetectionFormat format) {
  const int64_t n = images_in(output, format);
  if (image < 0 || image >= n) throw Error("the detector's output has " + std::to_string(n) + " images, not " + std::to_string(image + 1));
  Boxes b = format == DetectionFormat::Torchvision ? torchvision_candidates(output, image)
                                                   : yolo_boxes(yolo_tensor(output, format)[image], format);
  const int64_t m = b.boxes.size(0);
  if (b.boxes.dim() != 2 || b.boxes.size(1) != 4 || b.labels.numel() != m || b.scores.numel() != m)
    throw Error("the detector's output has boxes " + c10::str(b.boxes.sizes()) + ", labels " + c10::str(b.labels.sizes()) + " and scores " +
                c10::str(b.scores.sizes()) + "; expected [M, 4], [M] and [M]");
  return b;
}

// IoU of one box [4] with each of `boxes` [M, 4], differentiable in `boxes` (torchvision's box_iou).
torch::Tensor box_ious(const torch::Tensor& box, const torch::Tensor& boxes) {
  const auto area = [](const torch::Tensor& b) { return (b.select(-1, 2) - b.select(-1, 0)) * (b.select(-1, 3) - b.select(-1, 1)); };
  const auto lt = torch::max(box.slice(0, 0, 2).unsqueeze(0), boxes.slice(1, 0, 2));
  const auto rb = torch::min(box.slice(0, 2, 4).unsqueeze(0), boxes.slice(1, 2, 4));
  const auto wh = (rb - lt).clamp_min(0);
  const auto inter = wh.select(1, 0) * wh.select(1, 1);
  return inter / (area(box) + area(boxes) - inter);
}

// detection_target's rule: the candidate with the largest IoU, when it exceeds `iou` and has label
// `cls`; -1 when none does.
int64_t match(const torch::Tensor& ious, const torch::Tensor& labels, int64_t cls, double iou) {
  if (ious.numel() == 0) return -1;
  const int64_t best = ious.argmax().item<int64_t>();
  return ious[best].item<double>() > iou && labels[best].item<int64_t>() == cls ? best : -1;
}

torch::Tensor box_tensor(const Detection& d) { return torch::tensor({d.x0, d.y0, d.x1, d.y1}); }

}  // namespace

void check_detection_settings(const DetectionSettings& s) {
  if (!(s.iou >= 0 && s.iou < 1)) throw Error("the IoU threshold must lie in [0, 1)");
  if (!(s.nms_iou > 0 && s.nms_iou <= 1)) throw Error("the NMS IoU must lie in (0, 1]");
  if (!(s.score_threshold >= 0 && s.score_threshold <= 1)) throw Error("the score threshold must lie in [0, 1]");
  if (s.max_boxes < 1) throw Error("max boxes must be at least 1");
}

float box_iou(const Detection& a, const Detection& b) {
  const float w = std::min(a.x1, b.x1) - std::max(a.x0, b.x0), h = std::min(a.y1, b.y1) - std::max(a.y0, b.y0);
  if (!(w > 0 && h > 0)) return 0;
  const float inter = w * h, uni = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter;
  return uni > 0 ? inter / uni : 0;
}

std::vector<Detection> read_detections(const torch::IValue& output, int64_t image, const DetectionSettings& settings) {
  check_detection_settings(settings);
  const Boxes b = candidates(output, image, settings.format);
  const auto boxes = b.boxes.detach().to(torch::kFloat32).contiguous();
  const auto labels = b.labels.detach().contiguous();
  const auto scores = b.scores.detach().to(torch::kFloat32).contiguous();
  std::vector<Detection> all;
  for (int64_t j = 0; j < boxes.size(0); ++j) {
    const float* r = boxes.data_ptr<float>() + 4 * j;
    all.push_back({r[0], r[1], r[2], r[3], labels.data_ptr<int64_t>()[j], scores.data_ptr<float>()[j], {}});
  }
  if (settings.format == DetectionFormat::Torchvision || settings.format == DetectionFormat::Boxes) return all;  // the model ran its own NMS
  // Class-aware NMS as YOLO's own: each class's boxes are moved apart by an offset larger than the
  // image, so that one call never suppresses across classes.
  // The threshold is applied here ("at least", as for torchvision's outputs); NMSBoxes keeps scores
  // above 0 (a candidate scoring exactly 0 detects nothing).
  all.erase(std::remove_if(all.begin(), all.end(), [&](const Detection& d) { return !(d.score >= settings.score_threshold); }), all.end());
  std::vector<cv::Rect2d> rects;
  std::vector<float> confidences;
  for (const auto& d : all) {
    const double offset = 8192.0 * static_cast<double>(d.cls);
    rects.emplace_back(d.x0 + offset, d.y0 + offset, d.x1 - d.x0, d.y1 - d.y0);
    confidences.push_back(d.score);
  }
  std::vector<int> keep;
  cv::dnn::NMSBoxes(rects, confidences, 0.0f, settings.nms_iou, keep);
  std::stable_sort(keep.begin(), keep.end(), [&](int p, int q) { return confidences[static_cast<size_t>(p)] > confidences[static_cast<size_t>(q)]; });
  std::vector<Detection> kept;
  for (int k : keep) kept.push_back(all[static_cast<size_t>(k)]);
  return kept;
}

Target detection_target(std::vector<Detection> references, const DetectionSettings& settings) {
  if (references.empty()) throw Error("a detection target needs at least one reference box");
  return detection_target(std::vector<std::vector<Detection>>{std::move(references)}, settings);
}

Target detection_target(std::vector<std::vector<Detection>> references_per_row, const DetectionSettings& settings) {
  check_detection_settings(settings);
  if (references_per_row.empty()) throw Error("a detection target needs the reference boxes of at least one image");
  std::vector<torch::Tensor> refs;  // per row, [K, 4]
  for (const auto& row : references_per_row) {
    torch::Tensor r = torch::empty({static_cast<int64_t>(row.size()), 4});
    for (size_t k = 0; k < row.size(); ++k) {
      if (!(row[k].x1 > row[k].x0 && row[k].y1 > row[k].y0)) throw Error("a reference box must have x0 < x1 and y0 < y1");
      r[static_cast<int64_t>(k)] = box_tensor(row[k]);
    }
    refs.push_back(r);
  }
  Target t;
  t.name = "boxes";
  t.boxes = references_per_row;
  const DetectionFormat format = settings.format;
  const double iou = settings.iou;
  t.fn = [refs, references_per_row, iou, format](const torch::IValue& output) {
    const int64_t images = images_in(output, format);
    if (refs.size() > 1 && static_cast<int64_t>(refs.size()) != images)
      throw Error("a detection target holds the boxes of " + std::to_string(refs.size()) + " images; the output has " + std::to_string(images));
    std::vector<torch::Tensor> rows;
    for (int64_t n = 0; n < images; ++n) {
      const size_t row = refs.size() > 1 ? static_cast<size_t>(n) : 0;
      const Boxes b = candidates(output, n, format);
      // A row that matches nothing still depends on the scores (times zero), so that a batch in which
      // no row matches has a gradient of zeros rather than none.
      torch::Tensor y = b.scores.sum() * 0;
      for (int64_t k = 0; k < refs[row].size(0); ++k) {
        const auto ious = box_ious(refs[row][k].to(b.boxes.dtype()), b.boxes);
        const int64_t best = match(ious, b.labels, references_per_row[row][static_cast<size_t>(k)].cls, iou);
        if (best >= 0) y = y + ious[best] + b.scores[best];
      }
      rows.push_back(y.reshape({}));
    }
    return torch::stack(rows);
  };
  // The extra passes' rows are copies of the batch's images: each is scored against its image's boxes.
  if (references_per_row.size() > 1)
    t.rows_of = [references_per_row, settings, name = t.name](const std::vector<int64_t>& images) {
      std::vector<std::vector<Detection>> per_row;
      for (int64_t i : images) per_row.push_back(references_per_row.at(static_cast<size_t>(i)));
      Target copy = detection_target(std::move(per_row), settings);
      copy.name = name;
      return copy;
    };
  return t;
}

std::optional<Detection> matched_detection(const torch::IValue& output, int64_t image, const Detection& reference,
                                           const DetectionSettings& settings) {
  check_detection_settings(settings);
  const Boxes b = candidates(output, image, settings.format);
  const auto boxes = b.boxes.detach().to(torch::kFloat32);
  const int64_t best = match(box_ious(box_tensor(reference), boxes), b.labels, reference.cls, settings.iou);
  if (best < 0) return std::nullopt;
  const auto r = boxes[best].contiguous();
  const float* v = r.data_ptr<float>();
  return Detection{v[0], v[1], v[2], v[3], b.labels[best].item<int64_t>(), b.scores[best].item<float>(), {}};
}

std::function<std::vector<Target>(const torch::IValue&, int64_t)> given_box_targets(const Detection& box,
                                                                                     const std::vector<std::pair<float, float>>& scales,
                                                                                     const DetectionSettings& settings,
                                                                                     std::vector<std::string> sources) {
  check_detection_settings(settings);
  if (!(box.x1 > box.x0 && box.y1 > box.y0)) throw Error("a box must have x0 < x1 and y0 < y1");
  std::vector<Detection> boxes;  // per image, in the model input's pixels
  for (const auto& [sx, sy] : scales) boxes.push_back({box.x0 * sx, box.y0 * sy, box.x1 * sx, box.y1 * sy, box.cls, 1.0f, {}});
  return [box, boxes, settings, sources](const torch::IValue& output, int64_t) {
    std::vector<std::vector<Detection>> per_image;
    for (size_t n = 0; n < boxes.size(); ++n) {
      const auto best = matched_detection(output, static_cast<int64_t>(n), boxes[n], settings);
      if (!best) {
        std::ostringstream what;
        what << "no detection of class " << box.cls << " overlaps the box " << box.x0 << "," << box.y0 << "," << box.x1 << "," << box.y1
             << " by IoU > " << settings.iou << " in " << (n < sources.size() ? sources[n] : "image " + std::to_string(n))
             << " (lower the IoU threshold, or check the box is in image pixels)";
        throw Error(what.str());
      }
      per_image.push_back({boxes[n]});
      per_image.back().front().score = best->score;
    }
    Target t = per_image.size() == 1 ? detection_target(per_image.front(), settings) : detection_target(per_image, settings);
    t.name = "box";
    return std::vector<Target>{t};
  };
}

std::vector<Target> detection_targets(const torch::IValue& output, const DetectionSettings& settings) {
  const int64_t images = images_in(output, settings.format);
  const auto& classes = settings.classes;
  std::vector<std::vector<Detection>> found(static_cast<size_t>(images));  // per image, best first
  size_t most = 0;
  for (int64_t n = 0; n < images; ++n) {
    auto& kept = found[static_cast<size_t>(n)];
    for (const Detection& d : read_detections(output, n, settings)) {
      if (static_cast<int>(kept.size()) >= settings.max_boxes) break;
      if (!(d.score >= settings.score_threshold)) continue;
      if (!classes.empty() && std::find(classes.begin(), classes.end(), d.cls) == classes.end()) continue;
      kept.push_back(d);
    }
    most = std::max(most, kept.size());
  }
  std::vector<Target> targets;
  for (size_t k = 0; k < most; ++k) {
    std::vector<std::vector<Detection>> kth(static_cast<size_t>(images));
    for (size_t n = 0; n < found.size(); ++n)
      if (k < found[n].size()) kth[n] = {found[n][k]};
    // One image: the plain target (its copies in the extra passes are scored against its box as they are).
    targets.push_back(images == 1 ? detection_target(kth.front(), settings) : detection_target(std::move(kth), settings));
    targets.back().name = "box-" + std::to_string(k + 1);
  }
  return targets;
}

const std::vector<Detection>& Target::boxes_of(int64_t row) const {
  static const std::vector<Detection> none;
  if (boxes.empty()) return none;
  if (boxes.size() == 1) return boxes.front();
  return row >= 0 && row < static_cast<int64_t>(boxes.size()) ? boxes[static_cast<size_t>(row)] : none;
}

}  // namespace lumen
