#include "model/onnx/node_writer.h"

#include <lumen/error.h>

#include <algorithm>
#include <cmath>
#include <set>

namespace lumen::detail {

const Attribute* Node::attr(const std::string& key) const {
  auto it = attributes.find(key);
  return it == attributes.end() ? nullptr : &it->second;
}
int64_t Node::attr_int(const std::string& key, int64_t fallback) const {
  auto* a = attr(key);
  return a ? a->i : fallback;
}
double Node::attr_float(const std::string& key, double fallback) const {
  auto* a = attr(key);
  return a ? a->f : fallback;
}
std::string Node::attr_string(const std::string& key, const std::string& fallback) const {
  auto* a = attr(key);
  return a ? a->s : fallback;
}
std::optional<std::vector<int64_t>> Node::attr_ints(const std::string& key) const {
  auto* a = attr(key);
  if (!a) return std::nullopt;
  return a->ints;
}

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

std::string NodeWriter::in(size_t i, std::string name) {
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

std::optional<std::vector<int64_t>> NodeWriter::const_ints(size_t i) const {
  if (!is_const(i)) return std::nullopt;
  const auto& t = *constant[i];
  if (t.is_floating_point() || t.dim() > 1) throw Error("input " + std::to_string(i) + " must be a 1-D integer tensor");
  auto l = t.to(torch::kLong).reshape({-1});
  return std::vector<int64_t>(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
}

std::string NodeWriter::ints(size_t i) {
  if (auto v = const_ints(i)) return ints_literal(*v);
  const std::string name = "l" + std::to_string(temps++);
  line(name + ": List[int] = " + in(i) + ".tolist()");
  return name;
}

std::string NodeWriter::ints_literal(const std::vector<int64_t>& v) {
  if (!v.empty()) return lit(v);
  const std::string name = "l" + std::to_string(temps++);
  line(name + ": List[int] = []");
  return name;
}

double NodeWriter::scalar(size_t i) const {
  const auto& t = *constant[i];
  if (t.numel() != 1) throw Error("input " + std::to_string(i) + " must hold one value");
  return t.to(torch::kDouble).item<double>();
}

void NodeWriter::only_first_output() const {
  for (size_t k = 1; k < node.outputs.size(); ++k)
    if (!node.outputs[k].empty()) throw Error("its optional output " + std::to_string(k) + " is not supported");
}

std::string rank_prefix(int64_t k) {
  if (k < 1 || k > 3) throw Error("only 1-, 2- and 3-D spatial inputs are supported (kernel rank " + std::to_string(k) + ")");
  return std::to_string(k) + "d";
}

void int_list(NodeWriter& w, const std::string& var, const std::string& begin, const std::string& end, const std::string& item) {
  w.line(var + ": List[int] = []");
  w.line("for i in range(" + begin + ", " + end + "):");
  w.line("    " + var + ".append(" + item + ")");
}

void normalise_axis(NodeWriter& w, const std::string& var, int64_t axis, const std::string& rank) {
  w.line(var + " = " + lit(axis));
  w.line("if " + var + " < 0:");
  w.line("    " + var + " = " + var + " + " + rank);
}

std::optional<std::string> axes_of(NodeWriter& w, size_t input, int64_t input_from_opset) {
  if (w.opset >= input_from_opset) {
    if (!w.has(input)) return std::nullopt;
    return w.ints(input);
  }
  if (auto a = w.node.attr_ints("axes")) return w.ints_literal(*a);
  return std::nullopt;
}

const OpTable& op_writers() {
  static const OpTable table = [] {
    OpTable t;
    add_convolution_ops(t);
    add_math_ops(t);
    add_shape_ops(t);
    add_detection_ops(t);
    return t;
  }();
  return table;
}

}  // namespace lumen::detail
