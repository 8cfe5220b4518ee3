// A dataset run (`lumen eval`): every metric of every method over a dataset folder, resumable.
#include <lumen/error.h>
#include <lumen/evaluate.h>

#include "eval/eval_run.h"

#include <chrono>
#include <filesystem>

namespace lumen {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kMetrics{"loc", "pointing", "deletion", "insertion", "drop", "sanity"};

void check_run(const Explainer& explainer, const Dataset& data, const DatasetRun& run) {
  for (const auto& m : run.eval.metrics)
    if (std::find(kMetrics.begin(), kMetrics.end(), m) == kMetrics.end())
      throw Error("unknown metric '" + m + "' (available: loc, pointing, deletion, insertion, drop, sanity)");
  if (run.methods.empty()) throw Error("no method given");
  for (const auto& m : run.methods) check_settings({m}, Settings());
  if (run.layers.size() > 1 && run.aggregate.empty())
    throw Error("several layers need --aggregate (mean, max, product): eval scores one map per image");
  if (run.batch < 1) throw Error("--batch must be at least 1");
  for (const auto& l : run.layers) explainer.model().check_layer(l);
  const auto classes = explainer.labels().size();
  for (const auto& s : data.samples)
    if (classes && s.label >= static_cast<int64_t>(classes))
      throw Error("dataset label " + std::to_string(s.label) + " of " + s.name + " is out of range for the model's " + std::to_string(classes) +
                  " classes");
}

nlohmann::json config_of(const Dataset& data, const DatasetRun& run) {
  std::string layer;
  for (const auto& l : run.layers) layer += (layer.empty() ? "" : ",") + l;
  return {{"model", fs::weakly_canonical(run.model_file).string()}, {"card", fs::weakly_canonical(run.card_file).string()},
          {"data", fs::weakly_canonical(data.root).string()},       {"layer", layer},
          {"aggregate", run.aggregate},                             {"metrics", run.eval.metrics},
          {"steps", run.eval.steps},                                {"limit", run.limit},
          {"seed", run.seed}};
}

// Settings every method shares that change the maps: recorded when not the default, so that a run
// resumed with another choice is refused.
nlohmann::json with_shared(nlohmann::json config, const SharedSettings& shared) {
  if (shared.compat != Compat::Papers) config["compat"] = "pytorch-grad-cam";
  if (shared.aug_smooth) config["aug_smooth"] = true;
  if (!shared.strict_nonlinearities) config["nonlinearity"] = "plain";
  return config;
}

// The explanation options every method of the run shares; each request adds its method and targets.
ExplainOptions base_options(const DatasetRun& run) {
  ExplainOptions base;
  base.layers = run.layers;
  base.aggregate = run.aggregate;
  base.box_threshold = run.eval.box_threshold;
  base.shared = run.shared;
  base.settings.set("seed", static_cast<int64_t>(run.seed));
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

// What the run knows so far, from earlier records and new ones alike. Per method: the images done, the
// table's counts and sums, and the score that picks the report's examples. The records themselves live
// only in records.jsonl, so memory stays flat.
struct Tally {
  std::map<std::string, std::set<std::string>> done;
  std::map<std::string, Summary> summaries;
  std::vector<nlohmann::json> sanity;  // a few per method and cascade step
  std::set<std::string> sanity_done;
  std::map<std::string, std::map<std::string, double>> example_scores;

  explicit Tally(const DatasetRun& run) {
    for (const auto& m : run.methods) summaries.emplace(m, Summary(run.eval));
  }
  void take(const nlohmann::json& r) {
    const std::string m = r["method"];
    if (!summaries.count(m)) return;
    if (r.contains("sanity")) {
      if (sanity_done.insert(detail::sanity_key(r)).second) sanity.push_back(r);
      return;
    }
    const std::string image = r["image"];
    if (!done[m].insert(image).second) return;
    summaries.at(m).add(r);
    example_scores[m][image] = r.contains("iou") ? r["iou"].get<double>() : r.value("insertion", 0.0) - r.value("deletion", 0.0);
  }
  size_t images_done() const {
    size_t n = 0;
    for (const auto& [m, images] : done) n += images.size();
    return n;
  }
};

// One batch of images: each method explains the images it has not measured yet, and each image's
// record is handed to `keep` as soon as it is measured.
void measure_batch(const Explainer& explainer, const std::vector<const Sample*>& samples, const DatasetRun& run, const ExplainOptions& base,
                   Tally& tally, const std::function<void(const nlohmann::json&)>& keep, size_t total) {
  std::vector<cv::Mat> images;
  for (const auto* s : samples) images.push_back(read_image(s->path));
  const auto inputs = to_batch(images, explainer.preprocess());
  for (const auto& m : run.methods) {
    std::vector<size_t> rows;
    for (size_t i = 0; i < samples.size(); ++i)
      if (!tally.done[m].count(samples[i]->name)) rows.push_back(i);
    if (rows.empty()) continue;
    if (run.progress) run.progress("eval " + m, static_cast<int64_t>(tally.images_done()), static_cast<int64_t>(total));
    std::vector<cv::Mat> imgs;
    std::vector<int64_t> labels;
    std::vector<std::string> names;
    for (size_t i : rows) imgs.push_back(images[i]), labels.push_back(samples[i]->label), names.push_back(samples[i]->name);
    const auto explained = explainer.explain(imgs, for_method(base, m, labels), names);
    for (size_t k = 0; k < rows.size(); ++k) {
      // With --aggregate the combined map comes last; otherwise there is one map.
      auto r = measure_image(explainer.model(), explainer.preprocess(), *samples[rows[k]], explained[k], explained[k].maps.back(),
                             inputs[static_cast<int64_t>(rows[k])], run.eval);
      r["method"] = m;
      keep(r);
    }
  }
}

}  // namespace

EvalResult evaluate_dataset(const Explainer& explainer, const Dataset& data, const DatasetRun& run, const std::string& out_dir) {
  check_run(explainer, data, run);
  EvalResult result;
  result.methods = run.methods;
  result.config = with_shared(config_of(data, run), run.shared);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create " + out_dir + ": " + ec.message());

  Tally tally(run);
  detail::RecordsFile records((fs::path(out_dir) / "records.jsonl").string(), result.config, run.fresh,
                              [&](const nlohmann::json& r) { tally.take(r); });
  result.resumed = tally.images_done();  // image x method pairs, despite the name
  if (tally.images_done() && run.note)
    run.note("resuming: " + std::to_string(tally.images_done()) + " image record(s) already in " + out_dir + "/records.jsonl");
  auto keep = [&](const nlohmann::json& r) {
    records.append(r);
    tally.take(r);
  };

  const ExplainOptions base = base_options(run);
  const auto start = std::chrono::steady_clock::now();
  const size_t total = data.samples.size() * run.methods.size();
  for (size_t first = 0; first < data.samples.size(); first += static_cast<size_t>(run.batch)) {
    std::vector<const Sample*> samples;
    for (size_t i = first; i < std::min(data.samples.size(), first + static_cast<size_t>(run.batch)); ++i) samples.push_back(&data.samples[i]);
    measure_batch(explainer, samples, run, base, tally, keep, total);
  }
  if (run.progress) run.progress("eval", static_cast<int64_t>(total), static_cast<int64_t>(total));
  if (run.eval.has("sanity")) detail::sanity_cascade(explainer, data, run, base, tally.sanity_done, keep);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  result.summary = nlohmann::json::object();
  for (const auto& r : tally.sanity) tally.summaries.at(r["method"]).add_sanity(r);
  for (const auto& m : run.methods) result.summary[m] = tally.summaries.at(m).result();
  const auto table = detail::summary_table(result.summary, run.methods, run.eval, data.samples.size());
  result.table = table.markdown;
  result.csv = table.csv;
  result.notes = table.notes;
  result.example_scores = std::move(tally.example_scores);
  result.pairs = total;
  return result;
}

}  // namespace lumen
