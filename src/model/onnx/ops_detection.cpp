// ONNX ops of detection exports: the box selection of exports that end in their own NMS (a YOLO
// exported with NMS, as torchvision's nms exports), and the region pooling of two-stage detectors
// (RoiAlign). The selection picks indices and has no gradient; the scores and boxes gathered with those
// indices keep theirs, and RoiAlign's samples carry the features' gradient, so a box-score target
// still reaches the layers.
#include "model/onnx/node_writer.h"

#include <lumen/error.h>

#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
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

// RoiAlign's "avg" mode (torchvision's roi_align, which detection exports use) over every box at once:
// x [N, C, H, W], rois [R, 4] (x0, y0, x1, y1, no gradient), batch index [R] -> [R, C, oh, ow]. Each
// output cell averages a grid of bilinear samples of its bin: `ratio` per side, or ceil(bin size) when
// 0. Samples more than a pixel outside the map are 0. `aligned` (opset 16's half_pixel; torchvision's
// aligned=True) shifts the box by half a pixel; without it boxes are at least 1x1. In C++ for the reason
// greedy_nms is: written as TorchScript, the loop over a two-stage export's thousand proposals ran
// thirty small tensor ops per box, three quarters of its forward.
struct RoiAlignGeometry {
  double scale;
  int64_t oh, ow, ratio;
  bool aligned;
};

// One axis of a bilinear sample at v on `size` pixels: the two pixels and the upper one's weight; false
// when v is more than a pixel outside.
template <typename T>
struct Axis {
  int64_t lo = 0, hi = 0;
  T frac = 0;
};
template <typename T>
bool axis_sample(T v, int64_t size, Axis<T>& a) {
  if (v < T(-1) || v > static_cast<T>(size)) return false;
  v = std::max(v, T(0));
  a.lo = std::min<int64_t>(static_cast<int64_t>(std::floor(v)), size - 1);
  a.hi = std::min<int64_t>(a.lo + 1, size - 1);
  a.frac = v >= static_cast<T>(size - 1) ? T(0) : v - static_cast<T>(a.lo);
  return true;
}

// Calls visit(cell, offsets[4], weights[4]) for every sample of box `r` inside the map, the weights
// already divided by the bin's sample count.
template <typename T, typename Visit>
void roi_samples(const float* r, const RoiAlignGeometry& g, int64_t H, int64_t W, Visit visit) {
  const double off = g.aligned ? 0.5 : 0.0;
  const double x1 = r[0] * g.scale - off, y1 = r[1] * g.scale - off;
  double rw = r[2] * g.scale - off - x1, rh = r[3] * g.scale - off - y1;
  if (!g.aligned) rw = std::max(rw, 1.0), rh = std::max(rh, 1.0);
  const double bh = rh / static_cast<double>(g.oh), bw = rw / static_cast<double>(g.ow);
  // A box of NaN or of a size no map has (a broken model's proposals) would make the adaptive grid
  // undefined or endless.
  if (!std::isfinite(bh) || !std::isfinite(bw) || (g.ratio == 0 && (bh > 1e5 || bw > 1e5)))
    throw Error("RoiAlign: a box's size is not finite or beyond any feature map (" + std::to_string(rw) + " x " + std::to_string(rh) + ")");
  const int64_t gh = g.ratio > 0 ? g.ratio : static_cast<int64_t>(std::ceil(bh));
  const int64_t gw = g.ratio > 0 ? g.ratio : static_cast<int64_t>(std::ceil(bw));
  if (gh <= 0 || gw <= 0) return;
  const T count = static_cast<T>(gh * gw), step_y = static_cast<T>(bh / static_cast<double>(gh)), step_x = static_cast<T>(bw / static_cast<double>(gw));
  for (int64_t sy = 0; sy < g.oh * gh; ++sy) {
    Axis<T> a;
    if (!axis_sample(static_cast<T>(y1) + (static_cast<T>(sy) + T(0.5)) * step_y, H, a)) continue;
    for (int64_t sx = 0; sx < g.ow * gw; ++sx) {
      Axis<T> b;
      if (!axis_sample(static_cast<T>(x1) + (static_cast<T>(sx) + T(0.5)) * step_x, W, b)) continue;
      const int64_t offsets[4] = {a.lo * W + b.lo, a.lo * W + b.hi, a.hi * W + b.lo, a.hi * W + b.hi};
      const T weights[4] = {(1 - a.frac) * (1 - b.frac) / count, (1 - a.frac) * b.frac / count, a.frac * (1 - b.frac) / count,
                            a.frac * b.frac / count};
      visit((sy / gh) * g.ow + sx / gw, offsets, weights);
    }
  }
}

class RoiAlignFn : public torch::autograd::Function<RoiAlignFn> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& rois, const at::Tensor& index,
                            double scale, int64_t oh, int64_t ow, int64_t ratio, bool aligned) {
    const RoiAlignGeometry g{scale, oh, ow, ratio, aligned};
    const auto xc = x.contiguous(), r = rois.detach().to(at::kFloat).contiguous(), bi = index.detach().to(at::kLong).contiguous();
    const int64_t n = xc.size(0), C = xc.size(1), H = xc.size(2), W = xc.size(3), R = r.size(0);
    const int64_t* b = bi.data_ptr<int64_t>();
    for (int64_t k = 0; k < R; ++k)
      if (b[k] < 0 || b[k] >= n) throw Error("RoiAlign: batch index " + std::to_string(b[k]) + " is outside the batch of " + std::to_string(n));
    auto out = at::zeros({R, C, oh, ow}, xc.options());
    AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "lumen_roi_align", [&] {
      const scalar_t* px = xc.data_ptr<scalar_t>();
      scalar_t* po = out.data_ptr<scalar_t>();
      const float* pr = r.data_ptr<float>();
      at::parallel_for(0, R, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const scalar_t* f = px + b[k] * C * H * W;
          scalar_t* o = po + k * C * oh * ow;
          roi_samples<scalar_t>(pr + 4 * k, g, H, W, [&](int64_t cell, const int64_t* pos, const scalar_t* w) {
            for (int64_t c = 0; c < C; ++c) {
              const scalar_t* fc = f + c * H * W;
              o[c * oh * ow + cell] += w[0] * fc[pos[0]] + w[1] * fc[pos[1]] + w[2] * fc[pos[2]] + w[3] * fc[pos[3]];
            }
          });
        }
      });
    });
    ctx->save_for_backward({r, bi});
    ctx->saved_data["shape"] = xc.sizes().vec();
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["oh"] = oh;
    ctx->saved_data["ow"] = ow;
    ctx->saved_data["ratio"] = ratio;
    ctx->saved_data["aligned"] = aligned;
    return out;
  }
  // Each sample's gradient back to its four pixels; threads split the channels, so none write the
  // same pixel.
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& r = saved[0];
    const int64_t* b = saved[1].data_ptr<int64_t>();
    const RoiAlignGeometry g{ctx->saved_data["scale"].toDouble(), ctx->saved_data["oh"].toInt(), ctx->saved_data["ow"].toInt(),
                             ctx->saved_data["ratio"].toInt(), ctx->saved_data["aligned"].toBool()};
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const auto go = grads[0].contiguous();
    const int64_t C = shape[1], H = shape[2], W = shape[3], R = r.size(0), cells = g.oh * g.ow;
    auto gx = at::zeros(shape, go.options());
    AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "lumen_roi_align_backward", [&] {
      const scalar_t* pg = go.data_ptr<scalar_t>();
      scalar_t* px = gx.data_ptr<scalar_t>();
      const float* pr = r.data_ptr<float>();
      at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t k = 0; k < R; ++k) {
          scalar_t* f = px + b[k] * C * H * W;
          const scalar_t* o = pg + k * C * cells;
          roi_samples<scalar_t>(pr + 4 * k, g, H, W, [&](int64_t cell, const int64_t* pos, const scalar_t* w) {
            for (int64_t c = c0; c < c1; ++c) {
              const scalar_t v = o[c * cells + cell];
              scalar_t* fc = f + c * H * W;
              fc[pos[0]] += w[0] * v, fc[pos[1]] += w[1] * v, fc[pos[2]] += w[2] * v, fc[pos[3]] += w[3] * v;
            }
          });
        }
      });
    });
    const auto none = at::Tensor();
    return {gx, none, none, none, none, none, none, none};
  }
};

at::Tensor roi_align(const at::Tensor& x, const at::Tensor& rois, const at::Tensor& index, double scale, int64_t oh, int64_t ow, int64_t ratio,
                     bool aligned) {
  if (x.dim() != 4 || rois.dim() != 2 || rois.size(1) != 4 || index.numel() != rois.size(0))
    throw Error("RoiAlign: expected X [N, C, H, W], rois [R, 4] and one batch index per roi; got " + c10::str(x.sizes()) + ", " +
                c10::str(rois.sizes()) + ", " + c10::str(index.sizes()));
  return RoiAlignFn::apply(x, rois, index.reshape({-1}), scale, oh, ow, ratio, aligned);
}

void write_roi_align(NodeWriter& w) {
  const std::string mode = w.node.attr_string("mode", "avg");
  if (mode != "avg") throw Error("RoiAlign mode '" + mode + "' is not supported (only 'avg', as torchvision's roi_align exports)");
  const std::string transform = w.node.attr_string("coordinate_transformation_mode", w.opset >= 16 ? "half_pixel" : "output_half_pixel");
  if (transform != "half_pixel" && transform != "output_half_pixel")
    throw Error("RoiAlign coordinate_transformation_mode '" + transform + "' (expected half_pixel or output_half_pixel)");
  const int64_t oh = w.node.attr_int("output_height", 1), ow = w.node.attr_int("output_width", 1);
  const int64_t ratio = w.node.attr_int("sampling_ratio", 0);
  if (oh < 1 || ow < 1 || ratio < 0) throw Error("RoiAlign needs output_height, output_width >= 1 and sampling_ratio >= 0");
  w.ret("lumen.roi_align(" + w.in(0) + ", " + w.in(1) + ".detach().float(), " + w.in(2) + ".detach().long(), " +
        lit(w.node.attr_float("spatial_scale", 1.0)) + ", " + lit(oh) + ", " + lit(ow) + ", " + lit(ratio) + ", " +
        (transform == "half_pixel" ? "True" : "False") + ")");
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lumen, m) {
  m.def("greedy_nms(Tensor boxes, Tensor order, float iou_max, int max_out) -> Tensor", greedy_nms);
  m.def("roi_align(Tensor x, Tensor rois, Tensor index, float scale, int oh, int ow, int ratio, bool aligned) -> Tensor", roi_align);
}

void add_detection_ops(OpTable& t) {
  t["NonMaxSuppression"] = write_nms;
  t["RoiAlign"] = write_roi_align;
}

}  // namespace lumen::detail
