// Plan: the union of what the requested methods need decides which passes run. Everything that can be
// refused without a forward pass is refused here.
#include <lumen/error.h>
#include <lumen/runtime.h>

#include "core/side_by_side.h"
#include "explain/pipeline.h"

#include <ATen/Context.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

namespace lumen {

namespace {
// The same method, layer or class twice would give two maps under one name: refused, not guessed at.
template <typename T>
void once_each(const std::vector<T>& items, const std::string& what) {
  std::set<T> seen;
  for (const auto& item : items) {
    if (!seen.insert(item).second) {
      std::ostringstream name;
      name << item;
      throw Error(what + " '" + name.str() + "' is given twice");
    }
  }
}
}  // namespace

void check_request(const ExplainOptions& opt) {
  if (opt.methods.empty()) throw Error("no method given");
  once_each(opt.methods, "method");
  once_each(opt.layers, "layer");
  once_each(opt.classes, "class");
  check_settings(opt.methods, opt.settings);
  if (opt.targets.empty() && opt.classes.empty() && opt.top_k < 1) throw Error("top-k must be at least 1");
  if (!opt.aggregate.empty()) {
    static const std::set<std::string> modes{"mean", "max", "product", "weighted"};
    if (!modes.count(opt.aggregate)) throw Error("unknown aggregation '" + opt.aggregate + "' (mean, max, product, weighted)");
    if (opt.layers.size() < 2) throw Error("--aggregate needs at least two layers");
    if (opt.aggregate == "weighted") {
      if (opt.layer_weights.size() != opt.layers.size())
        throw Error("--aggregate weighted needs one weight per layer (" + std::to_string(opt.layers.size()) + ")");
      double sum = 0;
      for (float v : opt.layer_weights) {
        if (!(v >= 0) || !std::isfinite(v)) throw Error("layer weights must be non-negative");
        sum += v;
      }
      if (!(sum > 0)) throw Error("layer weights sum to zero");
    }
  }
  const size_t targets = !opt.targets.empty() ? opt.targets.size() : !opt.classes.empty() ? opt.classes.size() : static_cast<size_t>(opt.top_k);
  if (opt.contrast && targets < 2) throw Error("--contrast needs at least two targets (use --top-k 2 or more, or several classes)");
  if (!(opt.box_threshold >= 0 && opt.box_threshold <= 1)) throw Error("--box-threshold must be between 0 and 1");
}

nlohmann::json settings_json(const ExplainOptions& opt) {
  nlohmann::json j = effective_settings(opt.settings);
  j["compat"] = opt.shared.compat == Compat::PytorchGradCam ? "pytorch-grad-cam" : "papers";
  j["aug_smooth"] = opt.shared.aug_smooth;
  j["nonlinearity"] = opt.shared.strict_nonlinearities ? "strict" : "plain";
  return j;
}

}  // namespace lumen

namespace lumen::detail {
namespace {

// Rows per extra pass when the caller left it to lumen: the preferred count (small batches were the
// fastest on CPU, see SharedSettings::rows_per_pass), fewer when that many rows of the heaviest
// requested pass would not fit the budget. A row of a forward pass holds about three of its largest
// layer output at once (an op's input and output and a skip connection); a row that records gradients
// also keeps every leaf module's output for the backward.
int rows_per_pass(const Model& model, const std::vector<const Method*>& methods, const torch::Tensor& batch, int64_t budget_mib) {
  constexpr int kPreferred = 8;
  auto heaviest = ExtraPasses::None;
  for (const auto* m : methods) heaviest = std::max(heaviest, m->extra_passes);
  if (heaviest == ExtraPasses::None) return kPreferred;
  auto shape = batch.sizes().vec();
  shape[0] = 1;
  const auto bytes = model.activation_bytes(shape);
  const double row = static_cast<double>(batch[0].numel() * 4 + 3 * bytes.largest + (heaviest == ExtraPasses::Gradient ? bytes.leaves : 0));
  const double budget = (budget_mib > 0 ? static_cast<double>(budget_mib) : available_mib() / 4) * 1024 * 1024;
  if (!(budget > 0) || !(row > 0)) return kPreferred;
  return static_cast<int>(std::clamp(std::floor(budget / row), 1.0, static_cast<double>(kPreferred)));
}

// The passes `methods` need from the shared forward and backward.
void add_needs(Plan& p, const Model& model) {
  for (const auto* m : p.methods) {
    p.layer_gradients |= m->needs.layer_gradients;
    for (auto r : m->needs.input_gradients) {
      if (r == BackwardRule::Plain) p.plain_input = true;
      else p.rule_inputs.insert(r);
    }
    p.rule_layers.insert(m->needs.layer_rule_gradients.begin(), m->needs.layer_rule_gradients.end());
    if (m->needs.model_layers)
      for (auto& l : m->needs.model_layers(model)) p.model_layers.push_back(std::move(l));
    p.attention = std::max(p.attention, m->needs.attention);
  }
  p.rules = p.rule_inputs;
  p.rules.insert(p.rule_layers.begin(), p.rule_layers.end());
  // The rule graph's forward gives the plain values, so it can stand in for the plain forward when no
  // plain gradient is taken and it captures whatever layers are asked for.
  p.rule_only = !p.plain_input && !p.layer_gradients && p.model_layers.empty() && p.rules.size() == 1 &&
                p.attention == AttentionNeed::None && (p.layers.empty() || p.rule_layers.count(*p.rules.begin()) > 0);
}

// A 3-D network's volumes: only the methods that declare how they read them, and none of the steps
// that are defined on 2-D pictures.
void check_volumes(const Plan& p, const ExplainOptions& opt) {
  std::string takes;
  for (const auto& m : methods())
    if (m.volumes) takes += (takes.empty() ? "" : ", ") + m.name;
  for (const Method* m : with_used_methods(p.methods, p.settings))
    if (!m->volumes)
      throw Error("method '" + m->name + "' does not take a 3-D network's [N,C,D,H,W] volumes; the methods that do: " + takes);
  if (!opt.aggregate.empty()) throw Error("--aggregate is not defined for volumes (layers of a 3-D network)");
  if (opt.shared.aug_smooth) throw Error("--aug-smooth flips and rescales 2-D images; it is not defined for volumes");
  if (opt.shared.compat == Compat::PytorchGradCam)
    throw Error("--compat pytorch-grad-cam reproduces that library's 2-D resizing; volumes are upsampled trilinearly (leave --compat off)");
}

}  // namespace

bool Plan::backward() const {
  return layer_gradients || plain_input || rule_only || !rules.empty() || !model_layers.empty() ||
         attention == AttentionNeed::MapsAndGradients;
}

std::vector<std::string> Plan::captured() const {
  std::vector<std::string> all = layers;
  all.insert(all.end(), model_layers.begin(), model_layers.end());
  return all;
}

Plan make_plan(const Model& model, const ExplainOptions& opt, const torch::Tensor& batch) {
  if ((batch.dim() != 4 && batch.dim() != 5) || batch.size(0) < 1)
    throw Error("model input must be a non-empty [N,C,H,W] batch (or [N,C,D,H,W] for a 3-D network)");
  check_request(opt);
  Plan p;
  for (const auto& name : opt.methods) p.methods.push_back(&find_method(name));
  p.settings = resolve_settings(p.methods, opt.settings);
  if (batch.dim() == 5) check_volumes(p, opt);
  const bool per_layer = std::any_of(p.methods.begin(), p.methods.end(), [](const Method* m) { return m->per_layer(); });
  if (per_layer && opt.layers.empty()) throw Error("no layer given to explain (use --layer; `lumen layers MODEL` lists them)");
  for (const auto& l : opt.layers) model.check_layer(l);
  if (per_layer) p.layers = opt.layers;
  if (!opt.aggregate.empty() && p.layers.size() < 2) throw Error("--aggregate needs at least two layers of a method that works at a layer");
  add_needs(p, model);
  p.tokens = opt.tokens;
  if (!p.layers.empty() || p.attention != AttentionNeed::None) p.patch_stride = model.patch_stride();
  p.shared = opt.shared;
  if (p.shared.rows_per_pass <= 0)
    p.shared.rows_per_pass = rows_per_pass(model, with_used_methods(p.methods, p.settings), batch, p.shared.memory_budget_mib);
  if (model.images_per_forward() > 0) p.shared.rows_per_pass = static_cast<int>(model.images_per_forward());
  return p;
}

// Groups of rows side by side, each on one thread (core/side_by_side.h says why): on two cores,
// Grad-CAM of MobileNetV2 at batch 8 took 53-55 ms instead of 69-73. Every thread needs a row of its own
// (with more threads than rows, one group each would leave threads idle that intra-op parallelism
// uses). Not done:
//  - for methods with extra passes: they already run their passes side by side (passes.cpp), and two
//    groups would each hold a pass's rows at once, twice the memory the plan sized the passes for;
//  - for --deterministic: its maps must not depend on the thread count, and groups change the size of
//    the batches its matrix products see;
//  - for detection targets given as boxes: they hold one list per row of the whole batch.
std::vector<std::pair<int64_t, int64_t>> row_groups(const Plan& plan, const ExplainOptions& options, int64_t rows) {
  const int64_t threads = side_by_side_threads();
  bool apart = threads >= 2 && rows >= threads && at::globalContext().userEnabledMkldnn();
  for (const Method* m : with_used_methods(plan.methods, plan.settings)) apart = apart && m->extra_passes == ExtraPasses::None;
  for (const auto& t : options.targets) apart = apart && t.boxes.empty();
  if (!apart) return {{0, rows}};
  std::vector<std::pair<int64_t, int64_t>> groups;
  for (int64_t g = 0; g < threads; ++g) groups.emplace_back(rows * g / threads, rows * (g + 1) / threads);
  return groups;
}

Plan plan_alone(const Model& model, const Method& method, const Plan& outer) {
  Plan p;
  p.methods = {&method};
  p.settings = outer.settings;
  p.shared = outer.shared;
  p.tokens = outer.tokens;
  p.patch_stride = outer.patch_stride;
  if (method.per_layer()) p.layers = outer.layers;
  add_needs(p, model);
  return p;
}

}  // namespace lumen::detail
