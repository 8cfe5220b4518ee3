// The bias audit (`lumen audit`): the share of each image's evidence on its object.
#include <lumen/audit.h>
#include <lumen/version.h>
#include <lumen/error.h>
#include <lumen/metrics.h>
#include <lumen/report.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
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

AuditResult audit_dataset(const Explainer& explainer, const Dataset& data, const AuditRun& run) {
  if (run.batch < 1) throw Error("--batch must be at least 1");
  if (!(run.threshold >= 0 && run.threshold <= 1)) throw Error("--threshold must be between 0 and 1");
  check_request(options_of(run, {}));
  AuditResult result;
  for (size_t first = 0; first < data.samples.size(); first += static_cast<size_t>(run.batch)) {
    const size_t last = std::min(data.samples.size(), first + static_cast<size_t>(run.batch));
    std::vector<cv::Mat> imgs;
    std::vector<int64_t> labels;
    std::vector<std::string> names;
    for (size_t i = first; i < last; ++i)
      imgs.push_back(read_image(data.samples[i].path)), labels.push_back(data.samples[i].label), names.push_back(data.samples[i].name);
    const auto ex = explainer.explain(imgs, options_of(run, labels), names);
    for (size_t k = 0; k < ex.size(); ++k) {
      const Sample& s = data.samples[first + k];
      const double share = metrics::energy_inside(ex[k].maps.at(0).normalized, s.boxes, s.label);
      const int64_t predicted = ex[k].top.empty() ? -1 : ex[k].top[0].cls;
      result.rows.push_back({&s, share, predicted, label_of(explainer, s.label), label_of(explainer, predicted), !s.boxes.empty() && share < run.threshold});
    }
    if (run.progress) run.progress("audit", static_cast<int64_t>(last), static_cast<int64_t>(data.samples.size()));
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
