#include "commands.h"

#include <lumen/demo.h>
#include <lumen/error.h>
#include <lumen/explain.h>
#include <lumen/output.h>
#include <lumen/report.h>

#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace lumen::cli {
namespace fs = std::filesystem;

// This command's own pieces (named, so that the CLI's files can be compiled as one batch).
namespace demo_command {

struct Args {
  std::string out = "lumen-demo";
  int scenes = 100, steps = 400, show = 24;
  Runtime runtime;
  bool retrain = false, write_dataset = false;
  double cue = 0;
};

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
void train_once(const Args& a, const fs::path& dir, const std::string& model_file, const demo::SceneOptions& scene_options) {
  const fs::path model_path = dir / model_file;
  const auto& names = demo::class_names();
  if (a.retrain || !fs::exists(model_path)) {
    std::cout << "demo: training a " << names.size() << "-class CNN on procedurally drawn scenes (" << a.steps
              << " steps of 32)..." << std::endl;
    auto net = demo::make_network(static_cast<int>(names.size()));
    demo::TrainOptions topt;
    topt.steps = a.steps;
    topt.scenes = scene_options;
    auto report = demo::train(net, topt, [&](int step, float loss) {
      std::cout << "\r  step " << std::setw(4) << step << "/" << a.steps << "  loss " << std::fixed << std::setprecision(3)
                << loss << std::flush;
    });
    std::cout << "\n  trained in " << std::setprecision(1) << report.seconds << " s\n";
    fs::path tmp = model_path.string() + ".tmp";
    net.save(tmp.string());
    fs::rename(tmp, model_path);
    std::ostringstream labels;
    for (const auto& n : names) labels << n << "\n";
    write_text(dir / "labels.txt", labels.str());
    write_text(dir / (a.cue > 0 ? "card_cue.json" : "card.json"), demo::card_json(model_file, "labels.txt"));
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

int run(const Args& a) {
  a.runtime.apply();
  const fs::path dir = a.out;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create " + a.out + ": " + ec.message());
  // The bias-audit variant is a different model: it gets its own file.
  const std::string model_file = a.cue > 0 ? "shapes_cnn_cue.pt" : "shapes_cnn.pt";
  const fs::path model_path = dir / model_file;
  demo::SceneOptions scene_options;
  scene_options.spurious_cue = a.cue;
  const auto& names = demo::class_names();

  train_once(a, dir, model_file, scene_options);
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
  opt.layers = {"features.block4"};
  auto explained = explainer.explain(images, opt);

  OutputDir out(a.out);
  int correct = 0, hits = 0, hits_correct = 0, points = 0;
  std::vector<std::vector<report::Page::Cell>> rows;
  for (int i = 0; i < a.scenes; ++i) {
    const auto& s = scenes[i];
    const auto& m = explained[i].maps.at(0);
    bool right = explained[i].top.at(0).cls == s.label;
    double overlap = demo::iou(m.box, s.box);
    correct += right;
    hits += overlap >= 0.5;
    hits_correct += right && overlap >= 0.5;
    points += m.stats.peak_x >= s.box.x0 && m.stats.peak_x < s.box.x1 && m.stats.peak_y >= s.box.y0 && m.stats.peak_y < s.box.y1;
    if (i < a.show) {
      const int f = 4;
      std::string stem = "scene" + std::to_string(i);
      cv::Mat over = overlay(enlarge(s.image, f), enlarge(m.normalized, f), Colormap::Jet);
      draw_box(over, scale(s.box, f), cv::Scalar(0, 255, 0), 2);
      draw_box(over, scale(m.box, f), cv::Scalar(255, 255, 255), 2);
      out.write(stem + ".png", encode_png(enlarge(s.image, f)));
      out.write(stem + ".overlay.png", encode_png(over));
      out.write(stem + ".npy", encode_npy(m.normalized));
      std::ostringstream predicted, iou;
      predicted << "predicted: " << explained[i].top[0].label << " (" << std::fixed << std::setprecision(2) << explained[i].top[0].probability << ")";
      iou << "IoU " << std::fixed << std::setprecision(2) << overlap << (overlap >= 0.5 ? " hit" : " miss");
      rows.push_back({{stem + ".png", {}}, {stem + ".overlay.png", {}}, {"", {"true: " + names[s.label], predicted.str(), iou.str()}}});
    }
  }
  report::Page page("lumen demo: Grad-CAM on held-out scenes");
  page.paragraph("Layer features.block4, top-1 class. Green: true box; white: the paper's box (15% of the map's max, largest connected region).");
  page.paragraph("Classification " + std::to_string(correct) + "/" + std::to_string(a.scenes) + "; box hits (IoU >= 0.5) " + std::to_string(hits) +
                 "/" + std::to_string(a.scenes) + ".");
  page.table(rows);
  out.write("index.html", page.html());
  out.commit();

  std::cout << "demo: classification " << correct << "/" << a.scenes << " held-out scenes correct\n"
            << "demo: Grad-CAM box hits the object (IoU >= 0.5) on " << hits << "/" << a.scenes << " scenes ("
            << hits_correct << " of them also classified right)\n"
            << "demo: the map's peak lies on the object's box in " << points << "/" << a.scenes << " scenes\n"
            << "demo: page with " << std::min(a.show, a.scenes) << " examples: " << (dir / "index.html").string() << "\n";
  return 0;
}

}  // namespace demo_command

Command add_demo(CLI::App& app) {
  auto* sub = app.add_subcommand("demo", "Train the built-in shapes CNN (once) and explain held-out scenes");
  auto a = std::make_shared<demo_command::Args>();
  sub->add_option("--out,-o", a->out, "output directory (default lumen-demo)");
  sub->add_option("--scenes", a->scenes, "held-out scenes to explain (100)")->check(CLI::Range(1, 100000));
  sub->add_option("--steps", a->steps, "training steps (400)")->check(CLI::Range(1, 1000000));
  sub->add_option("--show", a->show, "scenes shown on the page (24)");
  sub->add_flag("--retrain", a->retrain, "train again even if the model exists");
  sub->add_option("--spurious-cue", a->cue,
                  "bias-audit variant: this share of class-0 scenes (training and held-out) carries a corner mark (0)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_flag("--write-dataset", a->write_dataset, "also write the held-out scenes as a dataset folder (OUT/dataset)");
  add_runtime_flags(sub, a->runtime, false);
  return {sub, [a] { return demo_command::run(*a); }};
}

}  // namespace lumen::cli
