// ONNX activations, arithmetic, matrix products, reductions and softmax as TorchScript.
#include "model/onnx/node_writer.h"

#include <lumen/error.h>

#include <cmath>

namespace lumen::detail {
namespace {

void write_binary(NodeWriter& w, const std::string& op) { w.ret(w.in(0) + " " + op + " " + w.in(1)); }

void write_variadic(NodeWriter& w, const std::string& fn) {
  std::string acc = w.in(0);
  for (int i = 1; i < w.inputs(); ++i) acc = fn == "+" ? acc + " + " + w.in(i) : "torch." + fn + "(" + acc + ", " + w.in(i) + ")";
  w.ret(acc);
}

void write_gemm(NodeWriter& w) {
  const double alpha = w.node.attr_float("alpha", 1.0), beta = w.node.attr_float("beta", 1.0);
  std::string a = w.in(0);
  if (w.node.attr_int("transA", 0)) a += ".t()";
  const bool trans_b = w.node.attr_int("transB", 0) != 0;
  std::string product;
  if (w.is_const(1)) {
    // Stored as [out, in], the layout of a Linear layer's weight, so CAM reads it like one.
    auto weight = trans_b ? *w.constant[1] : w.constant[1]->t().contiguous();
    if (weight.dim() != 2) throw Error("B must be a matrix");
    w.module.register_parameter("weight", weight, false);
    const bool plain_bias = w.is_const(2) && alpha == 1.0 && beta == 1.0 && w.constant[2]->numel() == weight.size(0);
    if (plain_bias) {
      w.module.register_parameter("bias", w.constant[2]->reshape({-1}), false);
      w.ret("torch.linear(" + a + ", self.weight, self.bias)");
      return;
    }
    product = "torch.linear(" + a + ", self.weight)";
  } else {
    product = "torch.matmul(" + a + ", " + w.in(1) + (trans_b ? ".t()" : "") + ")";
  }
  if (alpha != 1.0) product += " * " + lit(alpha);
  if (w.has(2)) product += " + " + w.in(2, "bias") + (beta != 1.0 ? " * " + lit(beta) : "");
  w.ret(product);
}

void write_clip(NodeWriter& w) {
  const std::string x = w.in(0);
  const bool runtime = (w.has(1) && !w.is_const(1)) || (w.has(2) && !w.is_const(2));
  if (runtime) {
    w.ret("torch.clamp(" + x + ", " + (w.has(1) ? w.in(1) : "None") + ", " + (w.has(2) ? w.in(2) : "None") + ")");
    return;
  }
  w.ret("torch.clamp(" + x + ", " + (w.has(1) ? lit(w.scalar(1)) : "None") + ", " + (w.has(2) ? lit(w.scalar(2)) : "None") + ")");
}

// The axes a Reduce* node reduces, as an int[] expression (all of them when none are given); nullopt
// when it reduces nothing (noop_with_empty_axes without axes: the node returns its input).
std::optional<std::string> reduced_axes(NodeWriter& w) {
  auto axes = axes_of(w, 1, w.node.op_type == "ReduceSum" ? 13 : 18);
  if (axes) return axes;
  if (w.node.attr_int("noop_with_empty_axes", 0)) return std::nullopt;
  int_list(w, "axes", "0", w.in(0) + ".dim()", "i");
  return std::string("axes");
}

void write_reduce(NodeWriter& w, const std::string& fn) {
  const bool keep = w.node.attr_int("keepdims", 1) != 0;
  const auto axes = reduced_axes(w);
  if (!axes) return w.ret(w.in(0));
  w.ret("torch." + fn + "(" + w.in(0) + ", " + *axes + ", " + (keep ? "True" : "False") + ")");
}

// ReduceProd: torch.prod takes one dimension at a time, so the axes are reduced one by one, the
// highest first (the others keep their numbers).
void write_reduce_prod(NodeWriter& w) {
  const bool keep = w.node.attr_int("keepdims", 1) != 0;
  const auto axes = reduced_axes(w);
  const std::string x = w.in(0);
  if (!axes) return w.ret(x);
  w.line("y = " + x);
  w.line("ranked: List[int] = []");
  w.line("for a in " + *axes + ":");
  w.line("    ranked.append(a if a >= 0 else a + " + x + ".dim())");
  w.line("ranked.sort(reverse=True)");
  w.line("for a in ranked:");
  w.line("    y = torch.prod(y, a, " + std::string(keep ? "True" : "False") + ")");
  w.ret("y");
}

// ArgMax/ArgMin: the first index of the extreme along `axis` (torch's, like ONNX's default); the last
// one (select_last_index) is the first of the reversed axis, counted from the end.
void write_arg(NodeWriter& w, const std::string& fn) {
  const std::string x = w.in(0);
  const std::string axis = lit(w.node.attr_int("axis", 0)), keep = w.node.attr_int("keepdims", 1) ? "True" : "False";
  if (!w.node.attr_int("select_last_index", 0)) {
    w.ret("torch." + fn + "(" + x + ", " + axis + ", " + keep + ")");
    return;
  }
  w.line("n = " + x + ".size(" + axis + ")");
  w.ret("n - 1 - torch." + fn + "(" + x + ".flip([" + axis + "]), " + axis + ", " + keep + ")");
}

// TopK: the k largest (or smallest) along `axis`, and their indices; sorted either way, as torch.topk
// returns them (ONNX leaves the order unspecified when sorted=0).
void write_topk(NodeWriter& w) {
  const std::string x = w.in(0), k = w.ints(1);
  const std::string largest = w.node.attr_int("largest", 1) ? "True" : "False";
  w.line("values, indices = torch.topk(" + x + ", " + k + "[0], " + lit(w.node.attr_int("axis", -1)) + ", " + largest + ", True)");
  w.ret(w.node.outputs.size() > 1 ? "values, indices" : "values");
}

void write_softmax(NodeWriter& w, const std::string& fn) {
  const std::string x = w.in(0);
  const int64_t axis = w.node.attr_int("axis", w.opset >= 13 ? -1 : 1);
  if (w.opset >= 13) {
    w.ret("torch." + fn + "(" + x + ", " + lit(axis) + ")");
    return;
  }
  // Before opset 13 the input is seen as a matrix split at `axis`.
  normalise_axis(w, "ax", axis, x + ".dim()");
  w.line("y = torch." + fn + "(" + x + ".reshape(" + x + ".shape[:ax] + [-1]), -1)");
  w.ret("y.reshape(" + x + ".shape)");
}

void add_activations(OpTable& t) {
  for (const auto& [op, fn] : std::vector<std::pair<std::string, std::string>>{
           {"Relu", "relu"}, {"Sigmoid", "sigmoid"}, {"Tanh", "tanh"}, {"Erf", "erf"}, {"Sqrt", "sqrt"}, {"Exp", "exp"},
           {"Log", "log"}, {"Neg", "neg"}, {"Abs", "abs"}, {"Floor", "floor"}, {"Ceil", "ceil"}, {"Reciprocal", "reciprocal"},
           {"HardSwish", "hardswish"}, {"Softplus", "softplus"}, {"Not", "logical_not"}})
    t[op] = [fn = fn](NodeWriter& w) { w.ret("torch." + fn + "(" + w.in(0) + ")"); };
  t["Identity"] = [](NodeWriter& w) { w.ret(w.in(0)); };
  t["Dropout"] = [](NodeWriter& w) {  // inference: the identity, and a mask that keeps everything
    if (w.node.outputs.size() > 1 && !w.node.outputs[1].empty())
      w.ret(w.in(0) + ", torch.ones_like(" + w.in(0) + ", dtype=" + lit(int64_t{static_cast<int64_t>(c10::kBool)}) + ")");
    else
      w.ret(w.in(0));
  };
  t["LeakyRelu"] = [](NodeWriter& w) { w.ret("torch.leaky_relu(" + w.in(0) + ", " + lit(w.node.attr_float("alpha", 0.01)) + ")"); };
  t["Elu"] = [](NodeWriter& w) { w.ret("torch.elu(" + w.in(0) + ", " + lit(w.node.attr_float("alpha", 1.0)) + ")"); };
  t["PRelu"] = [](NodeWriter& w) { w.ret("torch.where(" + w.in(0) + " >= 0, " + w.in(0) + ", " + w.in(0) + " * " + w.in(1, "weight") + ")"); };
  t["HardSigmoid"] = [](NodeWriter& w) {
    const double alpha = w.node.attr_float("alpha", 0.2), beta = w.node.attr_float("beta", 0.5);
    // PyTorch's hardsigmoid is (1/6, 1/2); keeping the same aten op keeps backward rules identical.
    if (std::abs(alpha - 1.0 / 6.0) < 1e-6 && beta == 0.5) w.ret("torch.hardsigmoid(" + w.in(0) + ")");
    else w.ret("torch.clamp(" + w.in(0) + " * " + lit(alpha) + " + " + lit(beta) + ", 0.0, 1.0)");
  };
  t["Clip"] = write_clip;
}

}  // namespace

void add_math_ops(OpTable& t) {
  add_activations(t);
  t["Add"] = [](NodeWriter& w) { write_binary(w, "+"); };
  t["Sub"] = [](NodeWriter& w) { write_binary(w, "-"); };
  t["Mul"] = [](NodeWriter& w) { write_binary(w, "*"); };
  t["Div"] = [](NodeWriter& w) {  // integer division truncates in ONNX
    w.line("if " + w.in(0) + ".is_floating_point():");
    w.line("    return " + w.in(0) + " / " + w.in(1));
    w.ret("torch.div(" + w.in(0) + ", " + w.in(1) + ", rounding_mode='trunc')");
  };
  t["Pow"] = [](NodeWriter& w) { w.ret("torch.pow(" + w.in(0) + ", " + w.in(1) + ")"); };
  // fmod=0: the remainder takes the divisor's sign (Python's %); fmod=1: the dividend's (C's fmod).
  t["Mod"] = [](NodeWriter& w) {
    w.ret(std::string(w.node.attr_int("fmod", 0) ? "torch.fmod(" : "torch.remainder(") + w.in(0) + ", " + w.in(1) + ")");
  };
  // Comparisons and logic: one torch function of the two inputs each.
  for (const auto& [op, fn] : std::vector<std::pair<std::string, std::string>>{
           {"Equal", "eq"}, {"Less", "lt"}, {"Greater", "gt"}, {"GreaterOrEqual", "ge"}, {"LessOrEqual", "le"},
           {"And", "logical_and"}, {"Or", "logical_or"}, {"Xor", "logical_xor"}})
    t[op] = [fn = fn](NodeWriter& w) { w.ret("torch." + fn + "(" + w.in(0) + ", " + w.in(1) + ")"); };
  // NonZero: [rank, count], one column of coordinates per nonzero element in row-major order.
  t["NonZero"] = [](NodeWriter& w) { w.ret("torch.nonzero(" + w.in(0) + ").t()"); };
  t["Where"] = [](NodeWriter& w) { w.ret("torch.where(" + w.in(0) + ", " + w.in(1) + ", " + w.in(2) + ")"); };
  t["Sum"] = [](NodeWriter& w) { write_variadic(w, "+"); };
  t["Max"] = [](NodeWriter& w) { write_variadic(w, "maximum"); };
  t["Min"] = [](NodeWriter& w) { write_variadic(w, "minimum"); };
  t["MatMul"] = [](NodeWriter& w) { w.ret("torch.matmul(" + w.in(0) + ", " + w.in(1) + ")"); };
  t["Gemm"] = write_gemm;
  t["ReduceMean"] = [](NodeWriter& w) { write_reduce(w, "mean"); };
  t["ReduceSum"] = [](NodeWriter& w) { write_reduce(w, "sum"); };
  t["ReduceMax"] = [](NodeWriter& w) { write_reduce(w, "amax"); };
  t["ReduceMin"] = [](NodeWriter& w) { write_reduce(w, "amin"); };
  t["ReduceProd"] = write_reduce_prod;
  t["ArgMax"] = [](NodeWriter& w) { write_arg(w, "argmax"); };
  t["ArgMin"] = [](NodeWriter& w) { write_arg(w, "argmin"); };
  t["TopK"] = write_topk;
  t["Softmax"] = [](NodeWriter& w) { write_softmax(w, "softmax"); };
  t["LogSoftmax"] = [](NodeWriter& w) { write_softmax(w, "log_softmax"); };
}

}  // namespace lumen::detail
