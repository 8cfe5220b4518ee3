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

OutputSelector output_path(const std::string& path) {
  if (path.empty()) return default_logits;
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const auto& p : parts)
    if (p.empty()) throw Error("output path '" + path + "' has an empty component");
  return [parts, path](const torch::IValue& output) {
    torch::IValue v = output;
    std::string at = "output";
    for (const auto& p : parts) {
      const bool index = p.find_first_not_of("0123456789") == std::string::npos;
      if (v.isTuple() || v.isList()) {
        std::vector<torch::IValue> items;
        if (v.isTuple()) items = v.toTuple()->elements();
        else for (const auto& e : v.toList()) items.push_back(e);
        if (!index) throw Error(at + " is a " + v.tagKind() + "; '" + p + "' is not an index (output path '" + path + "')");
        size_t i = std::stoul(p);
        if (i >= items.size())
          throw Error(at + " has " + std::to_string(items.size()) + " elements, no element " + p + " (output path '" + path + "')");
        v = items[i];
      } else if (v.isGenericDict()) {
        auto dict = v.toGenericDict();
        torch::IValue found;
        bool ok = false;
        std::string keys;
        for (const auto& e : dict) {
          std::string k = e.key().isString() ? e.key().toStringRef() : e.key().isInt() ? std::to_string(e.key().toInt()) : "?";
          keys += (keys.empty() ? "" : ", ") + k;
          if (k == p) found = e.value(), ok = true;
        }
        if (!ok) throw Error(at + " has no key '" + p + "' (keys: " + keys + ")");
        v = found;
      } else {
        throw Error(at + " is a " + v.tagKind() + ", not a tuple, list or dict (output path '" + path + "')");
      }
      at += "." + p;
    }
    if (!v.isTensor()) throw Error(at + " is a " + v.tagKind() + ", not a tensor");
    return v.toTensor();
  };
}

OutputSelector at_position(OutputSelector select, int64_t t) {
  if (!select) select = default_logits;
  return [select, t](const torch::IValue& output) {
    auto s = select(output);
    if (s.dim() != 3) throw Error("a sequence output must be [N, T, V], got shape " + c10::str(s.sizes()));
    if (t < 0 || t >= s.size(1))
      throw Error("token position " + std::to_string(t) + " out of range: the sequence has " + std::to_string(s.size(1)) + " steps");
    return s.select(1, t);
  };
}

Target sequence_target(std::vector<int64_t> tokens, OutputSelector select) {
  if (!select) select = default_logits;
  if (tokens.empty()) throw Error("a sequence target needs at least one token");
  std::string name = "sequence";
  for (auto k : tokens) name += "-" + std::to_string(k);
  return custom_target(name, [tokens, select](const torch::IValue& output) {
    auto s = select(output);
    if (s.dim() != 3) throw Error("a sequence output must be [N, T, V], got shape " + c10::str(s.sizes()));
    const int64_t steps = static_cast<int64_t>(tokens.size());
    if (steps > s.size(1))
      throw Error(std::to_string(steps) + " tokens given but the model emits " + std::to_string(s.size(1)) + " steps");
    for (auto k : tokens)
      if (k < 0 || k >= s.size(2))
        throw Error("token " + std::to_string(k) + " out of range: the vocabulary has " + std::to_string(s.size(2)) + " entries");
    auto lp = torch::log_softmax(s.slice(1, 0, steps), 2);
    auto idx = torch::tensor(tokens).view({1, steps, 1}).expand({s.size(0), steps, 1});
    return lp.gather(2, idx).sum({1, 2});
  });
}

OutputSelector segmentation_scores() {
  return [](const torch::IValue& output) {
    if (output.isGenericDict()) {
      for (const auto& e : output.toGenericDict())
        if (e.key().isString() && e.key().toStringRef() == "out" && e.value().isTensor()) return e.value().toTensor();
      throw Error("the model's output is a dict without an \"out\" tensor; name the entry with --output");
    }
    return default_logits(output);
  };
}

namespace {

// The [N, classes, h, w] scores, checked against class `cls`.
torch::Tensor segmentation_scores_of(const OutputSelector& select, const torch::IValue& output, int64_t cls) {
  torch::Tensor s = select(output);
  if (s.dim() != 4) throw Error("a segmentation output must be [N, classes, h, w], got shape " + c10::str(s.sizes()));
  if (cls >= s.size(1))
    throw Error("class index " + std::to_string(cls) + " out of range: the model segments " + std::to_string(s.size(1)) + " classes (0.." +
                std::to_string(s.size(1) - 1) + ")");
  return s;
}

// Class `cls`'s scores summed over fixed per-row masks [R, h, w] (a bound segmentation target).
Target masked_segmentation(const std::string& name, int64_t cls, const torch::Tensor& masks, const OutputSelector& select) {
  Target t = custom_target(name, [cls, masks, select](const torch::IValue& output) {
    const torch::Tensor s = segmentation_scores_of(select, output, cls);
    if (s.size(0) != masks.size(0) || s.size(2) != masks.size(1) || s.size(3) != masks.size(2))
      throw Error("internal: a bound segmentation target of " + c10::str(masks.sizes()) + " scored on an output of " + c10::str(s.sizes()));
    return (s.select(1, cls) * masks).sum({1, 2});
  });
  t.rows_of = [name, cls, masks, select](const std::vector<int64_t>& images) {
    return masked_segmentation(name, cls, masks.index_select(0, torch::tensor(images, torch::kLong)), select);
  };
  return t;
}

}  // namespace

Target target_for_images(const Target& t, const std::vector<int64_t>& images) {
  if (t.rows_of) return t.rows_of(images);
  if (t.classes.empty()) return t;
  std::vector<int64_t> classes;
  for (int64_t i : images) classes.push_back(t.classes.at(static_cast<size_t>(i)));
  return class_target(std::move(classes), t.score, t.counterfactual, t.select);
}

torch::Tensor rectangle_region(double x0, double y0, double x1, double y1, int64_t width, int64_t height) {
  const int64_t c0 = std::max<int64_t>(0, static_cast<int64_t>(x0)), r0 = std::max<int64_t>(0, static_cast<int64_t>(y0));
  const int64_t c1 = std::min(width, static_cast<int64_t>(x1)), r1 = std::min(height, static_cast<int64_t>(y1));
  if (c1 <= c0 || r1 <= r0) return torch::Tensor();
  torch::Tensor region = torch::zeros({height, width});
  region.slice(0, r0, r1).slice(1, c0, c1).fill_(1);
  return region;
}

Target segmentation_target(int64_t cls, torch::Tensor region, OutputSelector select) {
  if (region.defined()) return segmentation_target(cls, std::vector<torch::Tensor>{std::move(region)}, std::move(select));
  if (cls < 0) throw Error("segmentation class must be 0 or more, got " + std::to_string(cls));
  if (!select) select = segmentation_scores();
  const std::string name = "seg-" + std::to_string(cls);
  Target t = custom_target(name, [cls, select](const torch::IValue& output) {
    const torch::Tensor s = segmentation_scores_of(select, output, cls);
    return (s.select(1, cls) * (s.detach().argmax(1) == cls).to(s.scalar_type())).sum({1, 2});
  });
  t.bind = [name, cls, select](const torch::IValue& output) {
    const torch::Tensor s = segmentation_scores_of(select, output, cls).detach();
    return masked_segmentation(name, cls, (s.argmax(1) == cls).to(s.scalar_type()), select);
  };
  return t;
}

Target segmentation_target(int64_t cls, std::vector<torch::Tensor> regions, OutputSelector select) {
  if (cls < 0) throw Error("segmentation class must be 0 or more, got " + std::to_string(cls));
  if (regions.empty()) throw Error("a segmentation target needs the region of at least one image");
  if (!select) select = segmentation_scores();
  for (auto& region : regions) {
    if (!region.defined() || region.dim() != 2 || region.numel() == 0) throw Error("a segmentation region must be a non-empty [H, W] mask");
    region = (region.detach() != 0).to(torch::kFloat32);
    if (region.sum().item<double>() == 0) throw Error("the segmentation region is empty: it covers no pixel");
  }
  const std::string name = "seg-" + std::to_string(cls);
  Target t = custom_target(name, [cls, regions, select](const torch::IValue& output) {
    const torch::Tensor s = segmentation_scores_of(select, output, cls);
    const int64_t rows = s.size(0);
    if (regions.size() > 1 && static_cast<int64_t>(regions.size()) != rows)
      throw Error("a segmentation target holds the regions of " + std::to_string(regions.size()) + " images; the output has " + std::to_string(rows));
    std::vector<torch::Tensor> masks;  // nearest neighbour (torch's "nearest"), at the output's resolution
    for (size_t n = 0; n < (regions.size() > 1 ? regions.size() : 1); ++n)
      masks.push_back(at::upsample_nearest2d(regions[n].view({1, 1, regions[n].size(0), regions[n].size(1)}), {s.size(2), s.size(3)})
                          .view({s.size(2), s.size(3)}));
    return (s.select(1, cls) * torch::stack(masks).to(s.scalar_type())).sum({1, 2});
  });
  if (regions.size() > 1)
    t.rows_of = [cls, regions, select](const std::vector<int64_t>& images) {
      std::vector<torch::Tensor> picked;
      for (int64_t i : images) picked.push_back(regions.at(static_cast<size_t>(i)));
      return segmentation_target(cls, std::move(picked), select);
    };
  return t;
}

Target similarity_target(torch::Tensor concept, bool dissimilar, OutputSelector select) {
  if (!concept.defined() || concept.numel() == 0) throw Error("similarity needs a reference embedding");
  concept = concept.detach().to(torch::kFloat32).flatten();
  if (!torch::isfinite(concept).all().item<bool>()) throw Error("the reference embedding holds NaN or infinite values");
  if (concept.norm().item<double>() == 0) throw Error("the reference embedding is all zero: its cosine similarity is undefined");
  if (!select) select = default_logits;
  return custom_target(dissimilar ? "dissimilarity" : "similarity", [concept, dissimilar, select](const torch::IValue& output) {
    const torch::Tensor out = select(output);
    if (out.dim() < 2) throw Error("the model's output " + c10::str(out.sizes()) + " is no embedding per image ([N, D])");
    const torch::Tensor e = out.flatten(1);
    if (e.size(1) != concept.size(0))
      throw Error("the reference embedding has " + std::to_string(concept.size(0)) + " values, the model's embedding " +
                  std::to_string(e.size(1)) + " (shape " + c10::str(out.sizes()) + ")");
    // torch.nn.CosineSimilarity's eps, as pytorch-grad-cam uses it
    const auto cos = torch::cosine_similarity(e, concept.to(e.scalar_type()).unsqueeze(0), 1, 1e-8);
    return dissimilar ? -cos : cos;
  });
}

Target finer_target(const Target& main, double alpha, int comparisons) {
  if (main.classes.empty()) throw Error("finercam compares classes: its target must be a class (--class or --top-k)");
  if (main.score != Score::Logit) throw Error("finercam weighs logits: its target's score must be logit, not " + to_string(main.score));
  if (comparisons < 1) throw Error("finercam needs at least one class to compare against");
  Target t = main;
  const auto classes = main.classes;
  const auto select = main.select ? main.select : OutputSelector(default_logits);
  const bool negate = main.counterfactual;
  t.fn = [classes, select, negate, alpha, comparisons](const torch::IValue& output) {
    torch::Tensor z = select(output);
    if (z.dim() != 2) throw Error("class scores must be [N, classes], got shape " + c10::str(z.sizes()));
    const int64_t n = z.size(0), k = z.size(1);
    if (static_cast<int64_t>(classes.size()) != n)
      throw Error("target has " + std::to_string(classes.size()) + " classes for a batch of " + std::to_string(n));
    if (comparisons >= k)
      throw Error("finercam compares against " + std::to_string(comparisons) + " classes but the model has only " + std::to_string(k));
    const auto idx = torch::tensor(classes, torch::kLong).view({n, 1});
    if (idx.min().item<int64_t>() < 0 || idx.max().item<int64_t>() >= k) throw Error("class index out of range for " + std::to_string(k) + " classes");
    const auto zc = z.gather(1, idx);
    // Rivals by |z_j - z_c| on the values, not the graph; the class itself sorts first even on a tie.
    auto distance = (z.detach() - zc.detach()).abs().scatter(1, idx, -1.0);
    const auto rivals = std::get<1>(distance.sort(1)).narrow(1, 1, comparisons);
    const auto p = torch::softmax(z, 1).gather(1, rivals);
    auto y = (p * (zc - alpha * z.gather(1, rivals))).sum(1) / (p.sum(1) + 1e-9);
    return negate ? -y : y;
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
