// ONNX ops of detection exports: the box selection of exports that end in their own NMS (a YOLO
// exported with NMS, as torchvision's nms exports), and the region pooling of two-stage detectors
// (RoiAlign). The selection picks indices and has no gradient; the scores and boxes gathered with those
// indices keep theirs, and RoiAlign's samples carry the features' gradient, so a box-score target
// still reaches the layers.
#include "model/onnx/node_writer.h"

#include <lumen/error.h>

#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace lumen::detail {

namespace {

// The greedy step of NonMaxSuppression over one class's boxes `boxes` [N, 4] (corners, float), visited
// in `order` (best first, already past the score threshold): each box not yet suppressed is kept, and
// suppresses every later box whose IoU with it exceeds `iou_max`; at most `max_out` are kept. In C++
// because written as TorchScript the loop ran its tensor ops once per box: a Faster R-CNN export's two
// NMS over a thousand proposals took 40 times the rest of its forward.
at::Tensor greedy_nms(const at::Tensor& boxes, const at::Tensor& order, double iou_max, int64_t max_out) {
  const auto b = boxes.detach().to(at::kFloat).contiguous();
  const auto o = order.to(at::kLong).contiguous();
  if (b.dim() != 2 || b.size(1) != 4) throw Error("NonMaxSuppression: boxes must be [N, 4], got " + c10::str(b.sizes()));
  const float* p = b.data_ptr<float>();
  const int64_t* idx = o.data_ptr<int64_t>();
  const int64_t m = o.numel();
  for (int64_t k = 0; k < m; ++k)
    if (idx[k] < 0 || idx[k] >= b.size(0)) throw Error("NonMaxSuppression: a box index is out of range");
  const auto area = [&](const float* q) { return (q[2] - q[0]) * (q[3] - q[1]); };
  std::vector<char> suppressed(static_cast<size_t>(m), 0);
  std::vector<int64_t> kept;
  for (int64_t k = 0; k < m && static_cast<int64_t>(kept.size()) < max_out; ++k) {
    if (suppressed[static_cast<size_t>(k)]) continue;
    const float* bi = p + 4 * idx[k];
    kept.push_back(idx[k]);
    for (int64_t j = k + 1; j < m; ++j) {
      if (suppressed[static_cast<size_t>(j)]) continue;
      const float* bj = p + 4 * idx[j];
      const float w = std::max(0.0f, std::min(bi[2], bj[2]) - std::max(bi[0], bj[0]));
      const float h = std::max(0.0f, std::min(bi[3], bj[3]) - std::max(bi[1], bj[1]));
      const float inter = w * h;
      if (inter / (area(bj) + area(bi) - inter) > iou_max) suppressed[static_cast<size_t>(j)] = 1;
    }
  }
  return at::tensor(kept, at::kLong);
}

// NonMaxSuppression(boxes [B, N, 4], scores [B, C, N], max per class, IoU threshold, score threshold)
// -> selected indices [K, 3] (batch, class, box): per batch and class, greedily the best box scoring
// above the score threshold, dropping every remaining box whose IoU with it exceeds the IoU threshold,
// at most `max` per class (0 or absent: none), as ONNX Runtime orders them (batch, class, score).
// Its own operator rather than torchvision::nms so that an ONNX file needs no operator library.
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
  w.line("selected: List[Tensor] = [torch.zeros([0, 3], dtype=4)]");
  w.line("for n in range(s.size(0)):");
  w.line("    for c in range(s.size(1)):");
  w.line("        order = torch.sort(s[n, c], stable=True, dim=0, descending=True)[1]");
  w.line("        order = order[s[n, c][order] > score_min]");
  w.line("        keep = lumen.greedy_nms(b[n], order, iou_max, max_out)");
  w.line("        batch = torch.full([keep.size(0)], n, dtype=4)");
  w.line("        selected.append(torch.stack([batch, torch.full([keep.size(0)], c, dtype=4), keep], 1))");
  w.ret("torch.cat(selected, 0)");
}

// RoiAlign(X [N, C, H, W], rois [R, 4] (x0, y0, x1, y1), batch_indices [R]) -> [R, C, oh, ow], mode
// "avg" (torchvision's roi_align, which detection exports use): each output cell averages a grid of
// bilinear samples of its bin — sampling_ratio per side, or ceil(bin size) when 0. Samples more than a
// pixel outside the map are 0. "half_pixel" (opset 16's default; torchvision's aligned=True) shifts the
// box by half a pixel; "output_half_pixel" (before opset 16; aligned=False) makes boxes at least 1x1.
// The box coordinates carry no gradient (as in torchvision); the features do, through the samples.
// Written as TorchScript for the same reason as NonMaxSuppression.
void write_roi_align(NodeWriter& w) {
  const std::string mode = w.node.attr_string("mode", "avg");
  if (mode != "avg") throw Error("RoiAlign mode '" + mode + "' is not supported (only 'avg', as torchvision's roi_align exports)");
  const std::string transform = w.node.attr_string("coordinate_transformation_mode", w.opset >= 16 ? "half_pixel" : "output_half_pixel");
  if (transform != "half_pixel" && transform != "output_half_pixel")
    throw Error("RoiAlign coordinate_transformation_mode '" + transform + "' (expected half_pixel or output_half_pixel)");
  const bool aligned = transform == "half_pixel";
  const int64_t oh = w.node.attr_int("output_height", 1), ow = w.node.attr_int("output_width", 1);
  const int64_t ratio = w.node.attr_int("sampling_ratio", 0);
  if (oh < 1 || ow < 1 || ratio < 0) throw Error("RoiAlign needs output_height, output_width >= 1 and sampling_ratio >= 0");
  const std::string x = w.in(0), rois = w.in(1), index = w.in(2);
  w.line("scale: float = " + lit(w.node.attr_float("spatial_scale", 1.0)));
  w.line("r = " + rois + ".detach().float()");
  w.line("bi = " + index + ".detach().long()");
  w.line("H = " + x + ".size(2)");
  w.line("W = " + x + ".size(3)");
  w.line("outs: List[Tensor] = []");
  w.line("for k in range(r.size(0)):");
  const std::string off = aligned ? "0.5" : "0.0";
  w.line("    x1 = float(r[k, 0]) * scale - " + off);
  w.line("    y1 = float(r[k, 1]) * scale - " + off);
  w.line("    rw = float(r[k, 2]) * scale - " + off + " - x1");
  w.line("    rh = float(r[k, 3]) * scale - " + off + " - y1");
  if (!aligned) {
    w.line("    rw = max(rw, 1.0)");
    w.line("    rh = max(rh, 1.0)");
  }
  w.line("    bh = rh / " + lit(oh));
  w.line("    bw = rw / " + lit(ow));
  if (ratio > 0) {
    w.line("    gh = " + lit(ratio));
    w.line("    gw = " + lit(ratio));
  } else {  // ceil of the bin's size (TorchScript's source has no math module here)
    w.line("    gh = int(bh)");
    w.line("    gh += 1 if float(gh) < bh else 0");
    w.line("    gw = int(bw)");
    w.line("    gw += 1 if float(gw) < bw else 0");
  }
  w.line("    f = " + x + "[int(bi[k])]");
  w.line("    if gh <= 0 or gw <= 0:");
  w.line("        outs.append(torch.zeros([f.size(0), " + lit(oh) + ", " + lit(ow) + "], dtype=f.dtype))");
  w.line("        continue");
  w.line("    ys = y1 + (torch.arange(" + lit(oh) + " * gh, dtype=f.dtype) + 0.5) * (bh / gh)");
  w.line("    xs = x1 + (torch.arange(" + lit(ow) + " * gw, dtype=f.dtype) + 0.5) * (bw / gw)");
  w.line("    inside = ((ys >= -1.0) & (ys <= float(H))).unsqueeze(1) & ((xs >= -1.0) & (xs <= float(W))).unsqueeze(0)");
  w.line("    ys = ys.clamp_min(0.0)");
  w.line("    xs = xs.clamp_min(0.0)");
  w.line("    yl = ys.floor().long().clamp_max(H - 1)");
  w.line("    xl = xs.floor().long().clamp_max(W - 1)");
  w.line("    yh = (yl + 1).clamp_max(H - 1)");
  w.line("    xh = (xl + 1).clamp_max(W - 1)");
  w.line("    ly = torch.where(ys >= float(H - 1), torch.zeros_like(ys), ys - yl.to(f.dtype)).view([1, -1, 1])");
  w.line("    lx = torch.where(xs >= float(W - 1), torch.zeros_like(xs), xs - xl.to(f.dtype)).view([1, 1, -1])");
  w.line("    top = f.index_select(1, yl)");
  w.line("    bottom = f.index_select(1, yh)");
  w.line("    v = (1 - ly) * ((1 - lx) * top.index_select(2, xl) + lx * top.index_select(2, xh)) + "
         "ly * ((1 - lx) * bottom.index_select(2, xl) + lx * bottom.index_select(2, xh))");
  w.line("    v = v * inside.to(f.dtype).unsqueeze(0)");
  w.line("    outs.append(v.reshape([f.size(0), " + lit(oh) + ", gh, " + lit(ow) + ", gw]).mean([2, 4]))");
  w.line("if len(outs) == 0:");
  w.line("    return torch.zeros([0, " + x + ".size(1), " + lit(oh) + ", " + lit(ow) + "], dtype=" + x + ".dtype)");
  w.ret("torch.stack(outs)");
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lumen, m) { m.def("greedy_nms(Tensor boxes, Tensor order, float iou_max, int max_out) -> Tensor", greedy_nms); }

void add_detection_ops(OpTable& t) {
  t["NonMaxSuppression"] = write_nms;
  t["RoiAlign"] = write_roi_align;
}

}  // namespace lumen::detail
