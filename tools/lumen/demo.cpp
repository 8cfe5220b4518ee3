#include "commands.h"

#include <lumen/demo.h>
#include <lumen/error.h>
#include <lumen/explain.h>
#include <lumen/output.h>
#include <lumen/report.h>

#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

namespace lumen::cli {
namespace fs = std::filesystem;

// This command's own pieces (named, so that the CLI's files can be compiled as one batch).
namespace demo_command {

struct Args {
  std::string out = "lumen-demo";
  int scenes = 100, steps = 0, show = 24;  // steps 0: the variant's default
  Runtime runtime;
  bool retrain = false, write_dataset = false, vit = false;
  double cue = 0;
};

// What the demo trains and explains: the CNN and its Grad-CAM, or (--vit) the small hybrid vision
// transformer with the two attention methods next to Grad-CAM on its last block.
struct Variant {
  std::string model_file, what, layer;
  std::vector<std::string> methods;
};

Variant variant(const Args& a) {
  if (a.vit)
    return {a.cue > 0 ? "shapes_vit_cue.pt" : "shapes_vit.pt", "vision transformer", "blocks.3.norm1",
            {"attention-rollout", "transformer-attribution", "gradcam"}};
  return {a.cue > 0 ? "shapes_cnn_cue.pt" : "shapes_cnn.pt", "CNN", "features.block4", {"gradcam"}};
}

void write_text(const fs::path& path, const std::string& text) {
  fs::path tmp = path.string() + ".tmp";
  std::ofstream(tmp) << text;
  fs::rename(tmp, path);
}

cv::Mat enlarge(const cv::Mat& img, int factor) {
  cv::Mat big;
  cv::resize(img, big, cv::Size(), factor, factor, cv::INTER_NEAREST);
  return big;
}

Box scale(const Box& b, int f) { return Box{b.x0 * f, b.y0 * f, b.x1 * f, b.y1 * f, b.valid}; }

// Trains the demo network and saves it with its labels and card, unless it is there already.
void train_once(const Args& a, const fs::path& dir, const Variant& v, const demo::SceneOptions& scene_options) {
  const std::string& model_file = v.model_file;
  const fs::path model_path = dir / model_file;
  const auto& names = demo::class_names();
  if (a.retrain || !fs::exists(model_path)) {
    const int steps = a.steps > 0 ? a.steps : (a.vit ? 600 : 400);
    std::cout << "demo: training a " << names.size() << "-class " << v.what << " on procedurally drawn scenes (" << steps
              << " steps of 32)..." << std::endl;
    auto net = a.vit ? demo::make_vit(static_cast<int>(names.size())) : demo::make_network(static_cast<int>(names.size()));
    demo::TrainOptions topt;
    topt.steps = steps;
    if (a.vit) {
      topt.learning_rate = 1e-3;
      topt.warmup_steps = 100;
    }
    topt.scenes = scene_options;
    auto last_loss = std::make_shared<float>(0);
    const Progress training = progress_printer(a.runtime.quiet, [last_loss] {
      std::ostringstream loss;
      loss << "loss " << std::fixed << std::setprecision(3) << *last_loss;
      return loss.str();
    });
    auto report = demo::train(net, topt, [&, last_loss](int step, float loss) {
      *last_loss = loss;
      training("training", step, steps);
    });
    std::cout << "  trained in " << std::fixed << std::setprecision(1) << report.seconds << " s\n";
    fs::path tmp = model_path.string() + ".tmp";
    net.save(tmp.string());
    fs::rename(tmp, model_path);
    std::ostringstream labels;
    for (const auto& n : names) labels << n << "\n";
    write_text(dir / "labels.txt", labels.str());
    write_text(dir / (std::string("card") + (a.vit ? "_vit" : "") + (a.cue > 0 ? "_cue" : "") + ".json"),
               demo::card_json(model_file, "labels.txt"));
  } else {
    std::cout << "demo: using the trained model in " << model_path.string() << " (--retrain to train again)\n";
  }
}

// The held-out scenes as a dataset folder (lumen eval / lumen audit read it); scenes carrying the
// spurious mark say so in their file name.
void write_dataset(const fs::path& dir, const std::vector<demo::Scene>& scenes) {
  const fs::path ds = dir / "dataset";
  fs::create_directories(ds / "images");
  std::ostringstream labels_csv, boxes_csv;
  labels_csv << "image,label\n";
  boxes_csv << "image,label,x0,y0,x1,y1\n";
  for (int i = 0; i < static_cast<int>(scenes.size()); ++i) {
    std::ostringstream name;
    name << "scene-" << std::setw(4) << std::setfill('0') << i << (scenes[i].cue ? "-cue" : "") << ".png";
    write_file_atomic((ds / "images" / name.str()).string(), encode_png(scenes[i].image));
    labels_csv << name.str() << "," << scenes[i].label << "\n";
    const auto& b = scenes[i].box;
    boxes_csv << name.str() << "," << scenes[i].label << "," << b.x0 << "," << b.y0 << "," << b.x1 << "," << b.y1 << "\n";
  }
  write_text(ds / "labels.csv", labels_csv.str());
  write_text(ds / "boxes.csv", boxes_csv.str());
  std::cout << "demo: wrote the held-out scenes as a dataset: " << ds.string() << "\n";
}

// Two-object scenes: the left half of a scene whose object lies there beside the right half of one with
// another class. A class-specific method should give each class a map heavier on its own object.
void two_object_check(Explainer& explainer, const Variant& v, int count) {
  std::mt19937 rng(5);
  std::vector<demo::Scene> left, right;
  while (static_cast<int>(std::min(left.size(), right.size())) < count) {
    auto s = demo::make_scene(rng);
    if (s.box.x1 <= 32) left.push_back(std::move(s));
    else if (s.box.x0 >= 32) right.push_back(std::move(s));
  }
  auto mass = [](const cv::Mat& m, const Box& b) { return cv::sum(m(cv::Rect(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0)))[0]; };
  std::map<std::string, int> own;
  int pairs = 0;
  for (int i = 0; i < count; ++i) {
    const auto &a = left[i], &b = right[i];
    if (a.label == b.label) continue;
    ++pairs;
    cv::Mat image = b.image.clone();
    a.image(cv::Rect(0, 0, 32, a.image.rows)).copyTo(image(cv::Rect(0, 0, 32, image.rows)));
    ExplainOptions opt;
    opt.layers = {v.layer};
    opt.methods = v.methods;
    opt.classes = {a.label, b.label};
    std::map<std::string, std::vector<const Map*>> by_method;
    const auto explained = explainer.explain({image}, opt);
    for (const auto& m : explained[0].maps) by_method[m.method].push_back(&m);
    for (const auto& [method, maps] : by_method)
      own[method] += mass(maps[0]->normalized, a.box) > mass(maps[0]->normalized, b.box) &&
                     mass(maps[1]->normalized, b.box) > mass(maps[1]->normalized, a.box);
  }
  for (const auto& m : v.methods)
    std::cout << "demo: two-object scenes: " << m << "'s maps for the two classes are each heavier on their own object in "
              << own[m] << "/" << pairs << "\n";
}

int run(const Args& a) {
  a.runtime.apply();
  const fs::path dir = a.out;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create " + a.out + ": " + ec.message());
  // The bias-audit variant is a different model: it gets its own file.
  const Variant v = variant(a);
  const fs::path model_path = dir / v.model_file;
  demo::SceneOptions scene_options;
  scene_options.spurious_cue = a.cue;
  const auto& names = demo::class_names();

  train_once(a, dir, v, scene_options);
  // From here on the demo is an ordinary user of lumen: a TorchScript file, a card, images.
  Model model = Model::load(model_path.string());
  Explainer explainer(model, demo::preprocess(), std::vector<std::string>(names.begin(), names.end()));
  std::mt19937 rng(20261126);  // held-out scenes: a seed the training never uses
  std::vector<demo::Scene> scenes;
  std::vector<cv::Mat> images;
  for (int i = 0; i < a.scenes; ++i) {
    scenes.push_back(demo::make_scene(rng, scene_options));
    images.push_back(scenes.back().image);
  }
  if (a.write_dataset) write_dataset(dir, scenes);
  ExplainOptions opt;
  opt.layers = {v.layer};
  opt.methods = v.methods;
  auto explained = explainer.explain(images, opt);

  struct Score {
    int hits = 0, hits_correct = 0, points = 0;
  };
  std::map<std::string, Score> scores;
  OutputDir out(a.out);
  int correct = 0;
  std::vector<std::vector<report::Page::Cell>> rows;
  for (int i = 0; i < a.scenes; ++i) {
    const auto& s = scenes[i];
    bool right = explained[i].top.at(0).cls == s.label;
    correct += right;
    const int f = 4;
    const std::string stem = "scene" + std::to_string(i);
    std::vector<report::Page::Cell> row;
    if (i < a.show) {
      out.write(stem + ".png", encode_png(enlarge(s.image, f)));
      row.push_back({stem + ".png", {}, stem + ".png", "scene " + std::to_string(i)});
    }
    std::vector<std::string> caption{"true: " + names[s.label]};
    for (const auto& m : explained[i].maps) {
      const double overlap = demo::iou(m.box, s.box);
      auto& sc = scores[m.method];
      sc.hits += overlap >= 0.5;
      sc.hits_correct += right && overlap >= 0.5;
      sc.points += m.stats.peak_x >= s.box.x0 && m.stats.peak_x < s.box.x1 && m.stats.peak_y >= s.box.y0 && m.stats.peak_y < s.box.y1;
      if (i >= a.show) continue;
      const std::string name = v.methods.size() > 1 ? stem + "." + m.method : stem;
      cv::Mat over = overlay(enlarge(s.image, f), enlarge(m.normalized, f), Colormap::Jet);
      draw_box(over, scale(s.box, f), cv::Scalar(0, 255, 0), 2);
      draw_box(over, scale(m.box, f), cv::Scalar(255, 255, 255), 2);
      out.write(name + ".overlay.png", encode_png(over));
      out.write(name + ".npy", encode_npy(m.normalized));
      row.push_back({name + ".overlay.png", {}, name + ".overlay.png", m.method});
      std::ostringstream iou;
      iou << (v.methods.size() > 1 ? m.method + ": " : "") << "IoU " << std::fixed << std::setprecision(2) << std::floor(overlap * 100) / 100  // truncated: 0.4996 is a miss, not "0.50"
          << (overlap >= 0.5 ? " hit" : " miss");
      caption.push_back(iou.str());
    }
    if (i >= a.show) continue;
    std::ostringstream predicted;
    predicted << "predicted: " << explained[i].top[0].label << " (" << std::fixed << std::setprecision(2) << explained[i].top[0].probability << ")";
    caption.insert(caption.begin() + 1, predicted.str());
    row.push_back({"", caption, "", ""});
    rows.push_back(row);
  }
  std::string method_list;
  for (const auto& m : v.methods) method_list += (method_list.empty() ? "" : ", ") + m;
  report::Page page("lumen demo: " + method_list + " on held-out scenes (" + v.what + ")");
  page.paragraph("Layer " + v.layer + " for the CAM methods" + (a.vit ? "; the attention methods read all four blocks' attention" : "") +
                 ", top-1 class. Green: true box; white: the paper's box (15% of the map's max, largest connected region).");
  std::string summary = "Classification " + std::to_string(correct) + "/" + std::to_string(a.scenes) + "; box hits (IoU >= 0.5):";
  for (const auto& m : v.methods) summary += " " + m + " " + std::to_string(scores[m].hits) + "/" + std::to_string(a.scenes) + ";";
  summary.back() = '.';
  page.paragraph(summary);
  page.table(rows);
  out.write("index.html", page.html());
  out.commit();

  std::cout << "demo: classification " << correct << "/" << a.scenes << " held-out scenes correct\n";
  for (const auto& m : v.methods) {
    const auto& sc = scores[m];
    std::cout << "demo: " << (m == "gradcam" ? std::string("Grad-CAM") : m) << " box hits the object (IoU >= 0.5) on " << sc.hits << "/"
              << a.scenes << " scenes (" << sc.hits_correct << " of them also classified right); its peak lies on the box in "
              << sc.points << "/" << a.scenes << "\n";
  }
  if (a.vit) two_object_check(explainer, v, 40);
  std::cout << "demo: page with " << std::min(a.show, a.scenes) << " examples: " << (dir / "index.html").string() << "\n";
  return 0;
}

}  // namespace demo_command

Command add_demo(CLI::App& app) {
  auto* sub = app.add_subcommand("demo", "Train the built-in shapes CNN (once) and explain held-out scenes");
  auto a = std::make_shared<demo_command::Args>();
  sub->add_option("--out,-o", a->out, "output directory (default lumen-demo)")->check(output_folder());
  sub->add_option("--scenes", a->scenes, "held-out scenes to explain (100)")->check(CLI::Range(1, 100000));
  sub->add_option("--steps", a->steps, "training steps (400; 600 with --vit)")->check(CLI::Range(1, 1000000));
  sub->add_option("--show", a->show, "scenes shown on the page (24)");
  sub->add_flag("--retrain", a->retrain, "train again even if the model exists");
  sub->add_option("--spurious-cue", a->cue,
                  "bias-audit variant: this share of class-0 scenes (training and held-out) carries a corner mark (0)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_flag("--vit", a->vit,
                "a small hybrid vision transformer instead of the CNN, explained by attention-rollout, "
                "transformer-attribution and Grad-CAM (about 80 s of training)");
  sub->add_flag("--write-dataset", a->write_dataset, "also write the held-out scenes as a dataset folder (OUT/dataset)");
  add_runtime_flags(sub, a->runtime, false);
  return {sub, [a] { return demo_command::run(*a); }};
}

}  // namespace lumen::cli
