// lumen audit: is the evidence on the object? For every image, the share of the explanation's mass
// inside the boxes of its class (the Grad-CAM paper's bias study, made a measurement); per class the
// distribution; the images whose evidence lies mostly elsewhere, worst first, on an HTML page.
#include "commands.h"

#include <lumen/dataset.h>
#include <lumen/error.h>
#include <lumen/explain.h>
#include <lumen/image.h>
#include <lumen/metrics.h>
#include <lumen/model.h>
#include <lumen/output.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>

namespace lumen::cli {
namespace fs = std::filesystem;

Command add_audit(CLI::App& app) {
  auto* sub = app.add_subcommand("audit", "Bias audit: how much of each explanation lies on the object");
  struct Args {
    std::string model, card, data, layer, method = "gradcam", out = "lumen-audit";
    double threshold = 0.5;
    int limit = 0, batch = 8, show = 24, threads = 0;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("--model,-m", a->model, "TorchScript (.pt) or ONNX (.onnx) model file")->required();
  sub->add_option("--card", a->card, "model card JSON")->required();
  sub->add_option("--data,-d", a->data, "dataset folder: images/, labels.csv, boxes.csv")->required();
  sub->add_option("--method", a->method, "map method (gradcam)");
  sub->add_option("--layer,-l", a->layer, "layer for CAM methods (default: the card's)");
  sub->add_option("--threshold", a->threshold, "flag images with less than this share of the map on the object (0.5)");
  sub->add_option("--limit", a->limit, "only the first N images");
  sub->add_option("--batch", a->batch, "images per pass (8)")->check(CLI::Range(1, 4096));
  sub->add_option("--show", a->show, "flagged images drawn on the page (24)");
  sub->add_option("--out,-o", a->out, "output directory (default lumen-audit)");
  sub->add_option("--threads", a->threads, "intra-op threads (default: all cores)");
  return {sub, [a] {
            set_threads(a->threads);
            ModelCard card = load_card(a->card);
            Dataset data = load_dataset(a->data);
            if (a->limit > 0 && static_cast<size_t>(a->limit) < data.samples.size()) data.samples.resize(static_cast<size_t>(a->limit));
            size_t with_boxes = 0;
            for (const auto& s : data.samples) with_boxes += !s.boxes.empty();
            if (!with_boxes) throw Error("the dataset has no boxes: the audit measures evidence inside them");
            Model model = Model::load(a->model);
            const std::string layer = a->layer.empty() ? card.cam_layer : a->layer;
            Explainer explainer(model, card.preprocess, card.labels);
            ExplainOptions base;
            base.methods = {a->method};
            if (!layer.empty()) base.layers = {layer};
            OutputDir out(a->out);

            struct Row {
              const Sample* s;
              double share;
              int64_t predicted;
            };
            std::vector<Row> rows;
            for (size_t first = 0; first < data.samples.size(); first += static_cast<size_t>(a->batch)) {
              const size_t last = std::min(data.samples.size(), first + static_cast<size_t>(a->batch));
              std::vector<cv::Mat> imgs;
              std::vector<int64_t> labels;
              std::vector<std::string> names;
              for (size_t i = first; i < last; ++i)
                imgs.push_back(read_image(data.samples[i].path)), labels.push_back(data.samples[i].label), names.push_back(data.samples[i].name);
              ExplainOptions opt = base;
              opt.targets = {class_target(labels)};
              auto ex = explainer.explain(imgs, opt, names);
              for (size_t k = 0; k < ex.size(); ++k) {
                const Sample& s = data.samples[first + k];
                const Map& m = ex[k].maps.at(0);
                // Maps are not kept: a dataset's worth would not fit; the few drawn are explained again.
                rows.push_back({&s, metrics::energy_inside(m.normalized, s.boxes, s.label), ex[k].top.empty() ? -1 : ex[k].top[0].cls});
              }
              std::cerr << "\r  audit " << last << "/" << data.samples.size() << std::flush;
            }
            std::cerr << "\n";
            std::vector<size_t> order(rows.size());
            for (size_t i = 0; i < order.size(); ++i) order[i] = i;
            std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return rows[x].share < rows[y].share; });

            auto label_of = [&](int64_t c) { return c >= 0 && c < static_cast<int64_t>(card.labels.size()) ? card.labels[c] : std::to_string(c); };
            std::map<int64_t, std::vector<double>> per_class;
            for (const auto& r : rows)
              if (!r.s->boxes.empty()) per_class[r.s->label].push_back(r.share);
            nlohmann::json classes = nlohmann::json::object();
            std::ostringstream table;
            table << "| class | images | mean share on object | median | min | flagged (< " << a->threshold << ") |\n|---|---|---|---|---|---|\n";
            for (auto& [c, v] : per_class) {
              std::sort(v.begin(), v.end());
              double mean = 0;
              for (double x : v) mean += x;
              mean /= static_cast<double>(v.size());
              const auto flagged = std::count_if(v.begin(), v.end(), [&](double x) { return x < a->threshold; });
              classes[std::to_string(c)] = {{"label", label_of(c)}, {"images", v.size()}, {"mean", mean}, {"median", v[v.size() / 2]},
                                            {"min", v.front()}, {"flagged", flagged}};
              char line[256];
              std::snprintf(line, sizeof line, "| %s | %zu | %.3f | %.3f | %.3f | %ld |\n", label_of(c).c_str(), v.size(), mean, v[v.size() / 2],
                            v.front(), static_cast<long>(flagged));
              table << line;
            }
            nlohmann::json images = nlohmann::json::array();
            std::ostringstream csv;
            csv << "rank,image,label,predicted,share_on_object,flagged\n";
            size_t flagged = 0;
            for (size_t rank = 0; rank < order.size(); ++rank) {
              const auto& r = rows[order[rank]];
              const bool flag = !r.s->boxes.empty() && r.share < a->threshold;
              flagged += flag;
              images.push_back({{"rank", rank + 1}, {"image", r.s->name}, {"label", r.s->label}, {"predicted", r.predicted},
                                {"share_on_object", r.share}, {"flagged", flag}});
              csv << rank + 1 << "," << r.s->name << "," << r.s->label << "," << r.predicted << "," << r.share << "," << flag << "\n";
            }
            nlohmann::json doc = {{"model", a->model}, {"data", a->data}, {"method", a->method}, {"layer", layer},
                                  {"threshold", a->threshold}, {"measure", "share of the normalised map's mass inside the class's boxes"},
                                  {"per_class", classes}, {"images", images}};
            out.write("audit.json", doc.dump(2) + "\n");
            out.write("audit.csv", csv.str());
            std::ostringstream html;
            html << "<!doctype html><meta charset=utf-8><title>lumen audit</title><style>body{font-family:sans-serif}img{width:192px}"
                    "figure{display:inline-block;margin:4px}figcaption{font-size:11px}</style><h1>lumen audit: "
                 << a->method << "</h1><p>Share of the map's mass inside the boxes of the image's class; flagged below " << a->threshold
                 << ". Green: ground-truth boxes.</p><pre>" << table.str() << "</pre><h2>Evidence mostly off the object (worst first)</h2>";
            for (size_t rank = 0; rank < order.size() && rank < static_cast<size_t>(a->show); ++rank) {
              const auto& r = rows[order[rank]];
              if (r.s->boxes.empty() || r.share >= a->threshold) break;
              cv::Mat img = read_image(r.s->path);
              ExplainOptions opt = base;
              opt.targets = {class_target({r.s->label})};
              cv::Mat pic = overlay(img, explainer.explain({img}, opt, {r.s->name})[0].maps.at(0).normalized, Colormap::Jet);
              for (const auto& b : r.s->boxes)
                if (b.label == r.s->label) cv::rectangle(pic, cv::Point(int(b.x0), int(b.y0)), cv::Point(int(b.x1) - 1, int(b.y1) - 1), {0, 255, 0}, 1);
              const std::string file = "flagged/" + std::to_string(rank + 1) + "." + safe_name(stem_of(r.s->name)) + ".png";
              out.write(file, encode_png(pic));
              html << "<figure><img src='" << file << "'><figcaption>#" << rank + 1 << " " << r.s->name << "<br>" << label_of(r.s->label)
                   << " (predicted " << label_of(r.predicted) << ")<br>share on object " << r.share << "</figcaption></figure>";
            }
            out.write("index.html", html.str());
            out.commit();
            std::cout << table.str() << "\n" << flagged << " of " << rows.size() << " images have less than " << a->threshold
                      << " of the map on the object. Worst:\n";
            for (size_t rank = 0; rank < std::min<size_t>(10, order.size()); ++rank) {
              const auto& r = rows[order[rank]];
              std::cout << "  " << rank + 1 << ". " << r.s->name << " (" << label_of(r.s->label) << "): " << r.share << "\n";
            }
            std::cout << "wrote " << a->out << "/audit.json, audit.csv, index.html\n";
            return 0;
          }};
}

}  // namespace lumen::cli
