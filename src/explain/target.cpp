#include <lumen/error.h>
#include <lumen/model.h>
#include <lumen/target.h>

namespace lumen {

Score parse_score(const std::string& name) {
  if (name == "logit") return Score::Logit;
  if (name == "prob" || name == "probability") return Score::Probability;
  if (name == "logprob") return Score::LogProbability;
  throw Error("unknown target score '" + name + "' (expected logit, prob or logprob)");
}

std::string to_string(Score s) {
  switch (s) {
    case Score::Logit: return "logit";
    case Score::Probability: return "prob";
    case Score::LogProbability: return "logprob";
  }
  return "?";
}

Target class_target(std::vector<int64_t> classes, Score score, bool counterfactual, OutputSelector select) {
  if (!select) select = default_logits;
  Target t;
  t.classes = classes;
  t.score = score;
  t.counterfactual = counterfactual;
  t.select = select;
  t.fn = [classes, score, counterfactual, select](const torch::IValue& output) {
    torch::Tensor logits = select(output);
    if (logits.dim() != 2) throw Error("class scores must be [N, classes], got shape " + c10::str(logits.sizes()));
    const int64_t n = logits.size(0), k = logits.size(1);
    if (static_cast<int64_t>(classes.size()) != n)
      throw Error("target has " + std::to_string(classes.size()) + " classes for a batch of " + std::to_string(n));
    for (int64_t c : classes)
      if (c < 0 || c >= k)
        throw Error("class index " + std::to_string(c) + " out of range: the model has " + std::to_string(k) + " classes (0.." +
                    std::to_string(k - 1) + ")");
    torch::Tensor s = logits;
    if (score == Score::Probability) s = torch::softmax(logits, 1);
    if (score == Score::LogProbability) s = torch::log_softmax(logits, 1);
    auto idx = torch::tensor(classes, torch::kLong).view({n, 1});
    auto y = s.gather(1, idx).view({n});
    return counterfactual ? -y : y;
  };
  return t;
}

Target custom_target(std::string name, TargetFn fn) {
  Target t;
  t.name = std::move(name);
  t.fn = std::move(fn);
  return t;
}

}  // namespace lumen
