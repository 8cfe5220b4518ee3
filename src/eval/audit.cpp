// The bias audit (`lumen audit`): the share of each image's evidence on its object.
#include <lumen/audit.h>
#include <lumen/version.h>
#include <lumen/error.h>
#include <lumen/metrics.h>
#include <lumen/report.h>

#include "eval/eval_run.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

namespace lumen {
namespace {

std::string label_of(const Explainer& explainer, int64_t c) {
  const auto& labels = explainer.labels();
  return c >= 0 && c < static_cast<int64_t>(labels.size()) ? labels[static_cast<size_t>(c)] : std::to_string(c);
}

ExplainOptions options_of(const AuditRun& run, const std::vector<int64_t>& labels) {
  ExplainOptions opt;
  opt.methods = {run.method};
  opt.layers = run.layers;
  opt.targets = {class_target(labels)};
  return opt;
}

std::string number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

namespace {

void check_audit(const AuditRun& run) {
  if (run.batch < 1) throw Error("--batch must be at least 1");
  if (!(run.threshold >= 0 && run.threshold <= 1)) throw Error("--threshold must be between 0 and 1");
  if (run.shard.count < 1 || run.shard.index < 0 || run.shard.index >= run.shard.count) throw Error("the shard must be K/N with 0 <= K < N");
  check_request(options_of(run, {}));
}

// Measures the images [first, last) that `done` does not hold, handing each record to `keep`.
void measure(const Explainer& explainer, const Dataset& data, const AuditRun& run, size_t first_sample, size_t last_sample,
             const std::set<std::string>& done, const std::function<void(const nlohmann::json&)>& keep) {
  for (size_t first = first_sample; first < last_sample; first += static_cast<size_t>(run.batch)) {
    const size_t last = std::min(last_sample, first + static_cast<size_t>(run.batch));
    // A batch measured in part is explained whole again, with the same companions as in one run.
    std::vector<const Sample*> todo;
    for (size_t i = first; i < last; ++i) todo.push_back(&data.samples[i]);
    if (!std::all_of(todo.begin(), todo.end(), [&](const Sample* s) { return done.count(s->name) > 0; })) {
      std::vector<cv::Mat> imgs;
      std::vector<int64_t> labels;
      std::vector<std::string> names;
      for (const auto* s : todo) imgs.push_back(read_image(s->path)), labels.push_back(s->label), names.push_back(s->name);
      const auto ex = explainer.explain(imgs, options_of(run, labels), names);
      for (size_t k = 0; k < ex.size(); ++k) {
        const Sample& s = *todo[k];
        if (done.count(s.name)) continue;
        keep({{"image", s.name},
              {"label", s.label},
              {"share", metrics::energy_inside(ex[k].maps.at(0).normalized, s.boxes, s.label)},
              {"predicted", ex[k].top.empty() ? -1 : ex[k].top[0].cls}});
      }
    }
    if (run.progress) run.progress("audit", static_cast<int64_t>(last - first_sample), static_cast<int64_t>(last_sample - first_sample));
  }
}

}  // namespace

AuditResult audit_result(const Explainer& explainer, const Dataset& data, const AuditRun& run, const std::vector<nlohmann::json>& records) {
  std::map<std::string, const Sample*> by_name;
  for (const auto& s : data.samples) by_name[s.name] = &s;
  AuditResult result;
  for (const auto& r : records) {
    const auto it = by_name.find(r.at("image").get<std::string>());
    if (it == by_name.end()) throw Error("audit record of " + r.at("image").get<std::string>() + ", which is not in the dataset");
    const Sample& s = *it->second;
    const double share = r.at("share").get<double>();
    const int64_t predicted = r.at("predicted").get<int64_t>();
    result.rows.push_back({&s, share, predicted, label_of(explainer, s.label), label_of(explainer, predicted), !s.boxes.empty() && share < run.threshold});
  }
  std::stable_sort(result.rows.begin(), result.rows.end(), [](const AuditRow& x, const AuditRow& y) { return x.share < y.share; });
  for (const auto& r : result.rows) result.flagged += r.flagged;

  std::map<int64_t, std::vector<double>> per_class;
  for (const auto& r : result.rows)
    if (!r.sample->boxes.empty()) per_class[r.sample->label].push_back(r.share);
  std::ostringstream table;
  table << "| class | images | mean share on object | median | min | flagged (< " << run.threshold << ") |\n|---|---|---|---|---|---|\n";
  result.per_class = nlohmann::json::object();
  for (auto& [c, v] : per_class) {
    std::sort(v.begin(), v.end());
    double mean = 0;
    for (double x : v) mean += x;
    mean /= static_cast<double>(v.size());
    const auto flagged = std::count_if(v.begin(), v.end(), [&](double x) { return x < run.threshold; });
    result.per_class[std::to_string(c)] = {{"label", label_of(explainer, c)}, {"images", v.size()}, {"mean", mean},
                                           {"median", v[v.size() / 2]}, {"min", v.front()}, {"flagged", flagged}};
    char line[256];
    std::snprintf(line, sizeof line, "| %s | %zu | %.3f | %.3f | %.3f | %ld |\n", label_of(explainer, c).c_str(), v.size(), mean,
                  v[v.size() / 2], v.front(), static_cast<long>(flagged));
    table << line;
  }
  result.table = table.str();
  return result;
}

AuditResult audit_dataset(const Explainer& explainer, const Dataset& data, const AuditRun& run) {
  check_audit(run);
  std::vector<nlohmann::json> records;
  const auto [first, last] = shard_range(data.samples.size(), run.shard, static_cast<size_t>(run.batch));
  measure(explainer, data, run, first, last, {}, [&](const nlohmann::json& r) { records.push_back(r); });
  return audit_result(explainer, data, run, records);
}

AuditResult audit_dataset(const Explainer& explainer, const Dataset& data, const AuditRun& run, const std::string& out_dir) {
  check_audit(run);
  namespace fs = std::filesystem;
  nlohmann::json config{{"kind", "audit"},
                        {"model", fs::weakly_canonical(run.model_file).string()},
                        {"card", fs::weakly_canonical(run.card_file).string()},
                        {"data", fs::weakly_canonical(data.root).string()},
                        {"method", run.method},
                        {"layer", run.layers.empty() ? std::string() : run.layers[0]},
                        {"threshold", run.threshold},
                        {"limit", run.limit},
                        {"model_fingerprint", explainer.model().fingerprint()},
                        {"lumen_version", version()}};
  if (!run.shard.whole()) config["shard"] = {{"index", run.shard.index}, {"count", run.shard.count}, {"batch", run.batch}};
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create " + out_dir + ": " + ec.message());
  // The records stay in memory: an audit record is four numbers, where an eval record holds curves.
  std::vector<nlohmann::json> records;
  std::set<std::string> done;
  const auto [first, last] = shard_range(data.samples.size(), run.shard, static_cast<size_t>(run.batch));
  std::set<std::string> mine;
  for (size_t i = first; i < last; ++i) mine.insert(data.samples[i].name);
  detail::RecordsFile file((fs::path(out_dir) / "records.jsonl").string(), config, run.fresh, [&](const nlohmann::json& r) {
    if (r.contains("image") && mine.count(r["image"]) && done.insert(r["image"]).second) records.push_back(r);
  });
  if (!records.empty() && run.note)
    run.note("resuming: " + std::to_string(records.size()) + " image record(s) already in " + out_dir + "/records.jsonl");
  const size_t resumed = records.size();
  measure(explainer, data, run, first, last, done, [&](const nlohmann::json& r) {
    file.append(r);
    records.push_back(r);
  });
  // In dataset order, however the records were resumed: the stable sort by share then breaks ties alike.
  std::map<std::string, size_t> order;
  for (size_t i = first; i < last; ++i) order[data.samples[i].name] = i;
  std::stable_sort(records.begin(), records.end(), [&](const auto& x, const auto& y) { return order.at(x["image"]) < order.at(y["image"]); });
  AuditResult result = audit_result(explainer, data, run, records);
  result.config = config;
  result.resumed = resumed;
  return result;
}

nlohmann::json audit_about(const nlohmann::json& config) {
  return {{"model", config.value("model", "")}, {"data", config.value("data", "")}, {"layer", config.value("layer", "")}};
}

void write_audit_report(OutputDir& out, const Explainer& explainer, const AuditRun& run, const AuditResult& result, const nlohmann::json& about) {
  nlohmann::json images = nlohmann::json::array();
  std::string csv = report::csv_row({"rank", "image", "label", "predicted", "share_on_object", "flagged"});
  for (size_t rank = 0; rank < result.rows.size(); ++rank) {
    const auto& r = result.rows[rank];
    images.push_back({{"rank", rank + 1}, {"image", r.sample->name}, {"label", r.sample->label}, {"predicted", r.predicted},
                      {"share_on_object", r.share}, {"flagged", r.flagged}});
    csv += report::csv_row({std::to_string(rank + 1), r.sample->name, std::to_string(r.sample->label), std::to_string(r.predicted),
                            number(r.share), r.flagged ? "1" : "0"});
  }
  nlohmann::json doc = about;
  doc["lumen_version"] = version();
  doc["method"] = run.method;
  doc["threshold"] = run.threshold;
  doc["measure"] = "share of the normalised map's mass inside the class's boxes";
  doc["per_class"] = result.per_class;
  doc["images"] = images;
  out.write("audit.json", doc.dump(2) + "\n");
  out.write("audit.csv", csv);

  report::Page page("lumen audit: " + run.method);
  page.paragraph("Share of the map's mass inside the boxes of the image's class; flagged below " + number(run.threshold) +
                 ". Green: ground-truth boxes.");
  page.markdown_table(result.table);
  page.heading("Evidence mostly off the object (worst first)");
  for (size_t rank = 0; rank < result.rows.size() && rank < static_cast<size_t>(std::max(0, run.show)); ++rank) {
    const auto& r = result.rows[rank];
    if (!r.flagged) break;
    const cv::Mat img = read_image(r.sample->path);
    cv::Mat pic = overlay(img, explainer.explain({img}, options_of(run, {r.sample->label}), {r.sample->name})[0].maps.at(0).normalized, Colormap::Jet);
    for (const auto& b : r.sample->boxes)
      if (b.label == r.sample->label) cv::rectangle(pic, cv::Point(int(b.x0), int(b.y0)), cv::Point(int(b.x1) - 1, int(b.y1) - 1), {0, 255, 0}, 2);
    const std::string file = "flagged/" + std::to_string(rank + 1) + "." + safe_name(std::filesystem::path(r.sample->name).stem().string()) + ".png";
    out.write(file, encode_png(pic));
    page.figure(file, {"#" + std::to_string(rank + 1) + " " + r.sample->name, r.label + " (predicted " + r.predicted_label + ")",
                       "share of the map on the object " + report::decimals(r.share) + " (flagged below " + report::decimals(run.threshold) + ")"});
  }
  out.write("index.html", page.html());
}

}  // namespace lumen
