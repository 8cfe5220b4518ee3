// The report of a dataset run: the results as JSON and CSV, the table, and a page with each method's
// best and worst examples.
#include <lumen/error.h>
#include <lumen/version.h>
#include <lumen/evaluate.h>
#include <lumen/output.h>
#include <lumen/report.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <filesystem>

namespace lumen {
namespace {

namespace fs = std::filesystem;

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// The image with the ground-truth boxes (green) and the map's box (white) over its map.
cv::Mat example_picture(const cv::Mat& image, const Sample& s, const Map& shown) {
  cv::Mat pic = overlay(image, shown.normalized, Colormap::Jet);
  for (const auto& b : s.boxes) cv::rectangle(pic, cv::Point(int(b.x0), int(b.y0)), cv::Point(int(b.x1), int(b.y1)), {0, 255, 0}, 1);
  if (shown.box.valid) draw_box(pic, shown.box, {255, 255, 255}, 1);
  return pic;
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

  // Per method the best and worst images by IoU of the paper's box (or by insertion - deletion).
  report::Page page("lumen eval");
  page.preformatted(result.table + "\n" + result.notes);
  ExplainOptions base;
  base.layers = run.layers;
  base.aggregate = run.aggregate;
  base.box_threshold = run.eval.box_threshold;
  base.shared = run.shared;
  for (const auto& m : result.methods) {
    const auto& scores = result.example_scores.at(m);
    std::vector<std::pair<double, const Sample*>> scored;
    for (const auto& s : data.samples) scored.emplace_back(scores.at(s.name), &s);
    std::stable_sort(scored.begin(), scored.end(), [](auto& x, auto& y) { return x.first > y.first; });
    const size_t show = std::min<size_t>(4, scored.size() / 2);
    std::vector<std::pair<double, const Sample*>> picks(scored.begin(), scored.begin() + static_cast<int64_t>(show));
    picks.insert(picks.end(), scored.end() - static_cast<int64_t>(show), scored.end());
    page.heading(m, 2);
    for (size_t i = 0; i < picks.size(); ++i) {
      const Sample& s = *picks[i].second;
      const cv::Mat img = read_image(s.path);
      ExplainOptions opt = base;
      opt.methods = {m};
      opt.settings = taken_by({m}, Settings().set("seed", static_cast<int64_t>(run.seed)));
      opt.targets = {class_target({s.label})};
      const auto e = explainer.explain({img}, opt, {s.name});
      const std::string file = "examples/" + safe_name(m) + "." + std::to_string(i + 1) + "." + safe_name(fs::path(s.name).stem().string()) + ".png";
      out.write(file, encode_png(example_picture(img, s, e[0].maps.back())));
      if (i == 0) page.heading("best", 3);
      if (i == show) page.heading("worst", 3);
      const auto& labels = explainer.labels();
      page.figure(file, {s.name, labels.empty() ? std::to_string(s.label) : labels.at(static_cast<size_t>(s.label)), "score " + fixed(picks[i].first, 3)});
    }
  }
  page.paragraph("Green: ground-truth boxes. White: the map's box (15% threshold, largest region).");
  out.write("index.html", page.html());
  out.commit();
}

}  // namespace lumen
