// Targets: what each map explains, resolved once from the forward's output — explicit classes, the
// top-k predictions, or the caller's own targets — with each image's top-5. Later stages (and
// aug-smooth's extra forwards) receive these targets; nothing resolves them again.
#include <lumen/error.h>

#include "explain/pipeline.h"

namespace lumen::detail {

std::string label_of(const std::vector<std::string>* labels, int64_t cls) {
  return labels && cls >= 0 && cls < static_cast<int64_t>(labels->size()) ? (*labels)[static_cast<size_t>(cls)] : std::string();
}

void check_finite(const torch::Tensor& t, const std::string& what) {
  if (!torch::isfinite(t).all().item<bool>()) throw Error(what + " contains NaN or infinity");
}

bool rows_alike(const torch::Tensor& t) { return t.size(0) == 1 || t.equal(t.slice(0, 0, 1).expand_as(t)); }

torch::Tensor with_rows(const torch::Tensor& t, int64_t n) {
  auto sizes = t.sizes().vec();
  sizes[0] = n;
  return t.size(0) == n ? t : t.expand(sizes);
}

namespace {

// The [N, classes] scores, when the output has them: a custom target may explain an output without
// class scores (a caption's tokens, say), and then there is no top-5.
torch::Tensor class_scores(const ExplainOptions& opt, const OutputSelector& select, const torch::IValue& output, int64_t n,
                           const std::vector<std::string>& labels) {
  if (opt.targets_from_output) return torch::Tensor();  // a detector's boxes: no class scores to rank
  torch::Tensor logits;
  try {
    logits = select(output).detach();
  } catch (const Error&) {
    if (opt.targets.empty()) throw;
  }
  // Given targets explain any output: one that is no [N, classes] (a detector's boxes) has no top-5.
  if (logits.defined() && !opt.targets.empty() && (logits.dim() != 2 || logits.size(0) != n)) logits = torch::Tensor();
  if (!logits.defined()) return logits;
  if (logits.dim() != 2 || logits.size(0) != n)
    throw Error("model output has shape " + c10::str(logits.sizes()) + ", expected [" + std::to_string(n) + ", classes]");
  check_finite(logits, "the model's output");
  if (!labels.empty() && static_cast<int64_t>(labels.size()) != logits.size(1)) {
    // A custom target's output need not be the classes the labels name (an encoder's embedding, with
    // the classifier's card): then it has no top-5.
    if (!opt.targets.empty()) return torch::Tensor();
    throw Error("labels list has " + std::to_string(labels.size()) + " entries but the model outputs " + std::to_string(logits.size(1)) +
                " classes");
  }
  return logits;
}

std::vector<Target> class_targets(const ExplainOptions& opt, const OutputSelector& select, const torch::Tensor& logits,
                                  const torch::Tensor& order, int64_t n) {
  if (!logits.defined()) throw Error("cannot pick classes: the model's output has no class scores");
  std::vector<Target> targets;
  if (!opt.classes.empty()) {
    for (int64_t c : opt.classes) {
      if (c < 0 || c >= logits.size(1))
        throw Error("class index " + std::to_string(c) + " out of range: the model has " + std::to_string(logits.size(1)) + " classes (0.." +
                    std::to_string(logits.size(1) - 1) + ")");
      targets.push_back(class_target(std::vector<int64_t>(static_cast<size_t>(n), c), opt.score, opt.counterfactual, select));
      targets.back().name = "class " + std::to_string(c);
    }
    return targets;
  }
  if (opt.top_k > logits.size(1))
    throw Error("top-k " + std::to_string(opt.top_k) + " exceeds the model's " + std::to_string(logits.size(1)) + " classes");
  for (int r = 0; r < opt.top_k; ++r) {
    auto col = order.select(1, r).contiguous();
    std::vector<int64_t> cls(col.data_ptr<int64_t>(), col.data_ptr<int64_t>() + n);
    targets.push_back(class_target(cls, opt.score, opt.counterfactual, select));
    targets.back().name = "top-" + std::to_string(r + 1);
  }
  return targets;
}

}  // namespace

Targets resolve_targets(const ExplainOptions& opt, const torch::IValue& output, int64_t n, const std::vector<std::string>& labels) {
  const OutputSelector select = opt.select ? opt.select : OutputSelector(default_logits);
  const torch::Tensor logits = class_scores(opt, select, output, n, labels);
  Targets t;
  t.top.resize(static_cast<size_t>(n));
  torch::Tensor order;
  if (logits.defined()) {
    auto probs = torch::softmax(logits, 1);
    const int64_t classes = logits.size(1);
    const int64_t k = std::min<int64_t>(5, classes);
    order = std::get<1>(logits.topk(std::min<int64_t>(classes, std::max<int64_t>(k, opt.top_k)), 1));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t r = 0; r < k; ++r) {
        int64_t c = order[i][r].item<int64_t>();
        t.top[static_cast<size_t>(i)].push_back({c, label_of(&labels, c), logits[i][c].item<float>(), probs[i][c].item<float>()});
      }
    }
  }
  if (opt.targets_from_output)
    t.targets = opt.targets_from_output(output, n);
  else
    t.targets = opt.targets.empty() ? class_targets(opt, select, logits, order, n) : opt.targets;
  return t;
}

}  // namespace lumen::detail
