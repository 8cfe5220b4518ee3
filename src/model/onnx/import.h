// Internal: an ONNX graph turned into a TorchScript module that runs LibTorch ops.
//
// Every ONNX node (except Constant, which is folded into its users) becomes a submodule whose forward
// is the node's op written in TorchScript, holding the node's constant inputs as its own parameters and
// buffers; the root module's forward calls them in graph order. The result is an ordinary
// torch::jit::Module, so layer taps, backward-rule rewrites, suffix runs and autograd work on it exactly
// as on a TorchScript file: nothing downstream knows the model came from ONNX.
#pragma once

#include <torch/script.h>

#include <map>
#include <string>
#include <vector>

namespace lumen::detail {

struct OnnxImport {
  torch::jit::Module module;
  // ONNX node name or output value name -> submodule path (node names made into identifiers).
  std::map<std::string, std::string> aliases;
  // Submodule path -> "node name -> output value names", for listings.
  std::map<std::string, std::string> described;
  int64_t opset = 0;
  int64_t ir_version = 0;
  std::vector<int64_t> input_shape;  // the graph input's declared shape; -1 where symbolic
  // A detector that resizes its image and pads it onto a larger canvas (torchvision's exports:
  // Resize, then Pad at the bottom and right, then the backbone): the submodules whose outputs are the
  // resized image (`resized`), the padded canvas (`padded`) and the pads (`pads`, empty when they are
  // a constant, then in `constant_pads`). Empty `padded` for every other graph.
  struct Canvas {
    std::string resized, padded, pads;
    std::vector<int64_t> constant_pads;
  } canvas;
};

// An input shape of one RGB image with no batch axis, [3, H, W]: the graph runs a batch of one.
inline bool one_image(const std::vector<int64_t>& input_shape) { return input_shape.size() == 3 && input_shape[0] == 3; }

// Lowest and highest default-domain opsets lumen reads.
constexpr int64_t kOnnxMinOpset = 11;
constexpr int64_t kOnnxMaxOpset = 17;

// Reads `path` (an .onnx file). External tensor data is read from files inside the model's folder only.
// Throws lumen::Error naming the problem: unreadable or truncated file, unsupported opset or IR version,
// every unsupported operator at once, inconsistent tensors, paths leaving the folder.
OnnxImport import_onnx(const std::string& path);

// The same from bytes in memory (the fuzz target's entry). `folder` is where external data may be
// read from; empty forbids external data.
OnnxImport import_onnx_bytes(const std::string& bytes, const std::string& folder, const std::string& name);

}  // namespace lumen::detail
