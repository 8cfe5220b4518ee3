// Internal: writing one ONNX node as TorchScript source. Each node's op is written as TorchScript and
// compiled by LibTorch's own frontend: writing source rather than building IR nodes by hand keeps each
// op a few readable lines, and the compiled graph calls exactly the aten ops a PyTorch model would
// (relu, hardtanh/clamp, conv2d, ...), which is what the backward-rule rewrite and the layer taps look
// for. The op writers see a plain Node, not protobuf: only the importer reads the file format.
#pragma once

#include <torch/script.h>

#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace lumen::detail {

// An ONNX attribute as the file holds it (every field read as protobuf reports it, whatever the type).
struct Attribute {
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;
  std::function<torch::Tensor(const std::string& what)> tensor;  // decodes its tensor value
};

struct Node {
  std::string name, op_type;
  std::vector<std::string> outputs;
  std::map<std::string, Attribute> attributes;

  const Attribute* attr(const std::string& key) const;
  int64_t attr_int(const std::string& key, int64_t fallback) const;
  double attr_float(const std::string& key, double fallback) const;
  std::string attr_string(const std::string& key, const std::string& fallback) const;
  std::optional<std::vector<int64_t>> attr_ints(const std::string& key) const;
};

// TorchScript literals.
std::string lit(double v);
std::string lit(int64_t v);
std::string lit(const std::vector<int64_t>& v);
bool is_identifier(const std::string& s);

// One node being written: its inputs (runtime arguments or constants), its attributes, its body.
struct NodeWriter {
  const Node& node;
  int64_t opset;
  torch::jit::Module& module;
  std::vector<const torch::Tensor*> constant;  // per input; nullptr when computed at run time or absent
  std::vector<bool> present;
  std::ostringstream body;
  int temps = 0;

  bool has(size_t i) const { return i < present.size() && present[i]; }
  bool is_const(size_t i) const { return has(i) && constant[i]; }
  int inputs() const { return static_cast<int>(present.size()); }

  // The expression for input i: an argument, or the constant registered on the node's module as
  // `name` (a parameter when it is a float tensor of rank >= 1, so that sanity checks randomise it
  // and FullGrad/CAM find weights and biases by their usual names; a buffer otherwise).
  std::string in(size_t i, std::string name = "");
  std::optional<std::vector<int64_t>> const_ints(size_t i) const;
  // An int[] expression for input i: a literal for a constant, else the run-time tensor's values.
  std::string ints(size_t i);
  std::string ints_literal(const std::vector<int64_t>& v);
  double scalar(size_t i) const;
  void line(const std::string& s) { body << "    " << s << "\n"; }
  void ret(const std::string& s) { line("return " + s); }
  void only_first_output() const;
};

using OpWriter = std::function<void(NodeWriter&)>;
using OpTable = std::map<std::string, OpWriter>;

// Helpers several op families share.
std::string rank_prefix(int64_t k);  // "1d", "2d", "3d"
// Declares `var: List[int]` holding `item` for i in range(begin, end) (TorchScript has no list
// comprehension over a run-time range with a type it can infer for an empty list).
void int_list(NodeWriter& w, const std::string& var, const std::string& begin, const std::string& end, const std::string& item);
// Normalises a possibly negative axis held in `var` against the rank expression `rank`.
void normalise_axis(NodeWriter& w, const std::string& var, int64_t axis, const std::string& rank);
// Axes of a reduction or (un)squeeze: an attribute before `input_from_opset`, input `input` after.
std::optional<std::string> axes_of(NodeWriter& w, size_t input, int64_t input_from_opset);

// The op writers, by family (ops_*.cpp), and the table of all of them (op_table.cpp).
void add_convolution_ops(OpTable& t);   // Conv, ConvTranspose, pooling, normalisation
void add_math_ops(OpTable& t);          // activations, arithmetic, Gemm/MatMul, reductions, softmax
void add_shape_ops(OpTable& t);         // reshaping, slicing, gathering, padding, resizing, casting
void add_detection_ops(OpTable& t);     // NonMaxSuppression
const OpTable& op_writers();

}  // namespace lumen::detail
