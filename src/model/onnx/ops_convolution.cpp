// ONNX convolutions, pooling and normalisation as TorchScript.
#include "model/onnx/node_writer.h"

#include <lumen/error.h>

namespace lumen::detail {
namespace {

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
  g.kernel = w.node.attr_ints("kernel_shape").value_or(std::vector<int64_t>{});
  g.strides = w.node.attr_ints("strides").value_or(std::vector<int64_t>(rank, 1));
  g.dilations = w.node.attr_ints("dilations").value_or(std::vector<int64_t>(rank, 1));
  auto pads = w.node.attr_ints("pads").value_or(std::vector<int64_t>(2 * rank, 0));
  const auto auto_pad = w.node.attr_string("auto_pad", "NOTSET");
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
  if (auto k = w.node.attr_ints("kernel_shape")) rank = static_cast<int64_t>(k->size());
  else if (w.is_const(1)) rank = w.constant[1]->dim() - 2;
  else throw Error("a run-time weight needs the kernel_shape attribute");
  auto g = geometry(w, rank);
  const auto group = w.node.attr_int("group", 1);
  std::string x = w.in(0);
  if (!g.extra.empty()) {
    w.line("x = torch.constant_pad_nd(" + x + ", " + lit(g.extra) + ", 0.0)");
    x = "x";
  }
  const std::string bias = w.has(2) ? w.in(2, "bias") : "None";
  // As a Conv2d module has it: lumen reads a patch embedding's stride from it (Model::patch_stride).
  w.module.register_attribute("stride", c10::ListType::ofInts(), g.strides);
  if (w.node.op_type == "Conv") {
    w.ret("torch.conv" + rank_prefix(rank) + "(" + x + ", " + w.in(1, "weight") + ", " + bias + ", " + lit(g.strides) + ", " +
          lit(g.pads) + ", " + lit(g.dilations) + ", " + lit(group) + ")");
    return;
  }
  if (w.node.attr_ints("output_shape")) throw Error("output_shape is not supported (export with pads)");
  if (!g.extra.empty()) throw Error("asymmetric pads are not supported on ConvTranspose");
  auto output_padding = w.node.attr_ints("output_padding").value_or(std::vector<int64_t>(rank, 0));
  w.ret("torch.conv_transpose" + rank_prefix(rank) + "(" + w.in(0) + ", " + w.in(1, "weight") + ", " + bias + ", " +
        lit(g.strides) + ", " + lit(g.pads) + ", " + lit(output_padding) + ", " + lit(group) + ", " + lit(g.dilations) + ")");
}

void write_pool(NodeWriter& w) {
  w.only_first_output();
  auto kernel = w.node.attr_ints("kernel_shape");
  if (!kernel) throw Error("kernel_shape is missing");
  const auto rank = static_cast<int64_t>(kernel->size());
  auto g = geometry(w, rank);
  const bool ceil = w.node.attr_int("ceil_mode", 0) != 0;
  const bool max = w.node.op_type == "MaxPool";
  const bool include_pad = w.node.attr_int("count_include_pad", 0) != 0;
  std::string x = w.in(0);
  if (!g.extra.empty()) {
    if (!max && !include_pad) throw Error("asymmetric pads with count_include_pad=0 are not supported");
    w.line("x = torch.constant_pad_nd(" + x + ", " + lit(g.extra) + ", " + (max ? "float('-inf')" : "0.0") + ")");
    x = "x";
  }
  if (max) {
    w.ret("torch.max_pool" + rank_prefix(rank) + "(" + x + ", " + lit(g.kernel) + ", " + lit(g.strides) + ", " + lit(g.pads) +
          ", " + lit(g.dilations) + ", " + (ceil ? "True" : "False") + ")");
    return;
  }
  for (auto d : g.dilations)
    if (d != 1) throw Error("dilated average pooling is not supported");
  w.ret("torch.avg_pool" + rank_prefix(rank) + "(" + x + ", " + lit(g.kernel) + ", " + lit(g.strides) + ", " + lit(g.pads) + ", " +
        (ceil ? "True" : "False") + ", " + (include_pad ? "True" : "False") + ")");
}

void write_global_pool(NodeWriter& w, const std::string& fn) {
  const std::string x = w.in(0);
  int_list(w, "axes", "2", x + ".dim()", "i");
  w.ret("torch." + fn + "(" + x + ", axes, True)");
}

void write_batch_norm(NodeWriter& w) {
  w.only_first_output();
  if (w.node.attr_int("training_mode", 0)) throw Error("training_mode=1 is not supported");
  const double eps = w.node.attr_float("epsilon", 1e-5);
  w.module.register_attribute("eps", c10::FloatType::get(), eps);
  w.ret("torch.batch_norm(" + w.in(0) + ", " + w.in(1, "weight") + ", " + w.in(2, "bias") + ", " + w.in(3, "running_mean") + ", " +
        w.in(4, "running_var") + ", False, 0.0, self.eps, False)");
}

void write_layer_norm(NodeWriter& w) {
  w.only_first_output();
  const std::string x = w.in(0);
  normalise_axis(w, "ax", w.node.attr_int("axis", -1), x + ".dim()");
  w.ret("torch.layer_norm(" + x + ", " + x + ".shape[ax:], " + w.in(1, "weight") + ", " + (w.has(2) ? w.in(2, "bias") : "None") +
        ", " + lit(w.node.attr_float("epsilon", 1e-5)) + ", False)");
}

}  // namespace

void add_convolution_ops(OpTable& t) {
  t["Conv"] = write_conv;
  t["ConvTranspose"] = write_conv;
  t["MaxPool"] = write_pool;
  t["AveragePool"] = write_pool;
  t["GlobalAveragePool"] = [](NodeWriter& w) { write_global_pool(w, "mean"); };
  t["GlobalMaxPool"] = [](NodeWriter& w) { write_global_pool(w, "amax"); };
  t["BatchNormalization"] = write_batch_norm;
  t["InstanceNormalization"] = [](NodeWriter& w) {
    w.ret("torch.instance_norm(" + w.in(0) + ", " + w.in(1, "weight") + ", " + w.in(2, "bias") + ", None, None, True, 0.0, " +
          lit(w.node.attr_float("epsilon", 1e-5)) + ", False)");
  };
  t["LayerNormalization"] = write_layer_norm;
}

}  // namespace lumen::detail
