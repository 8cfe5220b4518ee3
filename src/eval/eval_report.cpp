// The report of a dataset run: the results as JSON and CSV, the table, and a page with each method's
// best and worst examples.
#include <lumen/error.h>
#include <lumen/version.h>
#include <lumen/evaluate.h>
#include <lumen/output.h>
#include <lumen/report.h>

#include "eval/eval_run.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

namespace lumen {
namespace {

namespace fs = std::filesystem;

// The image with the ground-truth boxes (green) and the map's box (white) over its map.
cv::Mat example_picture(const cv::Mat& image, const Sample& s, const Map& shown) {
  cv::Mat pic = overlay(image, shown.normalized, Colormap::Jet);
  for (const auto& b : s.boxes) cv::rectangle(pic, cv::Point(int(b.x0), int(b.y0)), cv::Point(int(b.x1), int(b.y1)), {0, 255, 0}, 2);
  if (shown.box.valid) draw_box(pic, shown.box, {255, 255, 255}, 1);
  return pic;
}

std::vector<std::string> text_lines(const std::string& text) {
  std::vector<std::string> out;
  std::string line;
  for (char c : text) {
    if (c == '\n') {
      if (!line.empty()) out.push_back(line);
      line.clear();
    } else {
      line += c;
    }
  }
  if (!line.empty()) out.push_back(line);
  return out;
}

std::string class_label(const std::vector<std::string>& labels, int64_t cls) {
  if (cls >= 0 && static_cast<size_t>(cls) < labels.size()) return labels[static_cast<size_t>(cls)];
  return std::to_string(cls);
}

// ImageNet labels list synonyms ("tricycle, trike, velocipede"): the first, for a grid cell (the cell's
// title has them all).
std::string short_label(const std::string& label) {
  const auto comma = label.find(',');
  std::string s = comma == std::string::npos ? label : label.substr(0, comma);
  return s.size() > 28 ? s.substr(0, 27) + "..." : s;
}

// The curves a run keeps per image (deletion, insertion, ROAD's two orders): the mean curve of each
// method with a band of one standard deviation, its score in the legend.
struct CurveKind {
  std::string key, score, score_name, heading, title, x_label, y_label;
  double y_min, y_max;
  bool percentiles;  // x: ROAD's percentiles (else the fraction k / steps)
};

const std::vector<CurveKind> kCurveKinds{
    {"deletion_curve", "deletion_auc", "AUC", "Deletion curves",
     "Deletion: class probability as the most important pixels are removed (lower is better)", "fraction of pixels removed",
     "probability of the true class", 0, 1, false},
    {"insertion_curve", "insertion_auc", "AUC", "Insertion curves",
     "Insertion: class probability as the most important pixels are restored (higher is better)", "fraction of pixels inserted",
     "probability of the true class", 0, 1, false},
    {"road_morf_curve", "road_morf", "mean", "ROAD curves, most relevant first",
     "ROAD MoRF: probability change as the most relevant pixels are imputed (lower is better)", "fraction of pixels imputed",
     "change of the true class's probability", -1, 1, true},
    {"road_lerf_curve", "road_lerf", "mean", "ROAD curves, least relevant first",
     "ROAD LeRF: probability change as the least relevant pixels are imputed (higher is better)", "fraction of pixels imputed",
     "change of the true class's probability", -1, 1, true},
};

void curve_plots(report::Page& page, const EvalResult& result, int steps) {
  for (const auto& kind : kCurveKinds) {
    report::Plot plot;
    plot.title = kind.title;
    plot.x_label = kind.x_label;
    plot.y_label = kind.y_label;
    plot.y_min = kind.y_min, plot.y_max = kind.y_max;
    plot.width = 900, plot.height = 380;
    for (const auto& m : result.methods) {
      const auto& s = result.summary.at(m);
      if (!s.contains(kind.key)) continue;
      report::Series series;
      const auto mean = s[kind.key]["mean"].get<std::vector<double>>(), sd = s[kind.key]["sd"].get<std::vector<double>>();
      series.name = m + " (" + kind.score_name + " " + report::decimals(s.value(kind.score, 0.0), 3) + ")";
      for (size_t i = 0; i < mean.size(); ++i) {
        series.x.push_back(kind.percentiles ? metrics::kRoadPercentiles.at(i) / 100.0 : static_cast<double>(i) / std::max(1, steps));
        series.y.push_back(mean[i]);
        series.low.push_back(std::max(kind.y_min, mean[i] - sd[i]));
        series.high.push_back(std::min(kind.y_max, mean[i] + sd[i]));
      }
      plot.series.push_back(series);
    }
    if (plot.series.empty()) continue;
    page.heading(kind.heading, 2);
    page.svg(report::svg_plot(plot));
    page.paragraph("Mean over the images, with a band of one standard deviation.");
  }
}

// Per class: how often the map localised the object and pointed at it, and how often the class was right.
void per_class_tables(report::Page& page, const EvalResult& result, const std::vector<std::string>& labels) {
  for (const auto& m : result.methods) {
    const auto& s = result.summary.at(m);
    if (!s.contains("per_class") || s["per_class"].empty()) continue;
    std::vector<std::string> header{"class", "images", "top-1 right"};
    const bool loc = s["per_class"].begin()->contains("loc_top1"), pointing = s["per_class"].begin()->contains("pointing");
    if (loc) header.push_back("localised (top-1, IoU >= 0.5)");
    if (pointing) header.push_back("pointing hits");
    std::vector<std::vector<report::Page::Cell>> rows;
    for (const auto& [cls, c] : s["per_class"].items()) {
      const std::string label = class_label(labels, std::stoll(cls));
      std::vector<report::Page::Cell> row{{"", {cls + " " + short_label(label)}, "", label},
                                          {"", {std::to_string(c.value("images", 0))}, "", ""},
                                          {"", {std::to_string(c.value("top1_correct", 0))}, "", ""}};
      if (loc) row.push_back({"", {std::to_string(c.value("loc_top1", 0))}, "", ""});
      if (pointing) row.push_back({"", {std::to_string(c.value("pointing", 0))}, "", ""});
      rows.push_back(row);
    }
    page.details(m + ": per class (" + std::to_string(rows.size()) + " classes)", rows, header);
  }
}

}  // namespace

void write_eval_report(const Explainer& explainer, const Dataset& data, const DatasetRun& run, const EvalResult& result,
                       const std::string& out_dir) {
  // The report is a set: written to a staging folder and moved in together, or not at all (a full disk
  // part-way leaves the earlier report, not a mix).
  OutputDir out(out_dir);
  const nlohmann::json results = {{"config", result.config}, {"methods", result.methods}, {"summary", result.summary},
                                   {"notes", result.notes},   {"seconds", result.seconds}, {"lumen_version", version()}};
  out.write("results.json", results.dump(2) + "\n");
  out.write("results.csv", result.csv);
  out.write("table.md", result.table + "\n" + result.notes);

  report::Page page("lumen eval");
  page.paragraph(std::to_string(result.pairs / std::max<size_t>(1, result.methods.size())) + " images of " + data.root +
                 (run.shard.whole() ? std::string() : " (shard " + run.shard.text() + ")") + "; " + std::to_string(result.pairs) +
                 " image x method pairs. results.json, results.csv and records.jsonl hold every number on this page.");
  // The table: every line of the Markdown table that is a table row; its other lines (the
  // classification error above it) and the notes as paragraphs.
  for (const auto& line : text_lines(result.table))
    if (line[0] != '|') page.paragraph(line);
  page.markdown_table(result.table);
  for (const auto& note : text_lines(result.notes)) page.paragraph(note);
  curve_plots(page, result, run.eval.steps);
  per_class_tables(page, result, explainer.labels());

  // Per method the best and worst images by the run's first per-image metric (example_ranking).
  ExplainOptions base = detail::base_options(run);
  base.boxes = true;  // the examples are drawn with the map's box
  const auto ranking = detail::example_ranking(run.eval);
  const bool by_iou = ranking && run.eval.has("loc");
  const auto& labels = explainer.labels();
  for (const auto& m : ranking ? result.methods : std::vector<std::string>{}) {  // sanity checks alone rank no image
    static const std::map<std::string, double> none;  // a shard with no images has no scores
    const auto found = result.example_scores.find(m);
    const auto& scores = found == result.example_scores.end() ? none : found->second;
    std::vector<std::pair<double, const Sample*>> scored;
    for (const auto& s : data.samples)  // a shard's run has scores for its own images only
      if (const auto it = scores.find(s.name); it != scores.end()) scored.emplace_back(it->second, &s);
    std::stable_sort(scored.begin(), scored.end(), [&](auto& x, auto& y) { return ranking->higher ? x.first > y.first : x.first < y.first; });
    const size_t show = std::min<size_t>(4, scored.size() / 2);
    std::vector<std::pair<double, const Sample*>> picks(scored.begin(), scored.begin() + static_cast<int64_t>(show));
    picks.insert(picks.end(), scored.end() - static_cast<int64_t>(show), scored.end());
    page.heading(m + ": best and worst by " + ranking->title, 2);
    std::vector<std::vector<report::Page::Cell>> rows(2);
    for (size_t i = 0; i < picks.size(); ++i) {
      const Sample& s = *picks[i].second;
      const cv::Mat img = read_image(s.path);
      const auto e = explainer.explain({img}, detail::for_method(base, m, {s.label}), {s.name});
      const std::string file = "examples/" + safe_name(m) + "." + std::to_string(i + 1) + "." + safe_name(fs::path(s.name).stem().string()) + ".png";
      out.write(file, encode_png(example_picture(img, s, e[0].maps.back())));
      report::Page::Cell cell;
      cell.image = cell.link = file;
      const std::string label = class_label(labels, s.label);
      cell.title = s.name + ": " + label;
      cell.lines.push_back(s.name);
      cell.lines.push_back("class " + std::to_string(s.label) + " " + short_label(label));
      const int64_t predicted = e[0].top.empty() ? -1 : e[0].top[0].cls;
      cell.lines.push_back(predicted == s.label ? "right class (top-1)" : "wrong class: predicted " + short_label(class_label(labels, predicted)));
      if (by_iou) cell.lines.push_back("IoU " + report::decimals(std::floor(picks[i].first * 1000) / 1000, 3) + (picks[i].first >= 0.5 ? " (hit, >= 0.5)" : " (miss, < 0.5)"));
      else cell.lines.push_back(ranking->title + " " + report::decimals(picks[i].first, 3));
      rows[i < show ? 0 : 1].push_back(cell);
    }
    rows[0].insert(rows[0].begin(), report::Page::Cell{"", {"best"}, "", ""});
    rows[1].insert(rows[1].begin(), report::Page::Cell{"", {"worst"}, "", ""});
    page.table(rows);
  }
  if (ranking)
    page.paragraph("Green: ground-truth boxes. White: the map's box (" + report::decimals(100 * run.eval.box_threshold, 0) +
                   " % of the map's maximum, largest region). Click a picture for its full size.");
  out.write("index.html", page.html());
  out.commit();
}

}  // namespace lumen
