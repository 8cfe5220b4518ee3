// ONNX reshaping, slicing, gathering, padding, resizing and casting as TorchScript.
#include "model/onnx/node_writer.h"
#include "model/onnx/tensors.h"

#include <lumen/error.h>

#include <algorithm>

namespace lumen::detail {
namespace {

void write_reshape(NodeWriter& w) {
  const std::string x = w.in(0);
  const bool allow_zero = w.node.attr_int("allowzero", 0) != 0;
  auto shape = w.const_ints(1);
  if (shape && (allow_zero || std::find(shape->begin(), shape->end(), 0) == shape->end())) {
    w.ret(x + ".reshape(" + w.ints_literal(*shape) + ")");
    return;
  }
  const std::string s = w.ints(1);
  // A 0 copies the input's size at that position (unless allowzero).
  w.line("shape: List[int] = []");
  w.line("for i in range(len(" + s + ")):");
  w.line(std::string("    shape.append(") + (allow_zero ? s + "[i]" : x + ".size(i) if " + s + "[i] == 0 else " + s + "[i]") + ")");
  w.ret(x + ".reshape(shape)");
}

void write_flatten(NodeWriter& w) {
  const std::string x = w.in(0);
  normalise_axis(w, "ax", w.node.attr_int("axis", 1), x + ".dim()");
  w.line("if ax == 0:");
  w.line("    return " + x + ".reshape([1, -1])");
  w.line("if ax == " + x + ".dim():");
  w.line("    return " + x + ".reshape([-1, 1])");
  w.ret("torch.flatten(torch.flatten(" + x + ", ax), 0, ax - 1)");
}

void write_transpose(NodeWriter& w) {
  const std::string x = w.in(0);
  if (auto perm = w.node.attr_ints("perm")) {
    w.ret(x + ".permute(" + w.ints_literal(*perm) + ")");
    return;
  }
  int_list(w, "perm", "0", x + ".dim()", x + ".dim() - 1 - i");
  w.ret(x + ".permute(perm)");
}

void write_concat(NodeWriter& w) {
  std::string list;
  for (int i = 0; i < w.inputs(); ++i) list += (i ? ", " : "") + w.in(i);
  w.ret("torch.cat([" + list + "], " + lit(w.node.attr_int("axis", 0)) + ")");
}

void write_split(NodeWriter& w) {
  const std::string x = w.in(0);
  const auto axis = w.node.attr_int("axis", 0);
  const int outputs = static_cast<int>(w.node.outputs.size());
  std::optional<std::string> sizes;
  if (w.opset >= 13) {
    if (w.has(1)) sizes = w.ints(1);
  } else if (auto s = w.node.attr_ints("split")) {
    sizes = w.ints_literal(*s);
  }
  if (sizes) w.line("parts = torch.split(" + x + ", " + *sizes + ", " + lit(axis) + ")");
  else w.line("parts = torch.chunk(" + x + ", " + lit(int64_t{outputs}) + ", " + lit(axis) + ")");
  std::string result;
  for (int k = 0; k < outputs; ++k) result += (k ? ", " : "") + std::string("parts[") + std::to_string(k) + "]";
  w.ret(result);
}

void write_slice(NodeWriter& w) {
  const std::string x = w.in(0);
  const std::string starts = w.ints(1), ends = w.ints(2);
  std::string axes, steps;
  if (w.has(3)) {
    axes = w.ints(3);
  } else {
    int_list(w, "axes", "0", "len(" + starts + ")", "i");
    axes = "axes";
  }
  if (w.has(4)) {
    steps = w.ints(4);
  } else {
    int_list(w, "steps", "0", "len(" + starts + ")", "1");
    steps = "steps";
  }
  // ONNX clamps starts/ends into range (after adding the size to negatives), like Python slicing.
  w.line("y = " + x);
  w.line("for i in range(len(" + starts + ")):");
  w.line("    a = " + axes + "[i]");
  w.line("    if a < 0:");
  w.line("        a = a + y.dim()");
  w.line("    n = y.size(a)");
  w.line("    s = " + starts + "[i]");
  w.line("    e = " + ends + "[i]");
  w.line("    k = " + steps + "[i]");
  w.line("    if s < 0:");
  w.line("        s = s + n");
  w.line("    if e < 0:");
  w.line("        e = e + n");
  w.line("    if k > 0:");
  w.line("        y = torch.slice(y, a, min(max(s, 0), n), min(max(e, 0), n), k)");
  w.line("    else:");
  w.line("        y = torch.index_select(y, a, torch.arange(min(max(s, -1), n - 1), min(max(e, -1), n - 1), k))");
  w.ret("y");
}

void write_squeeze(NodeWriter& w, bool squeeze) {
  const std::string x = w.in(0);
  auto axes = axes_of(w, 1, 13);
  if (!axes) {
    if (!squeeze) throw Error("axes are required");
    w.ret(x + ".squeeze()");
    return;
  }
  // Unsqueeze axes refer to the output's rank; squeezing runs from the last axis, unsqueezing from the first.
  w.line("rank = " + x + ".dim()" + (squeeze ? "" : " + len(" + *axes + ")"));
  w.line("norm: List[int] = []");
  w.line("for a in " + *axes + ":");
  w.line("    norm.append(a + rank if a < 0 else a)");
  w.line(std::string("norm.sort(reverse=") + (squeeze ? "True" : "False") + ")");
  w.line("y = " + x);
  w.line("for a in norm:");
  w.line(std::string("    y = y.") + (squeeze ? "squeeze" : "unsqueeze") + "(a)");
  w.ret("y");
}

void write_gather(NodeWriter& w) {
  const std::string x = w.in(0), idx = w.in(1);
  normalise_axis(w, "ax", w.node.attr_int("axis", 0), x + ".dim()");
  w.line("i = torch.where(" + idx + " < 0, " + idx + " + " + x + ".size(ax), " + idx + ")");
  w.line("y = torch.index_select(" + x + ", ax, i.reshape([-1]))");
  w.ret("y.reshape(" + x + ".shape[:ax] + i.shape + " + x + ".shape[ax + 1:])");
}

// ScatterElements (opset 11's Scatter too): data with updates written at indices along `axis`,
// negative indices counted from the end; reduction none (replace), add or mul.
void write_scatter_elements(NodeWriter& w) {
  const std::string x = w.in(0), idx = w.in(1), updates = w.in(2);
  const std::string reduction = w.node.attr_string("reduction", "none");
  if (reduction != "none" && reduction != "add" && reduction != "mul")
    throw Error("ScatterElements reduction '" + reduction + "' is not supported (none, add or mul)");
  normalise_axis(w, "ax", w.node.attr_int("axis", 0), x + ".dim()");
  w.line("i = torch.where(" + idx + " < 0, " + idx + " + " + x + ".size(ax), " + idx + ").long()");
  if (reduction == "none") w.ret("torch.scatter(" + x + ", ax, i, " + updates + ")");
  else w.ret("torch.scatter(" + x + ", ax, i, " + updates + ", reduce='" + std::string(reduction == "add" ? "add" : "multiply") + "')");
}

void write_shape(NodeWriter& w) {
  const std::string x = w.in(0);
  const auto* start = w.node.attr("start");
  const auto* end = w.node.attr("end");
  std::string range = x + ".shape";
  if (start || end) range += "[" + (start ? lit(start->i) : "") + ":" + (end ? lit(end->i) : "") + "]";
  w.ret("torch.tensor(" + range + ", dtype=" + lit(int64_t{static_cast<int64_t>(c10::kLong)}) + ")");
}

void write_constant_of_shape(NodeWriter& w) {
  double value = 0.0;
  c10::ScalarType type = c10::kFloat;
  if (const auto* a = w.node.attr("value")) {
    auto t = a->tensor("its value");
    if (t.numel() != 1) throw Error("value must hold one element");
    type = t.scalar_type();
    value = t.to(torch::kDouble).item<double>();
  }
  const std::string v = c10::isFloatingType(type) ? lit(value) : lit(static_cast<int64_t>(value));
  // A hostile graph can ask for billions of elements, so the count is checked before anything is
  // allocated: here for a constant shape (TorchScript would fold it into a tensor while compiling), by
  // an assert for one computed at run time.
  constexpr int64_t kLimit = int64_t{1} << 30;
  if (auto dims = w.const_ints(0)) {
    double n = 1;
    for (int64_t d : *dims) n *= static_cast<double>(d);
    if (n > static_cast<double>(kLimit) || n < 0)
      throw Error("asks for " + std::to_string(static_cast<long long>(n)) + " elements, over lumen's limit of 2^30");
  }
  const std::string shape = w.ints(0);
  w.line("n = 1");
  w.line("for d in " + shape + ":");
  w.line("    n = n * d");
  w.line("assert n >= 0 and n <= " + lit(kLimit) + ", \"ConstantOfShape asks for \" + str(n) + \" elements, over lumen's limit of 2^30\"");
  w.ret("torch.full(" + shape + ", " + v + ", dtype=" + lit(int64_t{static_cast<int64_t>(type)}) + ")");
}

void write_cast(NodeWriter& w) {
  const auto type = scalar_type(static_cast<int32_t>(w.node.attr_int("to", 1)), "the target type");
  w.ret(w.in(0) + ".to(dtype=" + lit(int64_t{static_cast<int64_t>(type)}) + ")");
}

void write_pad(NodeWriter& w) {
  const std::string x = w.in(0);
  const auto mode = w.node.attr_string("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge") throw Error("pad mode '" + mode + "' is not supported");
  if (w.has(3)) throw Error("the axes input (opset 18) is not supported");
  const std::string p = w.ints(1);
  w.line("r = len(" + p + ") // 2");
  w.line("q: List[int] = []");
  w.line("for d in range(r - 1, -1, -1):");
  w.line("    q.append(" + p + "[d])");
  w.line("    q.append(" + p + "[d + r])");
  if (mode == "constant") {
    std::string value = "0.0";
    if (w.is_const(2)) value = lit(w.scalar(2));
    else if (w.has(2)) value = w.in(2) + ".item()";
    w.ret("torch.constant_pad_nd(" + x + ", q, " + value + ")");
    return;
  }
  // Reflect/replicate kernels exist per spatial rank: drop the outer dimensions that are not padded.
  w.line("while len(q) > 2 and q[-1] == 0 and q[-2] == 0:");
  w.line("    q = q[:-2]");
  const std::string fn = mode == "reflect" ? "reflection_pad" : "replication_pad";
  w.line("if len(q) == 2:");
  w.line("    return torch." + fn + "1d(" + x + ", q)");
  w.line("if len(q) == 4:");
  w.line("    return torch." + fn + "2d(" + x + ", q)");
  w.ret("torch." + fn + "3d(" + x + ", q)");
}

void write_resize(NodeWriter& w) {
  const auto mode = w.node.attr_string("mode", "nearest");
  const auto coords = w.node.attr_string("coordinate_transformation_mode", "half_pixel");
  const auto nearest = w.node.attr_string("nearest_mode", "round_prefer_floor");
  std::string fn, align = "";
  if (mode == "nearest") {
    if (coords != "asymmetric" || nearest != "floor")
      throw Error("nearest resize is supported with coordinate_transformation_mode=asymmetric and nearest_mode=floor (PyTorch's), not " +
                  coords + "/" + nearest);
    fn = "upsample_nearest2d";
  } else if (mode == "linear" || mode == "cubic") {
    if (coords == "half_pixel" || coords == "pytorch_half_pixel") align = "False";
    else if (coords == "align_corners") align = "True";
    else throw Error(mode + " resize with coordinate_transformation_mode=" + coords + " is not supported");
    if (mode == "cubic" && w.node.attr_float("cubic_coeff_a", -0.75) != -0.75) throw Error("cubic_coeff_a must be -0.75");
    fn = mode == "linear" ? "upsample_bilinear2d" : "upsample_bicubic2d";
  } else {
    throw Error("resize mode '" + mode + "' is not supported");
  }
  const std::string x = w.in(0);
  const std::string a = align.empty() ? "" : align + ", ";
  const bool sizes = w.has(3) && !(w.is_const(3) && w.constant[3]->numel() == 0);
  if (sizes) {
    w.line("size = " + w.ints(3));
    w.ret("torch." + fn + "(" + x + ", size[2:], " + a + "None)");
    return;
  }
  if (!w.has(2)) throw Error("neither scales nor sizes are given");
  if (w.is_const(2)) {
    auto s = w.constant[2]->to(torch::kDouble);
    if (s.numel() != 4 || s[0].item<double>() != 1.0 || s[1].item<double>() != 1.0)
      throw Error("only 4-D inputs resized over height and width are supported");
    w.ret("torch." + fn + "(" + x + ", None, " + a + "[" + lit(s[2].item<double>()) + ", " + lit(s[3].item<double>()) + "])");
    return;
  }
  w.line("scales: List[float] = " + w.in(2) + ".tolist()");
  w.ret("torch." + fn + "(" + x + ", None, " + a + "scales[2:])");
}

void write_expand(NodeWriter& w) {
  const std::string x = w.in(0), s = w.ints(1);
  // Bidirectional broadcast: a 1 in either shape takes the other's size.
  w.line("xs = " + x + ".shape");
  w.line("n = max(len(xs), len(" + s + "))");
  w.line("out: List[int] = []");
  w.line("for i in range(n):");
  w.line("    j = i - n + len(xs)");
  w.line("    k = i - n + len(" + s + ")");
  w.line("    a = xs[j] if j >= 0 else 1");
  w.line("    b = " + s + "[k] if k >= 0 else 1");
  w.line("    out.append(a if b == 1 else b)");
  w.ret(x + ".expand(out)");
}

// data with updates written at indices ([..., k]: the first k coordinates of each update's place).
void write_scatter_nd(NodeWriter& w) {
  if (w.node.attr_string("reduction", "none") != "none") throw Error("ScatterND with a reduction is not supported");
  const std::string data = w.in(0), idx = w.in(1), updates = w.in(2);
  w.line("k = " + idx + ".size(-1)");
  w.line("flat = " + idx + ".reshape([-1, k]).to(dtype=4)");
  w.line("ix: List[Optional[Tensor]] = []");
  w.line("for j in range(k):");
  w.line("    ix.append(flat.select(1, j))");
  w.line("shape: List[int] = [flat.size(0)]");
  w.line("for d in range(k, " + data + ".dim()):");
  w.line("    shape.append(" + data + ".size(d))");
  w.ret("torch.index_put(" + data + ", ix, " + updates + ".reshape(shape))");
}

}  // namespace

void add_shape_ops(OpTable& t) {
  t["Flatten"] = write_flatten;
  t["Reshape"] = write_reshape;
  t["Transpose"] = write_transpose;
  t["Concat"] = write_concat;
  t["Split"] = write_split;
  t["Slice"] = write_slice;
  t["Squeeze"] = [](NodeWriter& w) { write_squeeze(w, true); };
  t["Unsqueeze"] = [](NodeWriter& w) { write_squeeze(w, false); };
  t["Gather"] = write_gather;
  t["Shape"] = write_shape;
  t["Size"] = [](NodeWriter& w) { w.ret("torch.tensor(" + w.in(0) + ".numel(), dtype=4)"); };
  t["ConstantOfShape"] = write_constant_of_shape;
  t["Cast"] = write_cast;
  t["Pad"] = write_pad;
  t["Resize"] = write_resize;
  t["Expand"] = write_expand;
  t["Tile"] = [](NodeWriter& w) { w.ret(w.in(0) + ".repeat(" + w.ints(1) + ")"); };
  t["Range"] = [](NodeWriter& w) {
    w.ret("torch.arange(" + w.in(0) + ".item(), " + w.in(1) + ".item(), " + w.in(2) + ".item(), dtype=" + w.in(0) + ".dtype)");
  };
  t["ScatterND"] = write_scatter_nd;
  t["ScatterElements"] = write_scatter_elements;
  t["Scatter"] = write_scatter_elements;
}

}  // namespace lumen::detail
