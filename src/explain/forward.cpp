// Forward: one pass with the planned layers captured. When plain input gradients are needed the input
// requires grad here, so that one backward per target serves both the layers and the input. Each other
// backward rule (guided backprop, deconvnet) runs the same forward on a copy of the graph whose
// ReLU-like units backpropagate by the rule; its forward values are the plain ones, so when it is the
// only pass needed it also gives the predictions. DeepLIFT's rescale rule first runs its reference.
#include <lumen/error.h>

#include "explain/pipeline.h"

#include <optional>

namespace lumen::detail {
namespace {

std::string attention_methods(const Plan& plan) {
  std::string names;
  for (const auto* m : plan.methods)
    if (m->needs.attention != AttentionNeed::None) names += (names.empty() ? "" : ", ") + m->name;
  return names;
}

// The recorded softmax outputs as one model's self-attention: each [N,heads,T,T] (an attention module
// gives [N*heads,T,T] or [N,heads,T,T]), all over the same T tokens: the prefix tokens, then the grid.
void read_attention(Forward& f, const Plan& plan, const torch::Tensor& batch) {
  const auto& recorded = f.capture.attention;
  const std::string who = attention_methods(plan);
  if (recorded.empty())
    throw Error(who + " needs the model's self-attention, and this model has none: no softmax over a square [..., T, T] score "
                "matrix runs in its forward. Use a CAM method at a layer (--layer) instead");
  const int64_t n = batch.size(0), t = recorded[0].size(-1);
  for (size_t b = 0; b < recorded.size(); ++b) {
    const auto& a = recorded[b];
    const auto& scope = f.capture.attention_scopes[b];
    if (a.size(-1) != t)
      throw Error(who + ": the model's attention maps differ in size (" + std::to_string(t) + " tokens in '" + f.capture.attention_scopes[0] +
                  "', " + std::to_string(a.size(-1)) + " in '" + scope + "'); rollout through the blocks needs one token sequence throughout");
    // Global attention is [N,heads,T,T] or [N*heads,T,T]; windowed attention (Swin, MaxViT) is
    // [N*windows,heads,T,T]: it attends within parts of the image and has no token grid to roll out on.
    if ((a.dim() == 4 && a.size(0) != n) || a.dim() > 4 || a.numel() % (n * t * t) != 0)
      throw Error(who + ": the attention in '" + scope + "' has shape " + c10::str(a.sizes()) + " for " + std::to_string(n) +
                  " image(s): it is windowed (Swin, MaxViT), within parts of the image, and cannot be rolled out over it. Use a CAM "
                  "method at a layer (--layer) instead");
  }
  try {
    f.attention.tokens = infer_layout({n, t, t}, batch.size(2), batch.size(3), plan.patch_stride, plan.tokens);
  } catch (const Error& e) {
    throw Error(who + ": the attention maps over " + std::to_string(t) + " tokens: " + e.what());
  }
  for (const auto& a : recorded) {
    f.attention.maps.push_back(a.detach().reshape({n, -1, t, t}));
    f.recorded_attention.push_back(a);
  }
  f.attention.scopes = f.capture.attention_scopes;
}

// DeepLIFT's reference input (Needs::rescale_reference), as one row when every row is the same (black, a
// pixel value, an image: the usual baselines).
torch::Tensor rescale_reference(const Plan& plan, const torch::Tensor& batch, const Preprocess& preprocess) {
  for (const auto* m : plan.methods)
    if (m->needs.rescale_reference) {
      auto b = m->needs.rescale_reference(plan.settings, batch, preprocess).detach();
      return rows_alike(b) ? b.slice(0, 0, 1) : b;
    }
  throw Error("internal: the rescale rule is planned, and no method gives its reference");
}

// A rule's forward. The rescale rule's references run first, without gradients, on a tape that the
// inputs' forward then reads (lumen::RescaleTape), so the rule's backward carries the inputs alone. The
// reference's output and layers come back in `pass` with one row per input; when the inputs' forward
// did not meet the tape's units as recorded (input-dependent control flow) they stay empty, and the
// rule's gradients are not DeepLIFT's.
Capture rule_forward(const Model& model, const Plan& plan, const torch::Tensor& x, const std::vector<std::string>& layers, BackwardRule rule,
                     const Preprocess& preprocess, ReferenceCache* cache, Forward::RulePass& pass) {
  const bool strict = plan.shared.strict_nonlinearities;
  if (rule != BackwardRule::Rescale) return model.forward(x, layers, rule, strict);
  torch::Tensor references;
  {
    torch::NoGradGuard no_grad;
    references = rescale_reference(plan, x.detach(), preprocess);
  }
  const bool shared = references.size(0) == 1;
  const auto kept = cache && shared ? cache->find(references, layers, strict) : nullptr;
  std::optional<RescaleTape> tape;
  Capture reference;
  if (kept) {
    tape.emplace(kept->tape);
    reference = kept->capture;
  } else {
    tape.emplace();
    torch::NoGradGuard no_grad;
    reference = model.forward(references, layers, rule, strict);
    tape->replay();
  }
  auto c = model.forward(x, layers, rule, strict);
  if (cache && shared && !kept)
    cache->keep(std::make_shared<const ReferenceCache::Entry>(ReferenceCache::Entry{references, layers, strict, tape->recorded(), reference}));
  const int64_t n = x.size(0);
  if (!tape->matched() || !(reference.output.isTensor() || references.size(0) == n)) return c;
  pass.reference_input = references;
  pass.reference_output = reference.output.isTensor() ? torch::IValue(with_rows(reference.output.toTensor(), n)) : reference.output;
  for (const auto& l : reference.layers) pass.reference_layers.push_back(with_rows(l.detach(), n));
  return c;
}

}  // namespace

std::shared_ptr<const ReferenceCache::Entry> ReferenceCache::find(const torch::Tensor& reference, const std::vector<std::string>& layers,
                                                                  bool strict) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& e : entries_)
    if (e->strict == strict && e->layers == layers && e->reference.sizes() == reference.sizes() &&
        e->reference.scalar_type() == reference.scalar_type() && e->reference.equal(reference))
      return e;
  return nullptr;
}

void ReferenceCache::keep(std::shared_ptr<const Entry> entry) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.push_front(std::move(entry));
  if (entries_.size() > kEntries) entries_.pop_back();
}

Forward run_forward(const Model& model, const Plan& plan, const torch::Tensor& batch, const Preprocess& preprocess, ReferenceCache* references) {
  torch::AutoGradMode grad_mode(plan.backward());
  std::vector<std::shared_ptr<void>> rule_scopes;  // LRP's epsilon and rules, while the rule graphs are made and run
  for (const auto* m : plan.methods)
    if (m->needs.rule_scope) rule_scopes.push_back(m->needs.rule_scope(plan.settings, model));
  Forward f;
  f.input = batch.detach();
  const bool rule_input = plan.rule_only && plan.rule_inputs.count(*plan.rules.begin()) > 0;
  if (plan.plain_input || rule_input) f.input = f.input.clone().requires_grad_(true);
  const bool attention = plan.attention != AttentionNeed::None;
  Forward::RulePass only;  // the rule's references, when its forward is the only one
  f.capture = plan.rule_only ? rule_forward(model, plan, f.input, plan.captured(), *plan.rules.begin(), preprocess, references, only)
                             : model.forward(f.input, plan.captured(), BackwardRule::Plain, true, attention);
  if (attention) read_attention(f, plan, batch);
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    try {
      f.layouts.push_back(infer_layout(f.capture.layers[i].sizes().vec(), batch.size(-2), batch.size(-1), plan.patch_stride, plan.tokens));
    } catch (const Error& e) {
      throw Error("layer '" + plan.layers[i] + "': " + e.what());
    }
    // A volume's maps are volumes: a layer that is not one (or one under an image) has no place to go.
    const bool volume_layer = f.layouts.back().kind == TokenLayout::Kind::Volume, volume_input = batch.dim() == 5;
    if (volume_layer != volume_input)
      throw Error("layer '" + plan.layers[i] + "' gives " + c10::str(f.capture.layers[i].sizes()) + " for a" +
                  (volume_input ? " [N,C,D,H,W] volume input; pick a layer whose output is a [N,C,d,h,w] volume"
                                : "n [N,C,H,W] image input; a [N,C,d,h,w] layer needs a volume input"));
  }
  for (auto rule : plan.rules) {
    const bool layers = plan.rule_layers.count(rule) > 0;
    Forward::RulePass pass;
    if (plan.rule_only) {
      pass = std::move(only);
      pass.input = f.input, pass.output = f.capture.output;
      if (layers) pass.layers = f.capture.layers;
    } else {
      // Without its input gradient the rule graph is recorded from the captured layers up only.
      pass.input = plan.rule_inputs.count(rule) ? batch.detach().clone().requires_grad_(true) : batch.detach();
      auto c = rule_forward(model, plan, pass.input, layers ? plan.layers : std::vector<std::string>{}, rule, preprocess, references, pass);
      pass.output = c.output, pass.layers = c.layers;
    }
    // A rescale forward that could not read its references has no DeepLIFT gradients to give.
    if (rule == BackwardRule::Rescale && pass.reference_output.isNone()) continue;
    f.rule_passes[rule] = std::move(pass);
  }
  return f;
}

}  // namespace lumen::detail
