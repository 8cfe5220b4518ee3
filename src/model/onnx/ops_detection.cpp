// ONNX ops of detection exports that end in their own box selection (a YOLO exported with NMS, as
// torchvision's nms exports). The selection picks indices and has no gradient; the scores and boxes
// gathered with those indices keep theirs, so a box-score target still reaches the layers.
#include "model/onnx/node_writer.h"

#include <lumen/error.h>

namespace lumen::detail {

namespace {

// NonMaxSuppression(boxes [B, N, 4], scores [B, C, N], max per class, IoU threshold, score threshold)
// -> selected indices [K, 3] (batch, class, box): per batch and class, greedily the best box scoring
// above the score threshold, dropping every remaining box whose IoU with it exceeds the IoU threshold,
// at most `max` per class (0 or absent: none), as ONNX Runtime orders them (batch, class, score).
// Written as TorchScript rather than torchvision::nms so that an ONNX file needs no operator library.
void write_nms(NodeWriter& w) {
  const std::string boxes = w.in(0), scores = w.in(1);
  const auto scalar = [&](size_t i, const std::string& fallback, bool integer) -> std::string {
    if (!w.has(i)) return fallback;
    if (w.is_const(i)) {
      if (w.constant[i]->numel() != 1) throw Error("input " + std::to_string(i) + " must hold one value");
      // An integer read as an integer: torchvision exports "no limit" as 2^63 - 1, which no double holds.
      return integer ? lit(w.constant[i]->to(torch::kLong).reshape({-1})[0].item<int64_t>()) : lit(w.scalar(i));
    }
    return std::string(integer ? "int(" : "float(") + w.in(i) + ".reshape([-1])[0])";
  };
  w.line("max_out: int = " + scalar(2, "0", true));
  w.line("iou_max: float = " + scalar(3, "0.0", false));
  w.line("score_min: float = " + scalar(4, "float('-inf')", false));
  w.line("b = " + boxes + ".detach().float()");
  if (w.node.attr_int("center_point_box", 0)) {
    w.line("half = b[:, :, 2:4] / 2");
    w.line("b = torch.cat([b[:, :, 0:2] - half, b[:, :, 0:2] + half], 2)");
  } else {  // either diagonal pair of corners, in either axis order (IoU does not care which is x)
    w.line("b = torch.cat([torch.minimum(b[:, :, 0:2], b[:, :, 2:4]), torch.maximum(b[:, :, 0:2], b[:, :, 2:4])], 2)");
  }
  w.line("s = " + scores + ".detach().float()");
  w.line("selected: List[int] = []");
  w.line("for n in range(s.size(0)):");
  w.line("    area = (b[n, :, 2] - b[n, :, 0]) * (b[n, :, 3] - b[n, :, 1])");
  w.line("    for c in range(s.size(1)):");
  w.line("        order = torch.sort(s[n, c], stable=True, dim=0, descending=True)[1]");
  w.line("        order = order[s[n, c][order] > score_min]");
  w.line("        alive = torch.ones([order.size(0)], dtype=11)");
  w.line("        kept = 0");
  w.line("        for k in range(order.size(0)):");
  w.line("            if max_out <= kept:");
  w.line("                break");
  w.line("            if not bool(alive[k]):");
  w.line("                continue");
  w.line("            i = order[k]");
  w.line("            selected += [n, c, int(i)]");
  w.line("            kept += 1");
  w.line("            rest = order[k + 1:]");
  w.line("            lt = torch.maximum(b[n, rest, 0:2], b[n, i, 0:2])");
  w.line("            rb = torch.minimum(b[n, rest, 2:4], b[n, i, 2:4])");
  w.line("            wh = (rb - lt).clamp_min(0)");
  w.line("            inter = wh[:, 0] * wh[:, 1]");
  w.line("            iou = inter / (area[rest] + area[i] - inter)");
  w.line("            alive[k + 1:] = alive[k + 1:] & ~(iou > iou_max)");
  w.ret("torch.tensor(selected, dtype=4).reshape([-1, 3])");
}

}  // namespace

void add_detection_ops(OpTable& t) { t["NonMaxSuppression"] = write_nms; }

}  // namespace lumen::detail
