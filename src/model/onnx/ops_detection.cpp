// ONNX ops of detection exports: the box selection of exports that end in their own NMS (a YOLO
// exported with NMS, as torchvision's nms exports), and the region pooling of two-stage detectors
// (RoiAlign). The selection picks indices and has no gradient; the scores and boxes gathered with those
// indices keep theirs, and RoiAlign's samples carry the features' gradient, so a box-score target
// still reaches the layers.
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

void add_detection_ops(OpTable& t) {
  t["NonMaxSuppression"] = write_nms;
  t["RoiAlign"] = write_roi_align;
}

}  // namespace lumen::detail
