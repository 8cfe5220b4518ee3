// Detection targets: torchvision's detector output read per image, and pytorch-grad-cam's box-score
// target on it.
#include <lumen/error.h>
#include <lumen/target.h>

#include <algorithm>

namespace lumen {

namespace {

// The List[Dict[str, Tensor]] of a detector's output: the output itself or an element of its tuple.
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
              "detectors give); this model returns " + output.type()->annotation_str());
}

struct Boxes {
  torch::Tensor boxes, labels, scores;  // [M, 4], [M], [M]
};

Boxes boxes_of(const c10::List<c10::IValue>& list, int64_t image) {
  if (image < 0 || image >= static_cast<int64_t>(list.size()))
    throw Error("the detector's output has " + std::to_string(list.size()) + " images, not " + std::to_string(image + 1));
  const auto dict = list.get(static_cast<size_t>(image)).toGenericDict();
  auto entry = [&](const char* key) {
    if (!dict.contains(key) || !dict.at(key).isTensor()) throw Error(std::string("the detector's output has no \"") + key + "\" tensor");
    return dict.at(key).toTensor();
  };
  Boxes b{entry("boxes"), entry("labels"), entry("scores")};
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

}  // namespace

float box_iou(const Detection& a, const Detection& b) {
  const float w = std::min(a.x1, b.x1) - std::max(a.x0, b.x0), h = std::min(a.y1, b.y1) - std::max(a.y0, b.y0);
  if (!(w > 0 && h > 0)) return 0;
  const float inter = w * h, uni = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter;
  return uni > 0 ? inter / uni : 0;
}

std::vector<Detection> read_detections(const torch::IValue& output, int64_t image) {
  const Boxes b = boxes_of(detection_list(output), image);
  const auto boxes = b.boxes.detach().to(torch::kFloat32).contiguous();
  const auto labels = b.labels.detach().to(torch::kInt64).contiguous();
  const auto scores = b.scores.detach().to(torch::kFloat32).contiguous();
  std::vector<Detection> out;
  for (int64_t j = 0; j < boxes.size(0); ++j) {
    const float* r = boxes.data_ptr<float>() + 4 * j;
    out.push_back({r[0], r[1], r[2], r[3], labels.data_ptr<int64_t>()[j], scores.data_ptr<float>()[j], {}});
  }
  return out;
}

Target detection_target(std::vector<Detection> references, double iou) {
  if (references.empty()) throw Error("a detection target needs at least one reference box");
  if (!(iou >= 0 && iou < 1)) throw Error("the IoU threshold must lie in [0, 1)");
  torch::Tensor refs = torch::empty({static_cast<int64_t>(references.size()), 4});
  for (size_t k = 0; k < references.size(); ++k) {
    const auto& r = references[k];
    if (!(r.x1 > r.x0 && r.y1 > r.y0)) throw Error("a reference box must have x0 < x1 and y0 < y1");
    refs[static_cast<int64_t>(k)] = torch::tensor({r.x0, r.y0, r.x1, r.y1});
  }
  Target t;
  t.name = "boxes";
  t.boxes = references;
  t.fn = [refs, references, iou](const torch::IValue& output) {
    const auto list = detection_list(output);
    std::vector<torch::Tensor> rows;
    for (int64_t n = 0; n < static_cast<int64_t>(list.size()); ++n) {
      const Boxes b = boxes_of(list, n);
      // A row that matches nothing still depends on the scores (times zero), so that a batch in which
      // no row matches has a gradient of zeros rather than none.
      torch::Tensor y = b.scores.sum() * 0;
      if (b.boxes.size(0) > 0) {
        const auto labels = b.labels.to(torch::kInt64);
        for (int64_t k = 0; k < refs.size(0); ++k) {
          const auto ious = box_ious(refs[k].to(b.boxes.dtype()), b.boxes);
          const int64_t best = ious.argmax().item<int64_t>();
          if (ious[best].item<double>() > iou && labels[best].item<int64_t>() == references[static_cast<size_t>(k)].cls)
            y = y + ious[best] + b.scores[best];
        }
      }
      rows.push_back(y.reshape({}));
    }
    return torch::stack(rows);
  };
  return t;
}

std::vector<Target> detection_targets(const torch::IValue& output, float score_threshold, int max_boxes, double iou,
                                      const std::vector<int64_t>& classes) {
  const auto list = detection_list(output);
  if (list.size() != 1)
    throw Error("detection targets explain one image per forward; this output holds " + std::to_string(list.size()));
  std::vector<Target> targets;
  for (const Detection& d : read_detections(output, 0)) {
    if (static_cast<int>(targets.size()) >= max_boxes) break;
    if (!(d.score >= score_threshold)) continue;
    if (!classes.empty() && std::find(classes.begin(), classes.end(), d.cls) == classes.end()) continue;
    targets.push_back(detection_target({d}, iou));
    targets.back().name = "box-" + std::to_string(targets.size());
  }
  return targets;
}

}  // namespace lumen
