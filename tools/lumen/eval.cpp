// lumen eval: every metric of docs/evaluation.md for every requested method over a dataset folder.
// Per-image records are appended to OUT/records.jsonl as they are measured (a killed run resumes from
// them); the table, CSV, JSON and HTML are written atomically at the end.
#include "commands.h"

#include <lumen/dataset.h>
#include <lumen/error.h>
#include <lumen/evaluate.h>
#include <lumen/explain.h>
#include <lumen/image.h>
#include <lumen/model.h>
#include <lumen/output.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

namespace lumen::cli {
namespace fs = std::filesystem;
namespace {

const std::vector<std::string> kMetrics{"loc", "pointing", "deletion", "insertion", "drop", "sanity"};

struct Args {
  std::string model, card, data, layer, out = "lumen-eval", aggregate;
  std::vector<std::string> methods{"gradcam"}, metrics{"loc,pointing,deletion,insertion,drop"};
  int limit = 0, batch = 8, threads = 0, steps = 50, sanity_images = 8, method_batch = 0;
  uint64_t seed = 0;
  bool fresh = false, deterministic = false;
};

std::string fmt(double v, int digits = 1) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string duration(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  return buf;
}

// The columns of the table: key in the summary, header, digits.
struct Column {
  std::string key, header, metric;
  int digits;
};
const std::vector<Column> kColumns{
    {"loc_top1_error", "top-1 loc err %", "loc", 1},     {"loc_top5_error", "top-5 loc err %", "loc", 1},
    {"maxboxacc", "MaxBoxAcc %", "loc", 1},              {"maxboxacc_v2", "MaxBoxAccV2 %", "loc", 1},
    {"pointing_accuracy", "pointing %", "pointing", 1},  {"deletion_auc", "deletion AUC (lower)", "deletion", 4},
    {"insertion_auc", "insertion AUC (higher)", "insertion", 4}, {"average_drop", "avg drop % (lower)", "drop", 1},
    {"increase_in_confidence", "incr. conf. %", "drop", 1},
    {"sanity_top_spearman", "rank corr., top block random", "sanity", 3},
    {"sanity_half_spearman", "rank corr., top half random", "sanity", 3},
};

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
  return o;
}

int run(const Args& a) {
  set_threads(a.threads);
  set_deterministic(a.deterministic);
  EvalOptions eo;
  eo.metrics = split_list(a.metrics);
  for (const auto& m : eo.metrics)
    if (std::find(kMetrics.begin(), kMetrics.end(), m) == kMetrics.end())
      throw Error("unknown metric '" + m + "' (available: loc, pointing, deletion, insertion, drop, sanity)");
  eo.steps = a.steps;
  const auto methods = split_list(a.methods);
  if (methods.empty()) throw Error("no method given");
  const auto known = method_names();
  for (const auto& m : methods) {
    if (std::find(known.begin(), known.end(), m) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw Error("unknown method '" + m + "' (available: " + list + ")");
    }
  }
  if (a.card.empty()) throw Error("--card is required: eval needs the model's preprocessing");
  ModelCard card = load_card(a.card);
  std::vector<std::string> layers = split_list({a.layer});
  if (layers.empty() && !card.cam_layer.empty()) layers.push_back(card.cam_layer);
  if (layers.size() > 1 && a.aggregate.empty()) throw Error("several layers need --aggregate (mean, max, product): eval scores one map per image");
  std::string layer;
  for (const auto& l : layers) layer += (layer.empty() ? "" : ",") + l;
  Dataset data = load_dataset(a.data);
  if (a.limit > 0 && static_cast<size_t>(a.limit) < data.samples.size()) data.samples.resize(static_cast<size_t>(a.limit));
  Model model = Model::load(a.model);
  for (const auto& l : layers) model.check_layer(l);
  Explainer explainer(model, card.preprocess, card.labels);

  // Resume: the first line of records.jsonl is the run's configuration; a different run is refused.
  nlohmann::json config = {{"model", fs::weakly_canonical(a.model).string()}, {"card", fs::weakly_canonical(a.card).string()},
                           {"data", fs::weakly_canonical(a.data).string()}, {"layer", layer}, {"aggregate", a.aggregate},
                           {"metrics", eo.metrics},   {"steps", eo.steps},
                           {"limit", a.limit},        {"seed", a.seed}};
  fs::create_directories(a.out);
  const std::string records_path = (fs::path(a.out) / "records.jsonl").string();
  // Per method: the images done, the table's counts and sums, and the score that picks the HTML's best
  // and worst examples. The records themselves live only in records.jsonl, so memory stays flat.
  std::map<std::string, std::set<std::string>> done;
  std::map<std::string, Summary> summaries;
  std::map<std::string, std::map<std::string, double>> example_score;
  for (const auto& m : methods) summaries.emplace(m, Summary(eo));
  auto take = [&](const nlohmann::json& r) {
    const std::string m = r["method"], image = r["image"];
    if (!summaries.count(m) || !done[m].insert(image).second) return;
    summaries.at(m).add(r);
    example_score[m][image] = r.contains("iou") ? r["iou"].get<double>() : r.value("insertion", 0.0) - r.value("deletion", 0.0);
  };
  std::map<std::string, std::vector<nlohmann::json>> sanity;              // method -> records
  std::set<std::string> sanity_done;
  if (a.fresh) fs::remove(records_path);
  if (fs::exists(records_path)) {
    std::ifstream in(records_path);
    std::string line;
    std::getline(in, line);
    nlohmann::json head = nlohmann::json::parse(line, nullptr, false);
    if (head.is_discarded() || head.value("config", nlohmann::json()) != config)
      throw Error(records_path + " belongs to a different run (model, data, layer, metrics or steps differ); use --fresh to start over");
    while (std::getline(in, line)) {
      auto r = nlohmann::json::parse(line, nullptr, false);
      if (r.is_discarded()) continue;  // a line cut short by an interrupted run
      if (r.contains("sanity")) {
        sanity[r["method"]].push_back(r);
        sanity_done.insert(r["method"].get<std::string>() + "\n" + std::to_string(r["step"].get<int>()) + "\n" + r["image"].get<std::string>());
      } else {
        take(r);
      }
    }
    size_t resumed = 0;
    for (const auto& [m, imgs] : done) resumed += imgs.size();
    if (resumed) std::cerr << "resuming: " << resumed << " image record(s) already in " << records_path << "\n";
  } else {
    std::ofstream(records_path) << nlohmann::json{{"config", config}}.dump() << "\n";
  }
  std::ofstream records(records_path, std::ios::app);
  auto append = [&](const nlohmann::json& r) {
    records << r.dump() << "\n";
    records.flush();
    if (!records) throw Error("cannot append to " + records_path);
  };

  ExplainOptions base;
  base.layers = layers;
  base.aggregate = a.aggregate;
  base.box_threshold = eo.box_threshold;
  base.shared.rows_per_pass = a.method_batch;
  Settings seed;
  seed.set("seed", static_cast<int64_t>(a.seed));
  for (const auto& s : data.samples)
    if (!card.labels.empty() && s.label >= static_cast<int64_t>(card.labels.size()))
      throw Error("dataset label " + std::to_string(s.label) + " of " + s.name + " is out of range for the model's " +
                  std::to_string(card.labels.size()) + " classes");

  const auto start = std::chrono::steady_clock::now();
  const size_t total = data.samples.size() * methods.size();
  size_t finished = 0, computed = 0;
  for (const auto& m : methods) finished += done[m].size();
  auto report = [&](const std::string& what) {
    double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double eta = computed ? el / static_cast<double>(computed) * static_cast<double>(total - finished) : 0;
    std::cerr << "\r  eval " << finished << "/" << total << " (image x method)  " << what << "  elapsed " << duration(el)
              << "  eta " << (computed ? duration(eta) : "?") << "  rss " << static_cast<int>(resident_mib()) << " MiB      "
              << std::flush;
  };

  for (size_t first = 0; first < data.samples.size(); first += static_cast<size_t>(a.batch)) {
    const size_t last = std::min(data.samples.size(), first + static_cast<size_t>(a.batch));
    std::vector<cv::Mat> images;
    std::vector<const Sample*> samples;
    for (size_t i = first; i < last; ++i) samples.push_back(&data.samples[i]);
    bool needed = false;
    for (const auto& m : methods)
      for (const auto* s : samples) needed |= !done[m].count(s->name);
    if (!needed) continue;
    for (const auto* s : samples) images.push_back(read_image(s->path));
    auto inputs = to_batch(images, card.preprocess);
    for (const auto& m : methods) {
      std::vector<size_t> rows;
      for (size_t i = 0; i < samples.size(); ++i)
        if (!done[m].count(samples[i]->name)) rows.push_back(i);
      if (rows.empty()) continue;
      report(m);
      std::vector<cv::Mat> imgs;
      std::vector<int64_t> labels;
      std::vector<std::string> names;
      for (size_t i : rows) imgs.push_back(images[i]), labels.push_back(samples[i]->label), names.push_back(samples[i]->name);
      ExplainOptions opt = base;
      opt.methods = {m};
      opt.settings = taken_by({m}, seed);
      opt.targets = {class_target(labels)};
      opt.targets[0].name = "truth";
      auto explained = explainer.explain(imgs, opt, names);
      for (size_t k = 0; k < rows.size(); ++k) {
        // With --aggregate the combined map comes last; otherwise there is one map.
        auto r = measure_image(model, card.preprocess, *samples[rows[k]], explained[k], explained[k].maps.back(),
                               inputs[static_cast<int64_t>(rows[k])], eo);
        r["method"] = m;
        append(r);
        take(r);
        ++finished, ++computed;
      }
    }
  }

  // Sanity checks (Adebayo et al. 2018) on the first images: the parameterised blocks are randomised
  // cumulatively from the output back, and each step's maps are compared with the trained model's.
  if (eo.has("sanity")) {
    const size_t k = std::min<size_t>(static_cast<size_t>(std::max(1, a.sanity_images)), data.samples.size());
    std::vector<cv::Mat> imgs;
    std::vector<int64_t> labels;
    std::vector<std::string> names;
    for (size_t i = 0; i < k; ++i)
      imgs.push_back(read_image(data.samples[i].path)), labels.push_back(data.samples[i].label), names.push_back(data.samples[i].name);
    auto blocks = metrics::cascade_blocks(model);
    std::map<std::string, std::vector<cv::Mat>> original;
    auto maps_of = [&](const Explainer& ex, const std::string& m) {
      ExplainOptions opt = base;
      opt.methods = {m};
      opt.settings = taken_by({m}, seed);
      opt.targets = {class_target(labels)};
      std::vector<cv::Mat> out;
      for (auto& e : ex.explain(imgs, opt, names)) out.push_back(cv::abs(e.maps.back().upsampled));
      return out;
    };
    for (size_t step = 1; step <= blocks.size(); ++step) {
      std::vector<std::string> todo;
      for (const auto& m : methods)
        for (size_t i = 0; i < k; ++i)
          if (!sanity_done.count(m + "\n" + std::to_string(step) + "\n" + names[i])) {
            todo.push_back(m);
            break;
          }
      if (todo.empty()) continue;
      std::cerr << "\r  sanity: randomised down to " << blocks[step - 1] << " (" << step << "/" << blocks.size() << ")          " << std::flush;
      Model random = metrics::randomized(model, {blocks.begin(), blocks.begin() + static_cast<int64_t>(step)}, a.seed + 1);
      Explainer ex(random, card.preprocess, card.labels);
      for (const auto& m : todo) {
        if (!original.count(m)) original[m] = maps_of(explainer, m);
        auto after = maps_of(ex, m);
        for (size_t i = 0; i < k; ++i) {
          auto norm = [](const cv::Mat& x) {
            double mx;
            cv::minMaxLoc(x, nullptr, &mx);
            return mx > 0 ? cv::Mat(x / mx) : x;
          };
          nlohmann::json r = {{"sanity", true}, {"method", m}, {"step", static_cast<int>(step)}, {"block", blocks[step - 1]},
                              {"image", names[i]}, {"spearman", metrics::spearman(original[m][i], after[i])},
                              {"ssim", metrics::ssim(norm(original[m][i]), norm(after[i]))}};
          append(r);
          sanity[m].push_back(r);
        }
      }
    }
  }
  std::cerr << "\n";
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // The table.
  nlohmann::json summary = nlohmann::json::object();
  for (const auto& m : methods) {
    for (const auto& r : sanity[m]) summaries.at(m).add_sanity(r);
    summary[m] = summaries.at(m).result();
  }
  std::vector<Column> cols;
  for (const auto& c : kColumns)
    if (eo.has(c.metric)) cols.push_back(c);
  const auto& any = summary[methods.front()];
  std::ostringstream table, csv;
  table << "classification error on " << data.samples.size() << " images: top-1 " << fmt(any["cls_top1_error"]) << "%, top-5 "
        << fmt(any["cls_top5_error"]) << "%\n\n| method |";
  csv << "method,images,cls_top1_error,cls_top5_error,empty_maps";
  for (const auto& c : cols) table << " " << c.header << " |", csv << "," << c.key;
  table << "\n|---|";
  for (size_t i = 0; i < cols.size(); ++i) table << "---|";
  table << "\n";
  csv << "\n";
  for (const auto& m : methods) {
    const auto& s = summary[m];
    table << "| " << m << " |";
    csv << m << "," << s["images"] << "," << fmt(s["cls_top1_error"], 3) << "," << fmt(s["cls_top5_error"], 3) << "," << s["empty_maps"];
    for (const auto& c : cols) {
      double v = s.contains(c.key) ? s[c.key].get<double>() : std::nan("");
      std::string cell = fmt(v, c.digits);
      if (c.key == "sanity_half_spearman" && s.value("sanity_flag", false)) cell += " FLAG";
      table << " " << cell << " |";
      csv << "," << fmt(v, 6);
    }
    table << "\n";
    csv << "\n";
  }
  std::string notes;
  if (eo.has("loc"))
    notes += "Loc errors follow the Grad-CAM paper (class-aware: wrong class or IoU < 0.5); MaxBoxAcc/V2 follow wsolevaluation "
             "(ground-truth class known, best map threshold) and are a different number.\n";
  if (eo.has("sanity"))
    notes += "sanity: mean Spearman rank correlation with the trained model's maps after randomising the top block, and the top "
             "half of the blocks; FLAG = still above 0.5 with the top half random (the map ignores what was learned).\n";
  std::cout << table.str() << "\n" << notes << "evaluated " << total << " image x method pairs in " << fmt(seconds, 1) << " s\n";

  nlohmann::json results = {{"config", config}, {"methods", methods}, {"summary", summary}, {"notes", notes}, {"seconds", seconds}};
  write_file_atomic((fs::path(a.out) / "results.json").string(), results.dump(2) + "\n");
  write_file_atomic((fs::path(a.out) / "results.csv").string(), csv.str());
  write_file_atomic((fs::path(a.out) / "table.md").string(), table.str() + "\n" + notes);

  // HTML: per method the best and worst images by IoU of the paper's box (or by insertion - deletion).
  fs::create_directories(fs::path(a.out) / "examples");
  std::ostringstream html;
  html << "<!doctype html><meta charset=utf-8><title>lumen eval</title><style>body{font-family:sans-serif}"
          "img{width:160px;margin:2px}figure{display:inline-block;margin:4px}figcaption{font-size:11px}</style>"
          "<h1>lumen eval</h1><pre>" << html_escape(table.str() + "\n" + notes) << "</pre>";
  for (const auto& m : methods) {
    std::vector<std::pair<double, const Sample*>> scored;
    for (const auto& s : data.samples) {
      scored.emplace_back(example_score[m].at(s.name), &s);
    }
    std::stable_sort(scored.begin(), scored.end(), [](auto& x, auto& y) { return x.first > y.first; });
    const size_t show = std::min<size_t>(4, scored.size() / 2);
    std::vector<std::pair<double, const Sample*>> picks(scored.begin(), scored.begin() + static_cast<int64_t>(show));
    picks.insert(picks.end(), scored.end() - static_cast<int64_t>(show), scored.end());
    html << "<h2>" << html_escape(m) << "</h2>";
    for (size_t i = 0; i < picks.size(); ++i) {
      const Sample& s = *picks[i].second;
      cv::Mat img = read_image(s.path);
      ExplainOptions opt = base;
      opt.methods = {m};
      opt.settings = taken_by({m}, seed);
      opt.targets = {class_target({s.label})};
      auto e = explainer.explain({img}, opt, {s.name});
      const Map& shown = e[0].maps.back();
      cv::Mat pic = overlay(img, shown.normalized, Colormap::Jet);
      for (const auto& b : s.boxes) cv::rectangle(pic, cv::Point(int(b.x0), int(b.y0)), cv::Point(int(b.x1), int(b.y1)), {0, 255, 0}, 1);
      if (shown.box.valid) draw_box(pic, shown.box, {255, 255, 255}, 1);
      const std::string file = "examples/" + safe_name(m) + "." + safe_name(stem_of(s.name)) + ".png";
      write_file_atomic((fs::path(a.out) / file).string(), encode_png(pic));
      html << (i == 0 ? "<h3>best</h3>" : i == show ? "<h3>worst</h3>" : "") << "<figure><img src='" << file << "'><figcaption>"
           << html_escape(s.name) << "<br>" << (card.labels.empty() ? std::to_string(s.label) : html_escape(card.labels[s.label]))
           << "<br>score " << fmt(picks[i].first, 3) << "</figcaption></figure>";
    }
  }
  html << "<p>Green: ground-truth boxes. White: the map's box (15% threshold, largest region).</p>";
  write_file_atomic((fs::path(a.out) / "index.html").string(), html.str());
  std::cout << "wrote " << a.out << "/table.md, results.csv, results.json, index.html\n";
  return 0;
}

}  // namespace

Command add_eval(CLI::App& app) {
  auto* sub = app.add_subcommand("eval", "Measure explanations over a dataset: localisation, pointing, deletion/insertion, drop, sanity");
  auto a = std::make_shared<Args>();
  sub->add_option("--model,-m", a->model, "TorchScript (.pt) or ONNX (.onnx) model file")->required();
  sub->add_option("--card", a->card, "model card JSON")->required();
  sub->add_option("--data,-d", a->data, "dataset folder: images/, labels.csv, boxes.csv")->required();
  std::string names;
  for (const auto& n : method_names()) names += (names.empty() ? "" : ", ") + n;
  sub->add_option("--methods,--method", a->methods, "method(s), comma-separated (default gradcam): " + names);
  sub->add_option("--metrics", a->metrics, "comma-separated: loc, pointing, deletion, insertion, drop, sanity (default all but sanity)");
  sub->add_option("--layer,-l", a->layer, "layer(s) for CAM methods, comma-separated (default: the card's)");
  sub->add_option("--aggregate", a->aggregate, "with several layers: score their combination (mean, max, product)")
      ->check(CLI::IsMember({"mean", "max", "product"}));
  sub->add_option("--out,-o", a->out, "report folder (default lumen-eval); an interrupted run resumes from it");
  sub->add_flag("--fresh", a->fresh, "ignore records of an earlier run in --out");
  sub->add_option("--limit", a->limit, "only the first N images of labels.csv");
  sub->add_option("--batch", a->batch, "images per explanation pass (8)")->check(CLI::Range(1, 4096));
  sub->add_option("--steps", a->steps, "deletion/insertion: steps of the curve (50)")->check(CLI::Range(1, 1000000));
  sub->add_option("--sanity-images", a->sanity_images, "sanity: images used (8)")->check(CLI::Range(1, 100000));
  sub->add_option("--method-batch", a->method_batch, "rows per extra pass of perturbation methods (0: 8, fewer if memory is short)")
      ->check(CLI::Range(0, 100000));
  sub->add_option("--seed", a->seed, "seed of random methods and of the sanity randomisation (0)");
  sub->add_option("--threads", a->threads, "intra-op threads (default: all cores)");
  sub->add_flag("--deterministic", a->deterministic, "the same maps for any thread count (ATen's convolutions; slower)");
  return {sub, [a] { return run(*a); }};
}

}  // namespace lumen::cli
