// A dataset run (`lumen eval`): every metric of every method over a dataset folder (or one shard of
// it), resumable.
#include <lumen/error.h>
#include <lumen/evaluate.h>
#include <lumen/version.h>

#include "core/hash.h"
#include "eval/eval_run.h"

#include <opencv2/imgproc.hpp>

#include <chrono>
#include <future>
#include <memory>
#include <filesystem>

namespace lumen {
namespace {

namespace fs = std::filesystem;

void check_run(const Explainer& explainer, const Dataset& data, const DatasetRun& run) {
  const auto& known = eval_metrics();
  for (const auto& m : run.eval.metrics) {
    if (std::find(known.begin(), known.end(), m) != known.end()) continue;
    std::string available;  // from the list itself, so that a new metric is named where it is added
    for (const auto& k : known) available += (available.empty() ? "" : ", ") + k;
    throw Error("unknown metric '" + m + "' (available: " + available + ")");
  }
  if (run.methods.empty()) throw Error("no method given");
  for (const auto& m : run.methods) check_settings({m}, Settings());
  if (run.layers.size() > 1 && run.aggregate.empty())
    throw Error("several layers need --aggregate (mean, max, product): eval scores one map per image");
  if (run.batch < 1) throw Error("--batch must be at least 1");
  if (run.shard.count < 1 || run.shard.index < 0 || run.shard.index >= run.shard.count) throw Error("the shard must be K/N with 0 <= K < N");
  for (const auto& l : run.layers) explainer.model().check_layer(l);
  const auto classes = explainer.labels().size();
  for (const auto& s : data.samples)
    if (classes && s.label >= static_cast<int64_t>(classes))
      throw Error("dataset label " + std::to_string(s.label) + " of " + s.name + " is out of range for the model's " + std::to_string(classes) +
                  " classes");
}

nlohmann::json config_of(const Explainer& explainer, const Dataset& data, const DatasetRun& run) {
  std::string layer;
  for (const auto& l : run.layers) layer += (layer.empty() ? "" : ",") + l;
  nlohmann::json config{{"model", fs::weakly_canonical(run.model_file).string()}, {"card", fs::weakly_canonical(run.card_file).string()},
                        {"data", fs::weakly_canonical(data.root).string()},       {"layer", layer},
                        {"aggregate", run.aggregate},                             {"metrics", run.eval.metrics},
                        {"steps", run.eval.steps},                                {"limit", run.limit},
                        {"seed", run.seed},
                        // Shards merge only with shards of the same model file and the same lumen.
                        {"model_fingerprint", explainer.model().fingerprint()},  {"lumen_version", version()}};
  // Settings every method shares that change the maps: recorded when not the default, so that a run
  // resumed with another choice is refused.
  if (run.shared.compat != Compat::Papers) config["compat"] = "pytorch-grad-cam";
  if (run.shared.aug_smooth) config["aug_smooth"] = true;
  if (!run.shared.strict_nonlinearities) config["nonlinearity"] = "plain";
  // A shard also names its batch (which images it holds) and its methods (the merge needs their order,
  // and every shard must have run them).
  if (!run.shard.whole())
    config["shard"] = {{"index", run.shard.index}, {"count", run.shard.count}, {"batch", run.batch}, {"methods", run.methods}};
  return config;
}

// What the explanation of an image is for sensitivity-max: a pixel method's per-channel attribution,
// else the map as the formula gives it (Captum compares attributions, not normalised pictures).
torch::Tensor explanation_of(const Map& m) {
  const cv::Mat& e = m.attribution.empty() ? m.raw : m.attribution;
  const cv::Mat c = e.isContinuous() ? e : e.clone();
  return torch::from_blob(const_cast<float*>(c.ptr<float>()), {static_cast<int64_t>(c.total() * c.channels())}, torch::kFloat32).clone();
}

// Captum's sensitivity_max of one image's map: the method explains the image's perturbed copies again,
// in one batch, for the same class. Seeded by the image's name, like ROAD and infidelity.
double sensitivity(const Explainer& explainer, const ExplainOptions& base, const std::string& method, const Sample& sample, const Map& map,
                   const torch::Tensor& x, const EvalOptions& o) {
  const auto explain = [&](const torch::Tensor& rows) {
    const auto opt = detail::for_method(base, method, std::vector<int64_t>(static_cast<size_t>(rows.size(0)), sample.label));
    std::vector<torch::Tensor> out;
    for (const auto& image : explainer.explain_tensor(rows, opt)) out.push_back(explanation_of(image.maps.back()));
    return torch::stack(out);
  };
  return metrics::sensitivity_max(x, explanation_of(map), o.sensitivity_radius, o.sensitivity_samples, detail::fnv1a(sample.name) + 2, explain);
}

// ARCC's coherency of one image's map: the method explains the model input multiplied by its own
// normalised map (at the input's size) again, for the same class; pytorch-grad-cam's Coherency.
double arcc_coherency(const Explainer& explainer, const ExplainOptions& base, const std::string& method, const Sample& sample, const Map& map,
                      const torch::Tensor& x) {
  cv::Mat m;
  cv::resize(map.normalized, m, cv::Size(static_cast<int>(x.size(2)), static_cast<int>(x.size(1))), 0, 0, cv::INTER_LINEAR);
  const auto mt = torch::from_blob(m.data, {1, m.rows, m.cols}, torch::kFloat32).clone();
  const auto again = explainer.explain_tensor((x * mt).unsqueeze(0), detail::for_method(base, method, {sample.label}));
  return metrics::coherency(m, again.at(0).maps.back().normalized);
}

// One batch's images, decoded and made into the model's input.
struct Loaded {
  std::vector<const Sample*> samples;
  std::vector<cv::Mat> images;
  torch::Tensor inputs;
};

Loaded load_batch(const Explainer& explainer, const Dataset& data, size_t first, size_t last) {
  Loaded b;
  for (size_t i = first; i < last; ++i) b.samples.push_back(&data.samples[i]);
  for (const auto* s : b.samples) b.images.push_back(read_image(s->path));
  b.inputs = to_batch(b.images, explainer.preprocess());
  return b;
}

// One batch of images: each method explains (on this thread) the images it has not measured yet. What
// comes back measures the maps and hands each record, in order, to its argument as soon as it is
// measured; with only map metrics (loc, pointing) it reads no model, so it may run on another thread
// while the next batch is explained.
using Keep = std::function<void(const nlohmann::json&)>;
using Measurement = std::function<void(const Keep&)>;

Measurement explain_batch(const Explainer& explainer, std::shared_ptr<const Loaded> batch, const DatasetRun& run, const ExplainOptions& base,
                          const detail::EvalTally& tally, size_t total) {
  struct Explained {
    std::string method;
    std::vector<ImageExplanation> images;
    std::vector<bool> measured;  // before this run
    std::vector<double> sensitivity;  // per image, when the run measures it
    std::vector<double> coherency;    // per image, when the run measures ARCC
  };
  std::vector<Explained> explained;
  const auto& samples = batch->samples;
  for (const auto& m : run.methods) {
    // A batch that was measured in part (a run killed part-way) is explained whole again: each image is
    // then explained with the same companions as in an uninterrupted run, so its numbers are the same.
    if (std::all_of(samples.begin(), samples.end(), [&](const Sample* s) { return tally.has(m, s->name); })) continue;
    if (run.progress) run.progress("eval " + m, static_cast<int64_t>(tally.images_done()), static_cast<int64_t>(total));
    std::vector<int64_t> labels;
    std::vector<std::string> names;
    for (const auto* s : samples) labels.push_back(s->label), names.push_back(s->name);
    Explained e{m, explainer.explain(batch->images, detail::for_method(base, m, labels), names), {}, {}, {}};
    for (const auto* s : samples) e.measured.push_back(tally.has(m, s->name));
    if (run.eval.has("sensitivity"))
      for (size_t k = 0; k < samples.size(); ++k)
        e.sensitivity.push_back(e.measured[k] ? 0.0 : sensitivity(explainer, base, m, *samples[k], e.images[k].maps.back(), batch->inputs[static_cast<int64_t>(k)], run.eval));
    if (run.eval.has("arcc"))
      for (size_t k = 0; k < samples.size(); ++k)
        e.coherency.push_back(e.measured[k] ? 0.0 : arcc_coherency(explainer, base, m, *samples[k], e.images[k].maps.back(), batch->inputs[static_cast<int64_t>(k)]));
    explained.push_back(std::move(e));
  }
  return [&explainer, &run, batch, explained = std::move(explained)](const Keep& keep) {
    for (const auto& e : explained)
      for (size_t k = 0; k < batch->samples.size(); ++k) {
        if (e.measured[k]) continue;
        // With --aggregate the combined map comes last; otherwise there is one map.
        auto r = measure_image(explainer.model(), explainer.preprocess(), *batch->samples[k], e.images[k], e.images[k].maps.back(),
                               batch->inputs[static_cast<int64_t>(k)], run.eval);
        r["method"] = e.method;
        if (!e.sensitivity.empty()) r["sensitivity"] = e.sensitivity[k];
        if (!e.coherency.empty()) {
          r["arcc_coherency"] = e.coherency[k];
          r["arcc"] = metrics::arcc(e.coherency[k], r.at("arcc_complexity").get<double>(), r.at("arcc_road").get<double>());
        }
        keep(r);
      }
  };
}

}  // namespace

namespace detail {

ExplainOptions base_options(const DatasetRun& run) {
  ExplainOptions base;
  base.layers = run.layers;
  base.aggregate = run.aggregate;
  base.box_threshold = run.eval.box_threshold;
  base.shared = run.shared;
  base.settings.set("seed", static_cast<int64_t>(run.seed));
  base.boxes = run.eval.has("loc");  // the paper's box is measured by loc alone
  return base;
}

ExplainOptions for_method(const ExplainOptions& base, const std::string& method, const std::vector<int64_t>& labels) {
  ExplainOptions opt = base;
  opt.methods = {method};
  opt.settings = taken_by({method}, base.settings);
  opt.targets = {class_target(labels)};
  opt.targets[0].name = "truth";
  return opt;
}

std::optional<ExampleRanking> example_ranking(const EvalOptions& eval) {
  const auto field = [](const char* key) { return [key](const nlohmann::json& r) { return r.value(key, 0.0); }; };
  const ExampleRanking causal{"insertion - deletion", [](const nlohmann::json& r) { return r.value("insertion", 0.0) - r.value("deletion", 0.0); }};
  // The metrics of one image, in eval_metrics() order; deletion and insertion rank together.
  const std::vector<std::pair<std::string, ExampleRanking>> rankings{
      {"loc", {"IoU of the paper's box", field("iou"), true}},
      {"pointing", {"pointing hit", [](const nlohmann::json& r) { return r.value("pointing", false) ? 1.0 : 0.0; }, true}},
      {"deletion", causal},
      {"insertion", causal},
      {"drop", {"average drop", field("drop"), false}},
      {"cam-mult", {"confidence change of the input times the map", field("cam_mult"), true}},
      {"infidelity", {"infidelity", field("infidelity"), false}},
      {"road", {"ROAD", field("road"), true}},
      {"arcc", {"ARCC", field("arcc"), true}},
      {"sensitivity", {"max-sensitivity", field("sensitivity"), false}},
  };
  // Pointing's hit or miss ties most images; a graded metric of the run ranks better.
  for (const auto& [metric, ranking] : rankings)
    if (metric != "pointing" && eval.has(metric)) return ranking;
  if (eval.has("pointing")) return rankings[1].second;
  return std::nullopt;
}

EvalTally::EvalTally(const DatasetRun& run) : methods_(run.methods), ranking_(example_ranking(run.eval)) {
  for (const auto& m : run.methods) summaries_.emplace(m, Summary(run.eval));
}

void EvalTally::take(const nlohmann::json& r) {
  const std::string m = r["method"];
  if (!summaries_.count(m)) return;
  if (r.contains("sanity")) {
    if (sanity_done_.insert(sanity_key(r)).second) sanity_.push_back(r);
    return;
  }
  const std::string image = r["image"];
  if (!done_[m].insert(image).second) return;
  summaries_.at(m).add(r);
  if (ranking_) example_scores_[m][image] = ranking_->value(r);
}

bool EvalTally::has(const std::string& method, const std::string& image) const {
  const auto it = done_.find(method);
  return it != done_.end() && it->second.count(image);
}

size_t EvalTally::images_done() const {
  size_t n = 0;
  for (const auto& [m, images] : done_) n += images.size();
  return n;
}

void EvalTally::finish(EvalResult& result, const EvalOptions& options, size_t images) {
  result.methods = methods_;
  result.summary = nlohmann::json::object();
  for (const auto& r : sanity_) summaries_.at(r["method"]).add_sanity(r);
  for (const auto& m : methods_) result.summary[m] = summaries_.at(m).result();
  const auto table = summary_table(result.summary, methods_, options, images);
  result.table = table.markdown;
  result.csv = table.csv;
  result.notes = table.notes;
  result.example_scores = std::move(example_scores_);
}

}  // namespace detail

const std::vector<std::string>& eval_metrics() {
  static const std::vector<std::string> all{"loc",        "pointing", "deletion",    "insertion", "drop",  "cam-mult",
                                            "infidelity", "road",     "arcc",       "sensitivity", "sanity"};
  return all;
}

EvalResult evaluate_dataset(const Explainer& explainer, const Dataset& data, const DatasetRun& run, const std::string& out_dir) {
  check_run(explainer, data, run);
  EvalResult result;
  result.config = config_of(explainer, data, run);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create " + out_dir + ": " + ec.message());

  detail::EvalTally tally(run);
  detail::RecordsFile records((fs::path(out_dir) / "records.jsonl").string(), result.config, run.fresh,
                              [&](const nlohmann::json& r) { tally.take(r); });
  result.resumed = tally.images_done();  // image x method pairs, despite the name
  if (tally.images_done() && run.note)
    run.note("resuming: " + std::to_string(tally.images_done()) + " image record(s) already in " + out_dir + "/records.jsonl");
  auto keep = [&](const nlohmann::json& r) {
    records.append(r);
    tally.take(r);
  };

  const ExplainOptions base = detail::base_options(run);
  const auto start = std::chrono::steady_clock::now();
  // Not a structured binding: lambdas below capture the ends, which C++17 does not allow of bindings.
  const auto range = shard_range(data.samples.size(), run.shard, static_cast<size_t>(run.batch));
  const size_t first_sample = range.first, last_sample = range.second;
  const size_t total = (last_sample - first_sample) * run.methods.size();
  if (first_sample == last_sample && run.note)
    run.note("shard " + run.shard.text() + " holds no images: " + std::to_string(data.samples.size()) + " images make " +
             std::to_string((data.samples.size() + static_cast<size_t>(run.batch) - 1) / static_cast<size_t>(run.batch)) +
             " batch(es) of --batch " + std::to_string(run.batch) + ", fewer than the shards");
  // A bounded pipeline of two stages: the next batch is decoded and preprocessed on a second thread
  // while this one is explained and measured (run.overlap; one batch ahead, so memory stays flat).
  const size_t step = static_cast<size_t>(run.batch);
  const auto load = [&](size_t first) { return load_batch(explainer, data, first, std::min(last_sample, first + step)); };
  // A third stage with map metrics only: a batch's maps are measured on a second thread while the next
  // batch is explained; its records are kept, in order, before the next batch's.
  const bool causal = run.eval.runs_model();
  std::future<Loaded> ahead;
  std::future<std::vector<nlohmann::json>> measuring;
  const auto settle = [&] {
    if (measuring.valid())
      for (const auto& r : measuring.get()) keep(r);
  };
  for (size_t first = first_sample; first < last_sample; first += step) {
    auto batch = std::make_shared<const Loaded>(ahead.valid() ? ahead.get() : load(first));
    if (run.overlap && first + step < last_sample) ahead = std::async(std::launch::async, load, first + step);
    Measurement measure;
    try {
      measure = explain_batch(explainer, batch, run, base, tally, total);
    } catch (...) {
      settle();  // an interrupted run keeps the batch measured so far
      throw;
    }
    settle();
    if (run.overlap && !causal) {
      measuring = std::async(std::launch::async, [measure] {
        std::vector<nlohmann::json> records;
        measure([&](const nlohmann::json& r) { records.push_back(r); });
        return records;
      });
    } else {
      measure(keep);
    }
  }
  settle();
  if (run.progress) run.progress("eval", static_cast<int64_t>(total), static_cast<int64_t>(total));
  // The cascade runs on the dataset's first images, once: in the shard that holds them.
  if (run.eval.has("sanity") && run.shard.index == 0) detail::sanity_cascade(explainer, data, run, base, tally.sanity_done(), keep);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  tally.finish(result, run.eval, last_sample - first_sample);
  result.pairs = total;
  return result;
}

}  // namespace lumen
