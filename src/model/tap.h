// Internal: rewriting a TorchScript forward graph so that submodule outputs come out as extra results.
#pragma once

#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <lumen/model.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lumen::detail {

// The forward graph of `root` with every call to a module in `paths` followed by
//   t = lumen::tap(y)  (a leaf that requires grad, or y itself if y already requires grad)
//   y' = aten::clone(t) (what the rest of the network sees, so in-place ops cannot alter t)
// and returning (original output, t_1, ..., t_n). Calls are inlined only on the way down to the
// requested paths. Throws lumen::Error when a path is never called, returns something other than a
// tensor, or is called inside input-dependent control flow — unless `lenient`, which instead leaves
// such paths out of the outputs and says why in `skipped` (used to list layers).
struct RewriteOptions {
  std::vector<std::string> taps;
  bool lenient = false;
  // Non-plain rules inline the whole network and swap its ReLU-like activations for lumen::rule_clamp.
  BackwardRule rule = BackwardRule::Plain;
  bool strict_nonlinearities = true;   // an activation without a rule is an error (else left as it is)
  // Suffix mode: the output of this layer's (last) call is replaced by an extra graph input, and what
  // only fed it is removed — the graph then runs the network from the layer on (Ablation-CAM).
  std::string replace;
  // Attention: every softmax is followed by lumen::attention_tap, which hands square attention maps
  // to Model::forward (see attention.h). Inlines the whole network.
  bool attention = false;
  // PyTorch's fused inference attention (aten::_native_multi_head_attention, in traced-without-grad
  // and scripted nn.MultiheadAttention) has no backward and no softmax to tap: it is replaced by the
  // same computation written out. Set when the model has one; inlines the whole network.
  bool decompose_attention = false;
  // BackwardRule::Lrp: which rule each convolution and linear layer takes (lumen::LrpRules).
  LrpRuleSet lrp;
};

// Whether a module's graphs hold a fused inference attention (see RewriteOptions::decompose_attention).
bool has_fused_attention(const torch::jit::Module& root);

// The attention maps an attention forward recorded, with the module each came from.
struct AttentionMaps {
  std::vector<torch::Tensor> maps;
  std::vector<std::string> scopes;
};
// While alive, lumen::attention_tap on this thread records into `maps`.
class AttentionRecording {
 public:
  explicit AttentionRecording(AttentionMaps& maps);
  ~AttentionRecording();
  AttentionRecording(const AttentionRecording&) = delete;
  AttentionRecording& operator=(const AttentionRecording&) = delete;

 private:
  AttentionMaps* previous_;
};

struct TapResult {
  std::shared_ptr<torch::jit::Graph> graph;
  std::vector<std::string> tapped;                 // paths in output order (after the model's output)
  std::map<std::string, std::string> skipped;      // path -> reason / output type
};
TapResult rewrite_forward(const torch::jit::Module& root, const RewriteOptions& options);

// Module at a dotted path below root ("" = root).
torch::jit::Module submodule(const torch::jit::Module& root, const std::string& path);

}  // namespace lumen::detail
