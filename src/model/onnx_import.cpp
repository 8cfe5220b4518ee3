// ONNX -> TorchScript module (see onnx_import.h for the shape of the result).
//
// Parsing uses the protobuf classes Debian's libonnx-dev ships (the official onnx.proto, generated),
// rather than a vendored copy of the schema: one less file to keep in step with ONNX releases. Only
// the generated message classes are used, not ONNX's checker or shape inference, which would add a
// second interpretation of the graph beside the one that runs.
//
// Each node's op is written as TorchScript source and compiled by LibTorch's own frontend. Writing
// source rather than building IR nodes by hand keeps each op a few readable lines, and the compiled
// graph calls exactly the aten ops a PyTorch model would (relu, hardtanh/clamp, conv2d, ...), which is
// what the backward-rule rewrite and the layer taps look for.
#include "model/onnx_import.h"

#include <lumen/error.h>

#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <algorithm>
#include <set>
#include <sstream>

namespace lumen::detail {
namespace fs = std::filesystem;
namespace {

// Nothing an image classifier holds comes near this; a declared tensor above it is treated as a
// corrupt or hostile file rather than allocated.
constexpr int64_t kMaxTensorBytes = int64_t{4} << 30;
constexpr int64_t kMaxRank = 8;
// The IR versions lumen reads (those of ONNX 1.6 to 1.14).
constexpr int64_t kMinIr = 3, kMaxIr = 9;

c10::ScalarType scalar_type(int32_t onnx_type, const std::string& what) {
  switch (onnx_type) {
    case onnx::TensorProto::FLOAT: return c10::kFloat;
    case onnx::TensorProto::UINT8: return c10::kByte;
    case onnx::TensorProto::INT8: return c10::kChar;
    case onnx::TensorProto::INT16: return c10::kShort;
    case onnx::TensorProto::INT32: return c10::kInt;
    case onnx::TensorProto::INT64: return c10::kLong;
    case onnx::TensorProto::BOOL: return c10::kBool;
    case onnx::TensorProto::FLOAT16: return c10::kHalf;
    case onnx::TensorProto::DOUBLE: return c10::kDouble;
    case onnx::TensorProto::BFLOAT16: return c10::kBFloat16;
    default: throw Error(what + " has ONNX data type " + std::to_string(onnx_type) + ", which lumen does not read");
  }
}

// Reads external tensor data; `folder` is the model's own folder, which the file must stay inside.
std::string read_external(const onnx::TensorProto& t, const std::string& folder, const std::string& what) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto& kv : t.external_data()) {
    try {
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset") offset = std::stoll(kv.value());
      else if (kv.key() == "length") length = std::stoll(kv.value());
    } catch (const std::exception&) {
      throw Error(what + ": external data " + kv.key() + " '" + kv.value() + "' is not a number");
    }
  }
  if (folder.empty()) throw Error(what + " refers to external data, which is not allowed here");
  if (location.empty()) throw Error(what + " refers to external data but names no file");
  fs::path rel(location);
  bool escapes = rel.is_absolute() || rel.has_root_name() || rel.has_root_directory();
  for (const auto& part : rel) escapes |= part == "..";
  const fs::path base = fs::weakly_canonical(fs::path(folder));
  const fs::path file = fs::weakly_canonical(base / rel);
  auto mismatch = std::mismatch(base.begin(), base.end(), file.begin(), file.end());
  if (escapes || mismatch.first != base.end())
    throw Error(what + ": external data file '" + location + "' lies outside the model's folder");
  std::error_code ec;
  const auto size = static_cast<int64_t>(fs::file_size(file, ec));
  if (ec || !fs::is_regular_file(file)) throw Error(what + ": external data file '" + location + "' not found");
  if (length < 0) length = size - offset;
  if (offset < 0 || length < 0 || offset > size || length > size - offset || length > kMaxTensorBytes)
    throw Error(what + ": external data range " + std::to_string(offset) + "+" + std::to_string(length) + " does not fit '" +
                location + "' (" + std::to_string(size) + " bytes)");
  std::ifstream in(file, std::ios::binary);
  in.seekg(offset);
  std::string bytes(static_cast<size_t>(length), '\0');
  if (!in.read(bytes.data(), length)) throw Error(what + ": cannot read external data from '" + location + "'");
  return bytes;
}

torch::Tensor decode_tensor(const onnx::TensorProto& t, const std::string& folder, const std::string& what) {
  const auto type = scalar_type(t.data_type(), what);
  std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  if (static_cast<int64_t>(dims.size()) > kMaxRank) throw Error(what + " has rank " + std::to_string(dims.size()));
  int64_t numel = 1;
  const int64_t item = static_cast<int64_t>(c10::elementSize(type));
  for (auto d : dims) {
    if (d < 0 || (d > 0 && numel > kMaxTensorBytes / item / d))
      throw Error(what + " declares an impossible shape " + c10::str(c10::IntArrayRef(dims)));
    numel *= d;
  }
  const int64_t bytes_needed = numel * item;
  auto from_bytes = [&](const std::string& raw) {
    if (static_cast<int64_t>(raw.size()) != bytes_needed)
      throw Error(what + " declares shape " + c10::str(c10::IntArrayRef(dims)) + " (" + std::to_string(bytes_needed) +
                  " bytes) but holds " + std::to_string(raw.size()) + " bytes");
    auto out = torch::empty(dims, torch::TensorOptions().dtype(type));
    if (bytes_needed) std::memcpy(out.data_ptr(), raw.data(), raw.size());
    return out;
  };
  auto count_check = [&](int64_t n) {
    if (n != numel)
      throw Error(what + " declares shape " + c10::str(c10::IntArrayRef(dims)) + " but holds " + std::to_string(n) + " values");
  };
  torch::Tensor out;
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    out = from_bytes(read_external(t, folder, what));
  } else if (t.has_raw_data()) {
    out = from_bytes(t.raw_data());
  } else if (type == c10::kFloat) {
    count_check(t.float_data_size());
    out = torch::tensor(std::vector<float>(t.float_data().begin(), t.float_data().end()), torch::kFloat).reshape(dims);
  } else if (type == c10::kDouble) {
    count_check(t.double_data_size());
    out = torch::tensor(std::vector<double>(t.double_data().begin(), t.double_data().end()), torch::kDouble).reshape(dims);
  } else if (type == c10::kLong) {
    count_check(t.int64_data_size());
    out = torch::tensor(std::vector<int64_t>(t.int64_data().begin(), t.int64_data().end()), torch::kLong).reshape(dims);
  } else if (type == c10::kHalf || type == c10::kBFloat16) {
    count_check(t.int32_data_size());  // each int32 holds the 16 bits of one value
    auto bits = torch::tensor(std::vector<int32_t>(t.int32_data().begin(), t.int32_data().end()), torch::kInt).to(torch::kShort);
    out = bits.view(type).reshape(dims);
  } else {
    count_check(t.int32_data_size());
    out = torch::tensor(std::vector<int32_t>(t.int32_data().begin(), t.int32_data().end()), torch::kInt).to(type).reshape(dims);
  }
  // CPU kernels for convolutions and matmuls want float32; half-precision weights are widened once here.
  if (type == c10::kHalf || type == c10::kBFloat16) out = out.to(torch::kFloat);
  return out;
}

// ---- attributes ----------------------------------------------------------------------------------

const onnx::AttributeProto* find_attr(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}
int64_t attr_int(const onnx::NodeProto& n, const std::string& name, int64_t fallback) {
  auto* a = find_attr(n, name);
  return a ? a->i() : fallback;
}
double attr_float(const onnx::NodeProto& n, const std::string& name, double fallback) {
  auto* a = find_attr(n, name);
  return a ? a->f() : fallback;
}
std::string attr_string(const onnx::NodeProto& n, const std::string& name, const std::string& fallback) {
  auto* a = find_attr(n, name);
  return a ? a->s() : fallback;
}
std::optional<std::vector<int64_t>> attr_ints(const onnx::NodeProto& n, const std::string& name) {
  auto* a = find_attr(n, name);
  if (!a) return std::nullopt;
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

// ---- TorchScript source helpers -------------------------------------------------------------------

std::string lit(double v) {
  if (std::isnan(v)) return "float('nan')";
  if (std::isinf(v)) return v > 0 ? "float('inf')" : "float('-inf')";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  std::string s(buf);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}
std::string lit(int64_t v) {
  // TorchScript parses -2^63 as -(2^63), which overflows; ONNX uses it only as "from the very end".
  constexpr int64_t big = int64_t{1} << 62;
  return std::to_string(std::clamp(v, -big, big));
}
std::string lit(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + lit(v[i]);
  return s + "]";
}

bool is_identifier(const std::string& s) {
  static const std::set<std::string> reserved{
      "forward", "training", "self", "and", "as", "assert", "break", "class", "continue", "def", "del", "elif", "else", "except",
      "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise",
      "return", "try", "while", "with", "yield", "None", "True", "False", "torch", "float", "int", "inf", "nan"};
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0])) || reserved.count(s) || s.rfind("__", 0) == 0) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

// One node being written: its inputs (runtime arguments or constants), its attributes, its body.
struct NodeWriter {
  const onnx::NodeProto& node;
  int64_t opset;
  torch::jit::Module& module;
  std::vector<const torch::Tensor*> constant;  // per input; nullptr when computed at run time or absent
  std::vector<bool> present;
  std::ostringstream body;
  int temps = 0;

  bool has(size_t i) const { return i < present.size() && present[i]; }
  bool is_const(size_t i) const { return has(i) && constant[i]; }

  // The expression for input i: an argument, or the constant registered on the node's module as
  // `name` (a parameter when it is a float tensor of rank >= 1, so that sanity checks randomise it
  // and FullGrad/CAM find weights and biases by their usual names; a buffer otherwise).
  std::string in(size_t i, std::string name = "") {
    if (!has(i)) throw Error("input " + std::to_string(i) + " is required");
    if (!constant[i]) return "a" + std::to_string(i);
    if (name.empty()) name = "c" + std::to_string(i);
    if (!module.hasattr(name)) {
      const auto& t = *constant[i];
      if (t.is_floating_point() && t.dim() >= 1) module.register_parameter(name, t, false);
      else module.register_buffer(name, t);
    }
    return "self." + name;
  }
  std::optional<std::vector<int64_t>> const_ints(size_t i) const {
    if (!is_const(i)) return std::nullopt;
    const auto& t = *constant[i];
    if (t.is_floating_point() || t.dim() > 1) throw Error("input " + std::to_string(i) + " must be a 1-D integer tensor");
    auto l = t.to(torch::kLong).reshape({-1});
    return std::vector<int64_t>(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
  }
  // An int[] expression for input i: a literal for a constant, else the run-time tensor's values.
  std::string ints(size_t i) {
    if (auto v = const_ints(i)) return ints_literal(*v);
    const std::string name = "l" + std::to_string(temps++);
    line(name + ": List[int] = " + in(i) + ".tolist()");
    return name;
  }
  std::string ints_literal(const std::vector<int64_t>& v) {
    if (!v.empty()) return lit(v);
    const std::string name = "l" + std::to_string(temps++);
    line(name + ": List[int] = []");
    return name;
  }
  double scalar(size_t i) const {
    const auto& t = *constant[i];
    if (t.numel() != 1) throw Error("input " + std::to_string(i) + " must hold one value");
    return t.to(torch::kDouble).item<double>();
  }
  void line(const std::string& s) { body << "    " << s << "\n"; }
  void ret(const std::string& s) { line("return " + s); }
  void only_first_output() const {
    for (int k = 1; k < node.output_size(); ++k)
      if (!node.output(k).empty()) throw Error("its optional output " + std::to_string(k) + " is not supported");
  }
};

using OpWriter = std::function<void(NodeWriter&)>;

std::string rank_prefix(int64_t k) {
  if (k < 1 || k > 3) throw Error("only 1-, 2- and 3-D spatial inputs are supported (kernel rank " + std::to_string(k) + ")");
  return std::to_string(k) + "d";
}

// Pads as ONNX writes them ([x1_begin, x2_begin, ..., x1_end, x2_end, ...]) in the order
// constant_pad_nd wants them (last dimension first, begin/end pairs).
std::vector<int64_t> torch_pad_order(const std::vector<int64_t>& pads) {
  const size_t k = pads.size() / 2;
  std::vector<int64_t> out;
  for (size_t d = k; d-- > 0;) {
    out.push_back(pads[d]);
    out.push_back(pads[d + k]);
  }
  return out;
}

struct PoolGeometry {
  int64_t rank;
  std::vector<int64_t> kernel, strides, dilations, pads;  // pads: symmetric part, per spatial dim
  std::vector<int64_t> extra;                              // asymmetric pads to apply first (torch order); empty if none
};

PoolGeometry geometry(const NodeWriter& w, int64_t rank) {
  PoolGeometry g;
  g.rank = rank;
  g.kernel = attr_ints(w.node, "kernel_shape").value_or(std::vector<int64_t>{});
  g.strides = attr_ints(w.node, "strides").value_or(std::vector<int64_t>(rank, 1));
  g.dilations = attr_ints(w.node, "dilations").value_or(std::vector<int64_t>(rank, 1));
  auto pads = attr_ints(w.node, "pads").value_or(std::vector<int64_t>(2 * rank, 0));
  const auto auto_pad = attr_string(w.node, "auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "VALID")
    throw Error("auto_pad " + auto_pad + " is not supported (export with explicit pads)");
  if (static_cast<int64_t>(g.strides.size()) != rank || static_cast<int64_t>(g.dilations.size()) != rank ||
      static_cast<int64_t>(pads.size()) != 2 * rank)
    throw Error("strides/dilations/pads do not match the kernel rank " + std::to_string(rank));
  for (int64_t d = 0; d < rank; ++d)
    if (g.strides[d] < 1 || g.dilations[d] < 1 || pads[d] < 0 || pads[d + rank] < 0)
      throw Error("strides, dilations and pads must be positive");
  bool symmetric = true;
  for (int64_t d = 0; d < rank; ++d) symmetric &= pads[d] == pads[d + rank];
  if (symmetric) {
    g.pads.assign(pads.begin(), pads.begin() + rank);
  } else {
    g.pads.assign(rank, 0);
    g.extra = torch_pad_order(pads);
  }
  return g;
}

void write_conv(NodeWriter& w) {
  int64_t rank = 0;
  if (auto k = attr_ints(w.node, "kernel_shape")) rank = static_cast<int64_t>(k->size());
  else if (w.is_const(1)) rank = w.constant[1]->dim() - 2;
  else throw Error("a run-time weight needs the kernel_shape attribute");
  auto g = geometry(w, rank);
  const auto group = attr_int(w.node, "group", 1);
  std::string x = w.in(0);
  if (!g.extra.empty()) {
    w.line("x = torch.constant_pad_nd(" + x + ", " + lit(g.extra) + ", 0.0)");
    x = "x";
  }
  const std::string bias = w.has(2) ? w.in(2, "bias") : "None";
  if (w.node.op_type() == "Conv") {
    w.ret("torch.conv" + rank_prefix(rank) + "(" + x + ", " + w.in(1, "weight") + ", " + bias + ", " + lit(g.strides) + ", " +
          lit(g.pads) + ", " + lit(g.dilations) + ", " + lit(group) + ")");
    return;
  }
  if (attr_ints(w.node, "output_shape")) throw Error("output_shape is not supported (export with pads)");
  if (!g.extra.empty()) throw Error("asymmetric pads are not supported on ConvTranspose");
  auto output_padding = attr_ints(w.node, "output_padding").value_or(std::vector<int64_t>(rank, 0));
  w.ret("torch.conv_transpose" + rank_prefix(rank) + "(" + w.in(0) + ", " + w.in(1, "weight") + ", " + bias + ", " +
        lit(g.strides) + ", " + lit(g.pads) + ", " + lit(output_padding) + ", " + lit(group) + ", " + lit(g.dilations) + ")");
}

void write_pool(NodeWriter& w) {
  w.only_first_output();
  auto kernel = attr_ints(w.node, "kernel_shape");
  if (!kernel) throw Error("kernel_shape is missing");
  const auto rank = static_cast<int64_t>(kernel->size());
  auto g = geometry(w, rank);
  const bool ceil = attr_int(w.node, "ceil_mode", 0) != 0;
  const bool max = w.node.op_type() == "MaxPool";
  const bool include_pad = attr_int(w.node, "count_include_pad", 0) != 0;
  std::string x = w.in(0);
  if (!g.extra.empty()) {
    if (!max && !include_pad) throw Error("asymmetric pads with count_include_pad=0 are not supported");
    w.line("x = torch.constant_pad_nd(" + x + ", " + lit(g.extra) + ", " + (max ? "float('-inf')" : "0.0") + ")");
    x = "x";
  }
  if (max) {
    w.ret("torch.max_pool" + rank_prefix(rank) + "(" + x + ", " + lit(g.kernel) + ", " + lit(g.strides) + ", " + lit(g.pads) +
          ", " + lit(g.dilations) + ", " + (ceil ? "True" : "False") + ")");
  } else {
    for (auto d : g.dilations)
      if (d != 1) throw Error("dilated average pooling is not supported");
    w.ret("torch.avg_pool" + rank_prefix(rank) + "(" + x + ", " + lit(g.kernel) + ", " + lit(g.strides) + ", " + lit(g.pads) +
          ", " + (ceil ? "True" : "False") + ", " + (include_pad ? "True" : "False") + ")");
  }
}

// Declares `var: List[int]` holding `item` for i in range(begin, end) (TorchScript has no list comprehension
// over a run-time range with a type it can infer for an empty list).
void int_list(NodeWriter& w, const std::string& var, const std::string& begin, const std::string& end, const std::string& item) {
  w.line(var + ": List[int] = []");
  w.line("for i in range(" + begin + ", " + end + "):");
  w.line("    " + var + ".append(" + item + ")");
}

// Normalises a possibly negative axis held in `var` against the rank expression `rank`.
void normalise_axis(NodeWriter& w, const std::string& var, int64_t axis, const std::string& rank) {
  w.line(var + " = " + lit(axis));
  w.line("if " + var + " < 0:");
  w.line("    " + var + " = " + var + " + " + rank);
}

// Axes of a reduction or (un)squeeze: an attribute before opset 13 (18 for the reductions), an input after.
std::optional<std::string> axes_of(NodeWriter& w, size_t input, int64_t input_from_opset) {
  if (w.opset >= input_from_opset) {
    if (!w.has(input)) return std::nullopt;
    return w.ints(input);
  }
  if (auto a = attr_ints(w.node, "axes")) return w.ints_literal(*a);
  return std::nullopt;
}

void write_reduce(NodeWriter& w, const std::string& fn) {
  const bool keep = attr_int(w.node, "keepdims", 1) != 0;
  auto axes = axes_of(w, 1, w.node.op_type() == "ReduceSum" ? 13 : 18);
  const std::string x = w.in(0);
  if (!axes) {
    if (attr_int(w.node, "noop_with_empty_axes", 0)) {
      w.ret(x);
      return;
    }
    int_list(w, "axes", "0", x + ".dim()", "i");
    axes = "axes";
  }
  w.ret("torch." + fn + "(" + x + ", " + *axes + ", " + (keep ? "True" : "False") + ")");
}

void write_global_pool(NodeWriter& w, const std::string& fn) {
  const std::string x = w.in(0);
  int_list(w, "axes", "2", x + ".dim()", "i");
  w.ret("torch." + fn + "(" + x + ", axes, True)");
}

void write_unary(NodeWriter& w, const std::string& fn) { w.ret("torch." + fn + "(" + w.in(0) + ")"); }

void write_binary(NodeWriter& w, const std::string& op) { w.ret(w.in(0) + " " + op + " " + w.in(1)); }

void write_variadic(NodeWriter& w, const std::string& fn) {
  std::string acc = w.in(0);
  for (int i = 1; i < w.node.input_size(); ++i) acc = fn == "+" ? acc + " + " + w.in(i) : "torch." + fn + "(" + acc + ", " + w.in(i) + ")";
  w.ret(acc);
}

void write_gemm(NodeWriter& w) {
  const double alpha = attr_float(w.node, "alpha", 1.0), beta = attr_float(w.node, "beta", 1.0);
  std::string a = w.in(0);
  if (attr_int(w.node, "transA", 0)) a += ".t()";
  const bool trans_b = attr_int(w.node, "transB", 0) != 0;
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

void write_batch_norm(NodeWriter& w) {
  w.only_first_output();
  if (attr_int(w.node, "training_mode", 0)) throw Error("training_mode=1 is not supported");
  const double eps = attr_float(w.node, "epsilon", 1e-5);
  w.module.register_attribute("eps", c10::FloatType::get(), eps);
  w.ret("torch.batch_norm(" + w.in(0) + ", " + w.in(1, "weight") + ", " + w.in(2, "bias") + ", " + w.in(3, "running_mean") + ", " +
        w.in(4, "running_var") + ", False, 0.0, self.eps, False)");
}

void write_layer_norm(NodeWriter& w) {
  w.only_first_output();
  const std::string x = w.in(0);
  normalise_axis(w, "ax", attr_int(w.node, "axis", -1), x + ".dim()");
  w.ret("torch.layer_norm(" + x + ", " + x + ".shape[ax:], " + w.in(1, "weight") + ", " + (w.has(2) ? w.in(2, "bias") : "None") +
        ", " + lit(attr_float(w.node, "epsilon", 1e-5)) + ", False)");
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

void write_softmax(NodeWriter& w, const std::string& fn) {
  const std::string x = w.in(0);
  const int64_t axis = attr_int(w.node, "axis", w.opset >= 13 ? -1 : 1);
  if (w.opset >= 13) {
    w.ret("torch." + fn + "(" + x + ", " + lit(axis) + ")");
    return;
  }
  // Before opset 13 the input is seen as a matrix split at `axis`.
  normalise_axis(w, "ax", axis, x + ".dim()");
  w.line("y = torch." + fn + "(" + x + ".reshape(" + x + ".shape[:ax] + [-1]), -1)");
  w.ret("y.reshape(" + x + ".shape)");
}

void write_reshape(NodeWriter& w) {
  const std::string x = w.in(0);
  const bool allow_zero = attr_int(w.node, "allowzero", 0) != 0;
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
  normalise_axis(w, "ax", attr_int(w.node, "axis", 1), x + ".dim()");
  w.line("if ax == 0:");
  w.line("    return " + x + ".reshape([1, -1])");
  w.line("if ax == " + x + ".dim():");
  w.line("    return " + x + ".reshape([-1, 1])");
  w.ret("torch.flatten(torch.flatten(" + x + ", ax), 0, ax - 1)");
}

void write_transpose(NodeWriter& w) {
  const std::string x = w.in(0);
  if (auto perm = attr_ints(w.node, "perm")) {
    w.ret(x + ".permute(" + w.ints_literal(*perm) + ")");
    return;
  }
  int_list(w, "perm", "0", x + ".dim()", x + ".dim() - 1 - i");
  w.ret(x + ".permute(perm)");
}

void write_concat(NodeWriter& w) {
  std::string list;
  for (int i = 0; i < w.node.input_size(); ++i) list += (i ? ", " : "") + w.in(i);
  w.ret("torch.cat([" + list + "], " + lit(attr_int(w.node, "axis", 0)) + ")");
}

void write_split(NodeWriter& w) {
  const std::string x = w.in(0);
  const auto axis = attr_int(w.node, "axis", 0);
  const int outputs = w.node.output_size();
  std::optional<std::string> sizes;
  if (w.opset >= 13) {
    if (w.has(1)) sizes = w.ints(1);
  } else if (auto s = attr_ints(w.node, "split")) {
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
  normalise_axis(w, "ax", attr_int(w.node, "axis", 0), x + ".dim()");
  w.line("i = torch.where(" + idx + " < 0, " + idx + " + " + x + ".size(ax), " + idx + ")");
  w.line("y = torch.index_select(" + x + ", ax, i.reshape([-1]))");
  w.ret("y.reshape(" + x + ".shape[:ax] + i.shape + " + x + ".shape[ax + 1:])");
}

void write_shape(NodeWriter& w) {
  const std::string x = w.in(0);
  const auto* start = find_attr(w.node, "start");
  const auto* end = find_attr(w.node, "end");
  std::string range = x + ".shape";
  if (start || end) range += "[" + (start ? lit(start->i()) : "") + ":" + (end ? lit(end->i()) : "") + "]";
  w.ret("torch.tensor(" + range + ", dtype=" + lit(int64_t{static_cast<int64_t>(c10::kLong)}) + ")");
}

void write_constant_of_shape(NodeWriter& w) {
  double value = 0.0;
  c10::ScalarType type = c10::kFloat;
  if (const auto* a = find_attr(w.node, "value")) {
    auto t = decode_tensor(a->t(), "", "its value");
    if (t.numel() != 1) throw Error("value must hold one element");
    type = t.scalar_type();
    value = t.to(torch::kDouble).item<double>();
  }
  const std::string v = c10::isFloatingType(type) ? lit(value) : lit(static_cast<int64_t>(value));
  w.ret("torch.full(" + w.ints(0) + ", " + v + ", dtype=" + lit(int64_t{static_cast<int64_t>(type)}) + ")");
}

void write_cast(NodeWriter& w) {
  const auto type = scalar_type(static_cast<int32_t>(attr_int(w.node, "to", 1)), "the target type");
  w.ret(w.in(0) + ".to(dtype=" + lit(int64_t{static_cast<int64_t>(type)}) + ")");
}

void write_pad(NodeWriter& w) {
  const std::string x = w.in(0);
  const auto mode = attr_string(w.node, "mode", "constant");
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
  const auto mode = attr_string(w.node, "mode", "nearest");
  const auto coords = attr_string(w.node, "coordinate_transformation_mode", "half_pixel");
  const auto nearest = attr_string(w.node, "nearest_mode", "round_prefer_floor");
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
    if (mode == "cubic" && attr_float(w.node, "cubic_coeff_a", -0.75) != -0.75) throw Error("cubic_coeff_a must be -0.75");
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

const std::map<std::string, OpWriter>& writers() {
  static const std::map<std::string, OpWriter> table = [] {
    std::map<std::string, OpWriter> t;
    auto unary = [&](const std::string& op, const std::string& fn) { t[op] = [fn](NodeWriter& w) { write_unary(w, fn); }; };
    unary("Relu", "relu");
    unary("Sigmoid", "sigmoid");
    unary("Tanh", "tanh");
    unary("Erf", "erf");
    unary("Sqrt", "sqrt");
    unary("Exp", "exp");
    unary("Log", "log");
    unary("Neg", "neg");
    unary("Abs", "abs");
    unary("Floor", "floor");
    unary("Ceil", "ceil");
    unary("Reciprocal", "reciprocal");
    unary("HardSwish", "hardswish");
    unary("Softplus", "softplus");
    unary("Not", "logical_not");
    t["Identity"] = [](NodeWriter& w) { w.ret(w.in(0)); };
    t["Dropout"] = [](NodeWriter& w) {  // inference: the identity
      w.only_first_output();
      w.ret(w.in(0));
    };
    t["LeakyRelu"] = [](NodeWriter& w) { w.ret("torch.leaky_relu(" + w.in(0) + ", " + lit(attr_float(w.node, "alpha", 0.01)) + ")"); };
    t["Elu"] = [](NodeWriter& w) { w.ret("torch.elu(" + w.in(0) + ", " + lit(attr_float(w.node, "alpha", 1.0)) + ")"); };
    t["PRelu"] = [](NodeWriter& w) { w.ret("torch.where(" + w.in(0) + " >= 0, " + w.in(0) + ", " + w.in(0) + " * " + w.in(1, "weight") + ")"); };
    t["HardSigmoid"] = [](NodeWriter& w) {
      const double alpha = attr_float(w.node, "alpha", 0.2), beta = attr_float(w.node, "beta", 0.5);
      // PyTorch's hardsigmoid is (1/6, 1/2); keeping the same aten op keeps backward rules identical.
      if (std::abs(alpha - 1.0 / 6.0) < 1e-6 && beta == 0.5) w.ret("torch.hardsigmoid(" + w.in(0) + ")");
      else w.ret("torch.clamp(" + w.in(0) + " * " + lit(alpha) + " + " + lit(beta) + ", 0.0, 1.0)");
    };
    t["Clip"] = write_clip;
    t["Add"] = [](NodeWriter& w) { write_binary(w, "+"); };
    t["Sub"] = [](NodeWriter& w) { write_binary(w, "-"); };
    t["Mul"] = [](NodeWriter& w) { write_binary(w, "*"); };
    t["Div"] = [](NodeWriter& w) {  // integer division truncates in ONNX
      w.line("if " + w.in(0) + ".is_floating_point():");
      w.line("    return " + w.in(0) + " / " + w.in(1));
      w.ret("torch.div(" + w.in(0) + ", " + w.in(1) + ", rounding_mode='trunc')");
    };
    t["Pow"] = [](NodeWriter& w) { w.ret("torch.pow(" + w.in(0) + ", " + w.in(1) + ")"); };
    t["Equal"] = [](NodeWriter& w) { w.ret("torch.eq(" + w.in(0) + ", " + w.in(1) + ")"); };
    t["Less"] = [](NodeWriter& w) { w.ret("torch.lt(" + w.in(0) + ", " + w.in(1) + ")"); };
    t["Greater"] = [](NodeWriter& w) { w.ret("torch.gt(" + w.in(0) + ", " + w.in(1) + ")"); };
    t["Where"] = [](NodeWriter& w) { w.ret("torch.where(" + w.in(0) + ", " + w.in(1) + ", " + w.in(2) + ")"); };
    t["Sum"] = [](NodeWriter& w) { write_variadic(w, "+"); };
    t["Max"] = [](NodeWriter& w) { write_variadic(w, "maximum"); };
    t["Min"] = [](NodeWriter& w) { write_variadic(w, "minimum"); };
    t["MatMul"] = [](NodeWriter& w) { w.ret("torch.matmul(" + w.in(0) + ", " + w.in(1) + ")"); };
    t["Gemm"] = write_gemm;
    t["Conv"] = write_conv;
    t["ConvTranspose"] = write_conv;
    t["BatchNormalization"] = write_batch_norm;
    t["InstanceNormalization"] = [](NodeWriter& w) {
      w.ret("torch.instance_norm(" + w.in(0) + ", " + w.in(1, "weight") + ", " + w.in(2, "bias") + ", None, None, True, 0.0, " +
            lit(attr_float(w.node, "epsilon", 1e-5)) + ", False)");
    };
    t["LayerNormalization"] = write_layer_norm;
    t["MaxPool"] = write_pool;
    t["AveragePool"] = write_pool;
    t["GlobalAveragePool"] = [](NodeWriter& w) { write_global_pool(w, "mean"); };
    t["GlobalMaxPool"] = [](NodeWriter& w) { write_global_pool(w, "amax"); };
    t["ReduceMean"] = [](NodeWriter& w) { write_reduce(w, "mean"); };
    t["ReduceSum"] = [](NodeWriter& w) { write_reduce(w, "sum"); };
    t["ReduceMax"] = [](NodeWriter& w) { write_reduce(w, "amax"); };
    t["ReduceMin"] = [](NodeWriter& w) { write_reduce(w, "amin"); };
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
    t["Softmax"] = [](NodeWriter& w) { write_softmax(w, "softmax"); };
    t["LogSoftmax"] = [](NodeWriter& w) { write_softmax(w, "log_softmax"); };
    t["Expand"] = write_expand;
    t["Tile"] = [](NodeWriter& w) { w.ret(w.in(0) + ".repeat(" + w.ints(1) + ")"); };
    return t;
  }();
  return table;
}

// lumen::first_line lives in the main library, which this one must not depend on (link order).
std::string headline(const std::string& message) { return message.substr(0, message.find('\n')); }

std::string unique_path(const onnx::NodeProto& node, size_t index, std::set<std::string>& used) {
  std::string base = node.name();
  for (auto& c : base)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
  // Exporters name nodes by scope ("/layer4/layer4.1/relu_1/Relu"); the path drops the leading slash.
  base.erase(0, base.find_first_not_of('_'));
  if (base.empty()) base = node.op_type() + "_" + std::to_string(index);
  if (!is_identifier(base)) base = "n_" + base;
  if (!is_identifier(base)) base = "n_" + std::to_string(index);
  std::string path = base;
  for (int k = 2; used.count(path); ++k) path = base + "_" + std::to_string(k);
  used.insert(path);
  return path;
}

}  // namespace

OnnxImport import_onnx_bytes(const std::string& bytes, const std::string& folder, const std::string& name) {
  onnx::ModelProto proto;
  if (bytes.empty()) throw Error("model " + name + " is empty");
  if (!proto.ParseFromString(bytes) || !proto.has_graph())
    throw Error("model " + name + " is not an ONNX model (the protobuf does not parse; truncated or another format?)");
  OnnxImport out;
  out.ir_version = proto.ir_version();
  if (out.ir_version < kMinIr || out.ir_version > kMaxIr)
    throw Error("model " + name + " has ONNX IR version " + std::to_string(out.ir_version) + "; lumen reads versions " +
                std::to_string(kMinIr) + " to " + std::to_string(kMaxIr));
  for (const auto& o : proto.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") out.opset = o.version();
  if (out.opset < kOnnxMinOpset || out.opset > kOnnxMaxOpset)
    throw Error("model " + name + " uses ONNX opset " + std::to_string(out.opset) + "; lumen reads opsets " +
                std::to_string(kOnnxMinOpset) + " to " + std::to_string(kOnnxMaxOpset) + " (re-export with one of those)");
  const auto& graph = proto.graph();

  // Values known at load time: initialisers and Constant nodes.
  std::map<std::string, torch::Tensor> constants;
  for (const auto& init : graph.initializer())
    constants[init.name()] = decode_tensor(init, folder, "initializer '" + init.name() + "'");

  std::vector<std::string> problems;
  const auto& table = writers();
  for (const auto& node : graph.node()) {
    const std::string where = "'" + node.name() + "' (" + node.op_type() + ", opset " + std::to_string(out.opset) + ")";
    if (!node.domain().empty() && node.domain() != "ai.onnx")
      problems.push_back("operator " + node.domain() + "." + node.op_type() + " at node " + where);
    else if (node.op_type() != "Constant" && !table.count(node.op_type()))
      problems.push_back("operator " + node.op_type() + " at node " + where);
  }
  if (!problems.empty()) {
    std::string list;
    for (size_t i = 0; i < problems.size() && i < 12; ++i) list += (i ? "; " : "") + problems[i];
    if (problems.size() > 12) list += "; and " + std::to_string(problems.size() - 12) + " more";
    throw Error("model " + name + " has " + std::to_string(problems.size()) + " node(s) lumen cannot run: " + list);
  }

  // The graph's run-time input: a declared input that is not an initialiser.
  std::vector<const onnx::ValueInfoProto*> inputs;
  for (const auto& in : graph.input())
    if (!constants.count(in.name())) inputs.push_back(&in);
  if (inputs.size() != 1) {
    std::string names;
    for (auto* in : inputs) names += (names.empty() ? "" : ", ") + in->name();
    throw Error("model " + name + " has " + std::to_string(inputs.size()) + " inputs (" + names + "); lumen explains models with one image input");
  }
  if (inputs[0]->type().has_tensor_type()) {
    for (const auto& d : inputs[0]->type().tensor_type().shape().dim()) out.input_shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
  }
  if (graph.output_size() < 1) throw Error("model " + name + " has no outputs");

  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  out.module = torch::jit::Module(c10::QualifiedName("__torch__.lumen_onnx.Model"), cu);
  std::map<std::string, std::string> value_var;  // ONNX value name -> variable in the root forward
  value_var[inputs[0]->name()] = "x";
  std::ostringstream root;
  root << "def forward(self, x):\n";
  std::set<std::string> used;
  size_t index = 0;
  for (const auto& node : graph.node()) {
    ++index;
    const std::string where = "node '" + node.name() + "' (" + node.op_type() + ")";
    if (node.op_type() == "Constant") {
      const onnx::AttributeProto* a = node.attribute_size() == 1 ? &node.attribute(0) : nullptr;
      if (!a || node.output_size() != 1) {
        problems.push_back(where + ": a Constant needs exactly one value attribute");
        continue;
      }
      try {
        torch::Tensor v;
        if (a->name() == "value") v = decode_tensor(a->t(), folder, where);
        else if (a->name() == "value_float") v = torch::tensor(a->f(), torch::kFloat);
        else if (a->name() == "value_floats") v = torch::tensor(std::vector<float>(a->floats().begin(), a->floats().end()), torch::kFloat);
        else if (a->name() == "value_int") v = torch::tensor(a->i(), torch::kLong);
        else if (a->name() == "value_ints") v = torch::tensor(std::vector<int64_t>(a->ints().begin(), a->ints().end()), torch::kLong);
        else throw Error("its " + a->name() + " attribute is not supported");
        constants[node.output(0)] = v;
      } catch (const Error& e) {
        problems.push_back(where + ": " + e.what());
      }
      continue;
    }
    const std::string path = unique_path(node, index, used);
    torch::jit::Module sub(c10::QualifiedName("__torch__.lumen_onnx.n" + std::to_string(index) + "." + node.op_type()), cu);
    NodeWriter w{node, out.opset, sub, {}, {}, {}, 0};
    std::vector<std::string> args, call;
    for (int i = 0; i < node.input_size(); ++i) {
      const auto& v = node.input(i);
      w.present.push_back(!v.empty());
      w.constant.push_back(nullptr);
      if (v.empty()) continue;
      if (auto c = constants.find(v); c != constants.end()) {
        w.constant.back() = &c->second;
      } else if (auto r = value_var.find(v); r != value_var.end()) {
        args.push_back("a" + std::to_string(i));
        call.push_back(r->second);
      } else {
        problems.push_back(where + ": input '" + v + "' is not produced by any earlier node (the graph is not in topological order?)");
        w.present.back() = false;
      }
    }
    try {
      table.at(node.op_type())(w);
      std::string signature = "def forward(self";
      for (const auto& a : args) signature += ", " + a;
      sub.define(signature + "):\n" + w.body.str());
    } catch (const Error& e) {
      problems.push_back(where + ": " + e.what());
      continue;
    } catch (const std::exception& e) {
      problems.push_back(where + ": " + headline(e.what()));
      continue;
    }
    out.module.register_module(path, sub);
    std::string results, outputs;
    for (int k = 0; k < node.output_size(); ++k) {
      const std::string var = "v" + std::to_string(value_var.size());
      results += (k ? ", " : "") + (node.output(k).empty() ? "_" : var);
      if (!node.output(k).empty()) {
        value_var[node.output(k)] = var;
        outputs += (outputs.empty() ? "" : ", ") + node.output(k);
        if (!out.aliases.count(node.output(k))) out.aliases[node.output(k)] = path;
      }
    }
    if (!node.name().empty() && node.name() != path) out.aliases[node.name()] = path;
    out.described[path] = outputs;
    std::string joined;
    for (size_t i = 0; i < call.size(); ++i) joined += (i ? ", " : "") + call[i];
    root << "    " << results << " = self." << path << ".forward(" << joined << ")\n";
  }
  // Scoped node names ("/layer4/layer4.1/relu_1/Relu", as torch.onnx writes them) also answer to each
  // module path on the way ("layer4", "layer4.1"): the module's output is its scope's last node, so
  // `--layer layer4` means the same layer in a model and in its ONNX export.
  std::map<std::string, std::string> scope_last;
  for (const auto& node : graph.node()) {
    if (node.name().empty() || node.name()[0] != '/') continue;
    auto alias = out.aliases.find(node.name());
    if (alias == out.aliases.end()) continue;
    std::stringstream parts(node.name().substr(1));
    std::vector<std::string> scopes;
    for (std::string part; std::getline(parts, part, '/');) scopes.push_back(part);
    for (size_t i = 0; i + 1 < scopes.size(); ++i) scope_last[scopes[i]] = alias->second;
  }
  for (const auto& [scope, path] : scope_last)
    if (!out.aliases.count(scope) && !used.count(scope)) out.aliases[scope] = path;
  if (!problems.empty()) {
    std::string list;
    for (size_t i = 0; i < problems.size() && i < 8; ++i) list += (i ? "; " : "") + problems[i];
    if (problems.size() > 8) list += "; and " + std::to_string(problems.size() - 8) + " more";
    throw Error("model " + name + " cannot be imported: " + list);
  }
  std::string results;
  for (const auto& o : graph.output()) {
    auto it = value_var.find(o.name());
    if (it == value_var.end()) throw Error("model " + name + ": output '" + o.name() + "' is not computed from the input");
    results += (results.empty() ? "" : ", ") + it->second;
  }
  root << "    return " << results << "\n";
  try {
    out.module.define(root.str());
  } catch (const std::exception& e) {
    throw Error("model " + name + " cannot be imported: " + headline(e.what()));
  }
  out.module.eval();
  return out;
}

OnnxImport import_onnx(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw Error("cannot read model file " + path);
  // protobuf's own limit on one message.
  if (size > (uint64_t{2} << 30) - 1) throw Error("model " + path + " is larger than 2 GiB; store its weights as external data");
  std::ifstream in(path, std::ios::binary);
  std::string bytes(size, '\0');
  if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) throw Error("cannot read model file " + path);
  auto folder = fs::path(path).parent_path();
  return import_onnx_bytes(bytes, folder.empty() ? "." : folder.string(), fs::path(path).filename().string());
}

}  // namespace lumen::detail
