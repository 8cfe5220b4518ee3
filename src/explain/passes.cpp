// Extra passes on demand, for methods that probe other inputs of one image (SmoothGrad's noisy copies,
// IG's path, occlusion's patches, Score-CAM's masks, RISE) or the network after a layer (Ablation-CAM),
// all batched by the plan's rows per pass, their chunks side by side (core/side_by_side.h). They run
// under the target of the image they probe.
#include <lumen/error.h>

#include "explain/pipeline.h"

#include "core/side_by_side.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <optional>

namespace lumen::detail {
namespace {

// The target for `rows` copies of image `image`.
Target for_rows(const Target& t, int64_t image, int64_t rows) { return target_for_images(t, std::vector<int64_t>(static_cast<size_t>(rows), image)); }

// A rescale pass's chunks, joined (activations only when it was at a layer).
Passes::RescaledLayer joined(const std::vector<torch::Tensor>& acts, const std::vector<torch::Tensor>& refs,
                             const std::vector<torch::Tensor>& grads, const std::vector<torch::Tensor>& scores) {
  Passes::RescaledLayer r;
  if (!acts.empty()) r.activations = torch::cat(acts), r.reference_activations = torch::cat(refs);
  r.gradient = torch::cat(grads);
  r.reference_scores = torch::cat(scores);
  return r;
}

Result concatenated(std::vector<Result>& parts) {
  Result r;
  std::vector<torch::Tensor> maps, attributions;
  for (auto& p : parts) {
    maps.push_back(p.maps);
    if (p.attribution.defined()) attributions.push_back(p.attribution);
    for (auto& e : p.extra) r.extra.push_back(std::move(e));
  }
  r.maps = torch::cat(maps);
  if (!attributions.empty()) r.attribution = torch::cat(attributions);
  r.is_signed = parts.front().is_signed;
  return r;
}

// The images of rows [start, start + m): `image`, or with `image` < 0 row r is the batch's image r.
std::vector<int64_t> chunk_images(int64_t image, int64_t start, int64_t m) {
  std::vector<int64_t> images(static_cast<size_t>(m), image);
  if (image < 0)
    for (int64_t r = 0; r < m; ++r) images[static_cast<size_t>(r)] = start + r;
  return images;
}

}  // namespace

// A row the target does not explain (an image without a k-th box) gets no map: its extra passes are
// not run, and its scores and gradients read as zero.
TargetPasses::TargetPasses(const Model& model, const Plan& plan, const Forward& forward, const Target& target, const torch::Tensor& batch,
                           const Preprocess& preprocess)
    : model_(model), plan_(plan), forward_(forward), target_(target), batch_(batch.detach()), preprocess_(preprocess) {}

torch::Tensor TargetPasses::gradient(const torch::Tensor& rows, int64_t image, BackwardRule rule) const {
  if (!target_.explains(image)) return torch::zeros_like(rows);
  torch::AutoGradMode enable(true);  // methods run under no-grad; their extra passes need it back
  return rows_side_by_side(rows, rows_per_pass(), [&](const torch::Tensor& chunk) {
    auto x = chunk.detach().clone().requires_grad_(true);
    auto out = model_.forward(x, {}, rule, plan_.shared.strict_nonlinearities).output;
    auto y = for_rows(target_, image, chunk.size(0))(out);
    return torch::autograd::grad({y.sum()}, {x})[0];
  });
}

// DeepLIFT's multipliers. The references run first, without gradients, while a RescaleTape keeps each
// rescale unit's input on them; the inputs then run alone, each unit reading its reference from the
// tape, so only the inputs carry a backward. A reference shared by every row (black, a pixel value, an
// image: the usual baselines) runs once, as one row. When the inputs' forward does not meet the units
// as the references' did (input-dependent control flow), or the output is not one tensor to read the
// shared reference's scores from, the pairs run side by side instead.
Passes::RescaledLayer TargetPasses::rescale_pass(const torch::Tensor& rows, const torch::Tensor& references, int64_t image,
                                                 std::optional<size_t> layer) const {
  if (rows.sizes() != references.sizes()) throw Error("internal: the rescale rule needs one reference per row");
  if (image < 0 && rows.size(0) != batch_.size(0)) throw Error("internal: the rescale rule's rows for every image must be the batch's");
  torch::AutoGradMode enable(true);
  const std::vector<std::string> taps = layer ? std::vector<std::string>{plan_.layers.at(*layer)} : std::vector<std::string>{};
  const bool strict = plan_.shared.strict_nonlinearities;
  const int64_t n = rows.size(0);
  const bool shared = rows_alike(references);
  std::vector<torch::Tensor> acts, refs, grads, scores;
  std::optional<RescaleTape> tape;
  Capture reference;
  for (int64_t start = 0; start < n; start += rows_per_pass()) {
    const int64_t m = std::min<int64_t>(n, start + rows_per_pass()) - start;
    if (!tape || !shared) {
      tape.reset();  // (the old tape stops recording before the new one starts)
      tape.emplace();
      torch::NoGradGuard no_grad;
      reference = model_.forward(shared ? references.slice(0, 0, 1) : references.slice(0, start, start + m), taps, BackwardRule::Rescale, strict);
      if (shared && !reference.output.isTensor()) break;
    }
    tape->replay();
    auto x = rows.slice(0, start, start + m).detach();
    if (!layer) x = x.clone().requires_grad_(true);
    const auto capture = model_.forward(x, taps, BackwardRule::Rescale, strict);
    if (!tape->matched()) break;
    const auto target = target_for_images(target_, chunk_images(image, start, m));
    const auto y = target(capture.output);
    const auto& wrt = layer ? capture.layers.at(0) : x;
    auto g = torch::autograd::grad({y.sum()}, {wrt}, {}, false, false, /*allow_unused=*/true)[0];
    if (!g.defined()) g = torch::zeros_like(wrt);
    if (layer) {
      acts.push_back(to_spatial(wrt.detach(), forward_.layouts.at(*layer)));
      refs.push_back(with_rows(to_spatial(reference.layers.at(0).detach(), forward_.layouts.at(*layer)), m));
      g = to_spatial(g, forward_.layouts.at(*layer));
    }
    grads.push_back(g);
    scores.push_back(target(reference.output.isTensor() ? torch::IValue(with_rows(reference.output.toTensor(), m)) : reference.output).detach());
  }
  if (static_cast<int64_t>(grads.size()) * rows_per_pass() < n) {
    tape.reset();
    return paired_rescale_pass(rows, references, image, layer);
  }
  return joined(acts, refs, grads, scores);
}

// The rescale rule's other form: inputs and their references in one forward, [inputs; references], so
// that each unit sees both; the target reads the inputs' half. Half a pass of pairs per chunk.
Passes::RescaledLayer TargetPasses::paired_rescale_pass(const torch::Tensor& rows, const torch::Tensor& references, int64_t image,
                                                        std::optional<size_t> layer) const {
  torch::AutoGradMode enable(true);
  const int pairs = std::max(1, rows_per_pass() / 2);
  std::vector<torch::Tensor> acts, refs, grads, scores;
  for (int64_t start = 0; start < rows.size(0); start += pairs) {
    const int64_t m = std::min<int64_t>(rows.size(0), start + pairs) - start;
    auto x = torch::cat({rows.slice(0, start, start + m), references.slice(0, start, start + m)}).detach();
    if (!layer) x.requires_grad_(true);
    const auto capture = model_.forward(x, layer ? std::vector<std::string>{plan_.layers.at(*layer)} : std::vector<std::string>{},
                                        BackwardRule::Rescale, plan_.shared.strict_nonlinearities);
    auto images = chunk_images(image, start, m);  // the chunk's images, twice
    images.insert(images.end(), images.begin(), images.end());
    const auto y = target_for_images(target_, images)(capture.output);
    const auto& wrt = layer ? capture.layers.at(0) : x;
    auto g = torch::autograd::grad({y.slice(0, 0, m).sum()}, {wrt}, {}, false, false, /*allow_unused=*/true)[0];
    if (!g.defined()) g = torch::zeros_like(wrt);
    if (layer) {
      const auto spatial = to_spatial(wrt.detach(), forward_.layouts.at(*layer));
      acts.push_back(spatial.slice(0, 0, m));
      refs.push_back(spatial.slice(0, m));
      g = to_spatial(g, forward_.layouts.at(*layer));
    }
    grads.push_back(g.slice(0, 0, m));
    scores.push_back(y.slice(0, m).detach());
  }
  return joined(acts, refs, grads, scores);
}

Passes::Rescaled TargetPasses::rescale_gradient(const torch::Tensor& rows, const torch::Tensor& references, int64_t image) const {
  auto r = rescale_pass(rows, references, image, std::nullopt);
  return {r.gradient, r.reference_scores};
}

Passes::RescaledLayer TargetPasses::rescale_layer_at(const torch::Tensor& rows, const torch::Tensor& references, int64_t image,
                                                     size_t layer) const {
  return rescale_pass(rows, references, image, layer);
}

LayerTensors TargetPasses::layer_at(const torch::Tensor& rows, int64_t image, size_t layer) const {
  torch::AutoGradMode enable(true);
  const auto parts = chunks_side_by_side<std::pair<torch::Tensor, torch::Tensor>>(rows, rows_per_pass(), [&](const torch::Tensor& chunk) {
    const auto capture = model_.forward(chunk.detach(), {plan_.layers.at(layer)});
    const auto& a = capture.layers.at(0);
    const auto y = for_rows(target_, image, chunk.size(0))(capture.output);
    auto g = torch::autograd::grad({y.sum()}, {a}, {}, false, false, /*allow_unused=*/true)[0];
    if (!g.defined()) g = torch::zeros_like(a);
    return std::make_pair(to_spatial(a.detach(), forward_.layouts.at(layer)), to_spatial(g, forward_.layouts.at(layer)));
  });
  std::vector<torch::Tensor> acts, grads;
  for (const auto& [a, g] : parts) acts.push_back(a), grads.push_back(g);
  return {torch::cat(acts), torch::cat(grads), forward_.layouts.at(layer).grid_d};
}

torch::Tensor TargetPasses::score(const torch::Tensor& rows, int64_t image) const {
  if (!target_.explains(image)) return torch::zeros({rows.size(0)}, rows.options());
  torch::NoGradGuard no_grad;
  return rows_side_by_side(rows, rows_per_pass(), [&](const torch::Tensor& chunk) {
    return for_rows(target_, image, chunk.size(0))(model_.forward(chunk.detach()).output);
  });
}

torch::IValue TargetPasses::output_from_layer(size_t layer, const torch::Tensor& activations, int64_t image) const {
  auto rows = batch_.sizes().vec();  // [M, C, (D,) H, W]
  rows[0] = activations.size(0);
  auto input = batch_[image].unsqueeze(0).expand(rows);
  // Back to the layer's own layout; prefix tokens (a class token, registers) are the image's.
  const auto own = from_spatial(activations, forward_.layouts.at(layer), forward_.capture.layers.at(layer)[image].unsqueeze(0).detach());
  return model_.forward_from(plan_.layers.at(layer), own, input);
}

torch::Tensor TargetPasses::score_from_layer(size_t layer, const torch::Tensor& activations, int64_t image) const {
  if (!target_.explains(image)) return torch::zeros({activations.size(0)}, activations.options());
  torch::NoGradGuard no_grad;
  return rows_side_by_side(activations, rows_per_pass(), [&](const torch::Tensor& chunk) {
    return for_rows(target_, image, chunk.size(0))(output_from_layer(layer, chunk, image));
  });
}

Passes::LayerScores TargetPasses::scores_from_layer(size_t layer, const torch::Tensor& activations, int64_t image) const {
  if (!target_.explains(image)) return {torch::zeros({activations.size(0)}, activations.options()), torch::Tensor()};
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> ys, classes;
  bool class_scores = true;
  for (int64_t start = 0; start < activations.size(0); start += rows_per_pass()) {
    const auto chunk = activations.slice(0, start, std::min<int64_t>(activations.size(0), start + rows_per_pass()));
    const auto out = output_from_layer(layer, chunk, image);
    ys.push_back(for_rows(target_, image, chunk.size(0))(out));
    if (!class_scores) continue;
    try {
      auto scores = target_.select ? target_.select(out) : default_logits(out);
      class_scores = scores.dim() == 2;
      if (class_scores) classes.push_back(scores.detach());
    } catch (const Error&) {
      class_scores = false;  // an output without class scores
    }
  }
  return {torch::cat(ys), class_scores ? torch::cat(classes) : torch::Tensor()};
}

// Another method on other rows of one image, chunk by chunk, each chunk a batch of its own through
// the same stages (forward, evidence, the method), under this target. Methods at a layer give their
// map at the first requested layer.
Result TargetPasses::run(const Method& method, const torch::Tensor& rows, int64_t image) const {
  torch::AutoGradMode enable(true);
  const Plan plan = plan_alone(model_, method, plan_);
  auto parts = chunks_side_by_side<Result>(rows, rows_per_pass(), [&](const torch::Tensor& chunk) {
    const Target target = for_rows(target_, image, chunk.size(0));
    const Forward forward = run_forward(model_, plan, chunk, preprocess_);
    const TargetPasses passes(model_, plan, forward, target, chunk, preprocess_);
    const Evidence ev = gather_evidence(model_, plan, forward, target, /*last=*/true, torch::Tensor(), passes);
    torch::NoGradGuard no_grad;
    return method.compute(ev, 0);
  });
  return concatenated(parts);
}

// The batch itself under another target: the stages again from the forward (the first forward's graph
// is not kept for this; a wrapper's target is only known once the method runs).
Result TargetPasses::run_for(const Method& method, const Target& target, size_t layer) const {
  torch::AutoGradMode enable(true);
  const Plan plan = plan_alone(model_, method, plan_);
  const Forward forward = run_forward(model_, plan, batch_, preprocess_);
  const TargetPasses passes(model_, plan, forward, target, batch_, preprocess_);
  const Evidence ev = gather_evidence(model_, plan, forward, target, /*last=*/true, torch::Tensor(), passes);
  torch::NoGradGuard no_grad;
  return method.compute(ev, layer);
}

// The network above the layer run again from the captured activations A with the graph kept through
// the first backward (create_graph), so that the gradient G = dy/dA can itself be differentiated:
// d(G . A)/dA with A held fixed is H A. Only the head runs twice; nothing below the layer.
torch::Tensor TargetPasses::hessian_times_activations(size_t layer) const {
  torch::AutoGradMode enable(true);
  const auto a = forward_.capture.layers.at(layer).detach().requires_grad_(true);
  const auto y = target_(model_.forward_from(plan_.layers.at(layer), a, batch_)).sum();
  const auto g = torch::autograd::grad({y}, {a}, {}, /*retain_graph=*/true, /*create_graph=*/true, /*allow_unused=*/true)[0];
  torch::Tensor hv;
  // A head that is linear in A leaves G without a graph: its Hessian is zero.
  if (g.defined() && g.requires_grad()) hv = torch::autograd::grad({g}, {a}, {a.detach()}, false, false, /*allow_unused=*/true)[0];
  if (!hv.defined()) hv = torch::zeros_like(a);
  return to_spatial(hv.detach(), forward_.layouts.at(layer));
}

torch::Tensor TargetPasses::reference(const std::string& kind, uint64_t seed, double blur_sigma) const {
  return reference_input(batch_, kind, preprocess_, seed, blur_sigma);
}

torch::Tensor TargetPasses::pixels() const {
  const auto mean = torch::tensor(preprocess_.mean).view({1, -1, 1, 1}), std = torch::tensor(preprocess_.std).view({1, -1, 1, 1});
  const auto px = batch_.to(torch::kFloat32) * std + mean;
  return preprocess_.rgb ? px : px.flip(1);
}

// A method run on chunks side by side (a wrapper's base) would report from several threads at once,
// each its own chunk's count; the caller's callback need not be thread-safe, and the wrapper around
// them reports its own progress as each set of chunks ends.
void TargetPasses::progress(const std::string& what, int64_t done, int64_t total) const {
  if (plan_.shared.progress && !at::in_parallel_region()) plan_.shared.progress(what, done, total);
}

}  // namespace lumen::detail
