#include "commands.h"

#include <lumen/error.h>
#include <lumen/explain.h>
#include <lumen/files.h>
#include <lumen/report.h>
#include <lumen/image.h>
#include <lumen/model.h>
#include <lumen/output.h>
#include <lumen/task.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <sstream>
#include <filesystem>
#include <iostream>
#include <utility>
#include <map>
#include <set>

namespace lumen::cli {
namespace fs = std::filesystem;

// This command's own pieces (named, so that the CLI's files can be compiled as one batch).
namespace explain {

struct Args {
  std::string model, card, labels, out = "lumen-out", colormap = "jet", target = "logit";
  std::vector<std::string> images, layers, methods{"gradcam"};
  std::string image_list, shard;  // a file of image paths; this process's block of them
  std::vector<int64_t> classes;
  std::vector<int> size;
  std::vector<float> mean, std;
  std::string color_order;
  int top_k = 1, batch = 8;
  Runtime runtime;
  bool counterfactual = false, allow_empty = false, no_box = false, plain = false;
  std::string sign = "all";
  float box_threshold = 0.15f, alpha = 0.5f;
  std::string aggregate;
  std::vector<float> layer_weights;
  bool contrast = false;
  std::string output;              // output path: tuple index / dict key, '.'-separated
  int64_t token = -1;              // position of a [N,T,V] output
  std::vector<int64_t> sequence;   // teacher-forced tokens
  std::string tokens;              // --tokens grid=HxW,prefix=P,channels=first|last
  std::string task = "classification";
  std::vector<int> region;         // segmentation: x0,y0,x1,y1 in the image's pixels
  std::string mask;                // segmentation: a mask image, nonzero = inside
  std::vector<std::string> references;  // similarity: reference images, or one embedding .npy
  bool dissimilar = false;
  std::vector<float> box;          // detection: x0,y0,x1,y1 in the image's pixels
  float score_threshold = 0.5f, iou_threshold = 0.5f;
  int max_boxes = 100;
  std::string detection_output = "torchvision";
  std::set<TaskSetting> given;     // the task-related flags given (lumen/task.h)
  MethodFlags method;
};

// --task segmentation: one target per --class, the sum of its scores over the predicted pixels, a
// region or a mask. --region is in each image's own pixels: a region per image (`images`, with their
// `paths`); --mask is one for all. Neither: the pixels each image's output predicts as the class.
std::vector<Target> segmentation_targets(const Args& a, const std::vector<cv::Mat>& images, const std::vector<std::string>& paths) {
  std::vector<torch::Tensor> regions;
  if (!a.mask.empty()) {
    regions.push_back(mask_region(read_image(a.mask)));
  } else if (!a.region.empty()) {
    for (size_t i = 0; i < images.size(); ++i) {
      const cv::Size image = images[i].size();
      regions.push_back(rectangle_region(a.region[0], a.region[1], a.region[2], a.region[3], image.width, image.height));
      if (!regions.back().defined())
        throw Error("--region lies outside " + paths[i] + " (" + std::to_string(image.width) + "x" + std::to_string(image.height) + ")");
    }
  }
  const OutputSelector select = a.output.empty() ? segmentation_scores() : output_path(a.output);
  std::vector<Target> targets;
  for (int64_t c : a.classes) targets.push_back(regions.empty() ? segmentation_target(c, torch::Tensor(), select) : segmentation_target(c, regions, select));
  return targets;
}

// Which flags go with --task: lumen's task rules (lumen/task.h), in the CLI's flag names.
const std::map<TaskSetting, std::string> kTaskFlags{
    {TaskSetting::Classes, "--class"},           {TaskSetting::TopK, "--top-k"},
    {TaskSetting::Score, "--target"},            {TaskSetting::Counterfactual, "--counterfactual"},
    {TaskSetting::Contrast, "--contrast"},       {TaskSetting::Output, "--output"},
    {TaskSetting::Sequence, "--sequence"},       {TaskSetting::Token, "--token"},
    {TaskSetting::Region, "--region"},           {TaskSetting::Mask, "--mask"},
    {TaskSetting::References, "--reference"},    {TaskSetting::Dissimilar, "--dissimilar"},
    {TaskSetting::Box, "--box"},                 {TaskSetting::ScoreThreshold, "--score-threshold"},
    {TaskSetting::IouThreshold, "--iou-threshold"}, {TaskSetting::MaxBoxes, "--max-boxes"},
    {TaskSetting::DetectionOutput, "--detection-output"}};

void check_task(const Args& a) {
  if (const auto conflict = task_conflict(parse_task(a.task), a.given))
    throw Error(describe(*conflict, [](TaskSetting s) { return kTaskFlags.at(s); }, [](Task t) { return "--task " + to_string(t); }));
}

void check_segmentation(const Args& a) {
  if (a.task != "segmentation") return;
  if (!a.region.empty() && !a.mask.empty()) throw Error("give --region or --mask, not both");
  if (!a.region.empty() && (a.region.size() != 4 || a.region[2] <= a.region[0] || a.region[3] <= a.region[1]))
    throw Error("--region must be x0,y0,x1,y1 with x0 < x1 and y0 < y1 (image pixels)");
  if (!a.mask.empty() && !path_exists(a.mask)) throw Error("mask not found: " + a.mask);
}

void check_detection(const Args& a) {
  if (a.task != "detection" || a.box.empty()) return;
  if (a.box.size() != 4 || !(a.box[2] > a.box[0] && a.box[3] > a.box[1]))
    throw Error("--box must be x0,y0,x1,y1 with x0 < x1 and y0 < y1 (image pixels)");
  if (a.classes.size() != 1) throw Error("--box needs one --class: the label of the box to explain");
}

DetectionSettings detection_settings_of(const Args& a) {
  DetectionSettings s;
  s.format = parse_detection_format(a.detection_output);
  s.score_threshold = a.score_threshold;
  s.max_boxes = a.max_boxes;
  s.iou = a.iou_threshold;
  s.classes = a.classes;
  return s;
}

// --task detection: the boxes the detector finds in each image (above --score-threshold, of --class's
// labels when given), read from the batch's own forward; or the one --box given, in each image's pixels
// (`images`' sizes), which must match a detection of its class there.
std::function<std::vector<Target>(const torch::IValue&, int64_t)> detection_targets_of(const Args& a, const std::vector<cv::Mat>& images,
                                                                                        const std::vector<std::string>& paths, cv::Size input) {
  const DetectionSettings settings = detection_settings_of(a);
  if (a.box.empty()) return [settings](const torch::IValue& output, int64_t) { return detection_targets(output, settings); };
  std::vector<std::pair<float, float>> scales;  // model input pixels per image pixel
  for (const auto& img : images)
    scales.emplace_back(static_cast<float>(input.width) / static_cast<float>(img.cols), static_cast<float>(input.height) / static_cast<float>(img.rows));
  return given_box_targets({a.box[0], a.box[1], a.box[2], a.box[3], a.classes.front(), 1.0f, {}}, scales, settings, paths);
}

bool is_npy(const std::string& path) { return fs::path(path).extension() == ".npy"; }

void check_similarity(const Args& a) {
  if (a.task != "similarity") return;
  const bool npy = std::any_of(a.references.begin(), a.references.end(), is_npy);
  if (npy && a.references.size() != 1) throw Error("--reference takes images, or one embedding .npy file, not both");
  for (const auto& r : a.references)
    if (!path_exists(r)) throw Error("reference not found: " + r);
}

// The concept of --task similarity: one saved embedding (.npy, D values), or the mean embedding of the
// reference images through the same model and preprocessing.
torch::Tensor reference_embedding(const Args& a, const Explainer& explainer, const OutputSelector& select) {
  if (is_npy(a.references.front())) {
    const cv::Mat m = read_npy(a.references.front());
    if (m.rows != 1 && m.cols != 1) throw Error(a.references.front() + ": an embedding must be one vector ([D] or [1, D])");
    return torch::from_blob(const_cast<float*>(m.ptr<float>()), {static_cast<int64_t>(m.total() * static_cast<size_t>(m.channels()))},
                            torch::kFloat32).clone();
  }
  std::vector<cv::Mat> images;
  for (const auto& r : a.references) images.push_back(read_image(r));
  return explainer.embed(images, select).mean(0);
}

// Unique file stems: cat.jpg and other/cat.png become cat and cat-2.
std::vector<std::string> unique_stems(const std::vector<std::string>& paths) {
  std::map<std::string, int> seen;
  std::vector<std::string> stems;
  for (const auto& p : paths) {
    std::string s = safe_name(stem_of(p));
    int n = ++seen[s];
    stems.push_back(n == 1 ? s : s + "-" + std::to_string(n));
  }
  return stems;
}

// The model's preprocessing and labels: the card's, with the flags over them.
struct Inputs {
  Preprocess pre;
  std::vector<std::string> labels, layers;
};

Inputs inputs_of(const Args& a) {
  Inputs in;
  in.layers = split_list(a.layers);
  if (!a.card.empty()) {
    ModelCard card = load_card(a.card);
    in.pre = card.preprocess;
    in.labels = card.labels;
    if (in.layers.empty() && !card.cam_layer.empty()) in.layers.push_back(card.cam_layer);
  }
  if (a.size.size() == 2) in.pre.height = a.size[0], in.pre.width = a.size[1];
  if (!a.mean.empty()) in.pre.mean = a.mean;
  if (!a.std.empty()) in.pre.std = a.std;
  if (!a.color_order.empty()) in.pre.rgb = a.color_order == "RGB";
  if (!a.labels.empty()) in.labels = load_labels(a.labels);
  return in;
}

ExplainOptions options_of(const Args& a, const std::vector<std::string>& layers) {
  ExplainOptions opt;
  opt.methods = split_list(a.methods);
  opt.layers = layers;
  opt.classes = a.classes;
  opt.top_k = a.top_k;
  opt.score = parse_score(a.target);
  opt.counterfactual = a.counterfactual;
  opt.box_threshold = a.box_threshold;
  opt.aggregate = a.aggregate;
  opt.layer_weights = a.layer_weights;
  opt.contrast = a.contrast;
  if (!a.tokens.empty()) opt.tokens = parse_tokens(a.tokens);
  opt.select = output_path(a.output);
  if (a.token >= 0) opt.select = at_position(opt.select, a.token);
  if (!a.sequence.empty()) {
    if (a.token >= 0 || !a.classes.empty()) throw Error("--sequence explains the whole caption; it does not take --token or --class");
    opt.targets = {sequence_target(a.sequence, output_path(a.output))};
    if (a.counterfactual) throw Error("--sequence has no counterfactual");
  }
  check_task(a);
  check_segmentation(a);
  check_similarity(a);
  check_detection(a);
  if (a.task == "segmentation" && a.region.empty()) opt.targets = segmentation_targets(a, {}, {});
  apply(a.method, opt);
  opt.shared.progress = progress_printer(a.runtime.quiet);
  return opt;
}

// What the maps explain, as run.json echoes it: the score, and a task's own settings.
nlohmann::json target_json(const Args& a, const ExplainOptions& opt) {
  nlohmann::json t{{"score", to_string(opt.score)}, {"counterfactual", opt.counterfactual}, {"task", a.task}};
  if (a.task == "detection") {
    t["detection"] = {{"output", a.detection_output}, {"score_threshold", a.score_threshold}, {"iou_threshold", a.iou_threshold},
                      {"max_boxes", a.max_boxes}, {"classes", a.classes}};
    if (!a.box.empty()) t["detection"]["box"] = a.box;
  }
  return t;
}

// The run document (docs/json-schema.md) around the images' entries.
nlohmann::json run_document(const Args& a, const Inputs& in, const ExplainOptions& opt, double seconds, const nlohmann::json& images) {
  return {{"lumen_version", lumen::version()},
          {"model", a.model},
          {"layers", in.layers},
          {"methods", opt.methods},
          {"target", target_json(a, opt)},
          {"preprocess",
           {{"size", {in.pre.height, in.pre.width}},
            {"mean", in.pre.mean},
            {"std", in.pre.std},
            {"color_order", in.pre.rgb ? "RGB" : "BGR"},
            {"resize", "stretch (bilinear, whole image, aspect ratio not kept)"}}},
          {"box_threshold", opt.box_threshold},
          {"method_options", settings_json(opt)},
          {"normalisation", opt.shared.compat == Compat::PytorchGradCam
                                ? "pytorch-grad-cam: (m - min) / (max + 1e-7) at the layer, resized to the input, scaled again"
                                : "min-max of the map upsampled to the image"},
          {"seconds", seconds},
          {"images", images}};
}

// A completeness gap (sum of attributions against f(x) - f(baseline)) above 5 % is said, with what
// would close it: integrated gradients' steps, if the error falls as 1/steps (a conservative guess:
// smooth integrands fall faster); a sampling estimate's draws, if it falls as 1/sqrt(draws); DeepLIFT's
// gap comes from a unit the rescale rule does not cover (max-pool keeps its gradient).
void note_completeness_gaps(const nlohmann::json& images) {
  for (const auto& image : images)
    for (const auto& m : image["maps"]) {
      if (!m.contains("extra") || !m["extra"].contains("completeness_gap")) continue;
      const auto& extra = m["extra"];
      const double gap = extra["completeness_gap"].get<double>();
      if (!(gap > 0.05)) continue;
      std::ostringstream advice;
      if (extra.contains("steps")) {
        const int steps = extra["steps"].get<int>();
        advice << " at " << steps << " steps; --steps " << static_cast<int64_t>(std::ceil(steps * gap / 0.01)) << " or more should bring it under 1 %";
      } else if (extra.contains("samples")) {
        const int samples = extra["samples"].get<int>();
        advice << " at " << samples << " samples, an estimate; --samples " << static_cast<int64_t>(std::ceil(samples * std::min(1e4, (gap / 0.05) * (gap / 0.05))))
               << " should bring it near 5 %";
      } else {
        advice << "; a unit without the rescale rule (max-pool) breaks summation-to-delta";
      }
      std::cerr << "lumen: note: " << m["method"].get<std::string>() << " on " << image["source"].get<std::string>() << " ("
                << m["target"].get<std::string>() << "): the attributions miss f(x) - f(baseline) by " << std::fixed << std::setprecision(1)
                << 100 * gap << " %" << std::defaultfloat << advice.str() << "\n";
    }
}

// Say how each layer that is not a plain [N,C,h,w] map was read (transformer tokens, channels last,
// volumes).
void note_layouts(const nlohmann::json& images) {
  std::set<std::string> layouts;
  for (const auto& image : images)
    for (const auto& m : image["maps"])
      if (m.contains("extra") && m["extra"].contains("layout"))
        layouts.insert((m["extra"].contains("blocks") ? "the attention of " + std::to_string(m["extra"]["blocks"].get<int>()) + " blocks"
                                                       : "layer '" + m["layer"].get<std::string>() + "'") +
                       " read as " + m["extra"]["layout"].get<std::string>());
  for (const auto& l : layouts) std::cerr << "lumen: note: " << l << " (--tokens to say otherwise)\n";
}

// Each image's top-3 predictions; for an embedding model (no classes), the similarity its maps explain;
// for a detector, the boxes explained.
void print_predictions(const nlohmann::json& images, const std::string& task) {
  if (task == "detection") {
    for (const auto& entry : images) {
      std::cout << entry["source"].get<std::string>() << ":";
      std::set<std::string> said;
      for (const auto& m : entry["maps"]) {
        if (!m.contains("detections") || !said.insert(m["target"].get<std::string>()).second) continue;
        const auto& d = m["detections"][0];
        std::cout << "  " << m["target"].get<std::string>() << " " << (d["label"].get<std::string>().empty() ? std::to_string(d["class"].get<int64_t>()) : d["label"].get<std::string>())
                  << " " << d["score"].get<float>();
      }
      std::cout << (said.empty() ? "  no box\n" : "\n");
    }
    return;
  }
  if (task == "similarity") {
    for (const auto& entry : images)
      if (!entry["maps"].empty())
        std::cout << entry["source"].get<std::string>() << ": " << entry["maps"][0]["target"].get<std::string>() << " "
                  << entry["maps"][0]["target_value"].get<float>() << "\n";
    return;
  }
  for (const auto& entry : images) {
    std::cout << entry["source"].get<std::string>() << ":";
    for (size_t r = 0; r < std::min<size_t>(3, entry["top5"].size()); ++r) {
      const auto& p = entry["top5"][r];
      std::cout << "  " << p["class"].get<int64_t>() << " " << p["label"].get<std::string>() << " " << p["probability"].get<float>();
    }
    std::cout << "\n";
  }
}

// --image-list: one path per line, relative to the list's folder; blank lines and # comments skipped.
std::vector<std::string> read_image_list(const std::string& list) {
  std::vector<std::string> out;
  std::istringstream in(read_text_file(list, "image list"));
  const fs::path base = fs::path(list).parent_path();
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    const fs::path p = line.substr(first);
    out.push_back(p.is_absolute() ? p.string() : (base / p).string());
  }
  if (out.empty()) throw Error("image list " + list + " names no image");
  return out;
}

// Whether the inputs are .npy volumes (a 3-D network's volumes or clips, taken as the model's input:
// lumen::read_volume) rather than images; refuses a mix, and the flags that only images take.
bool volume_inputs(const Args& a) {
  const bool volumes = std::all_of(a.images.begin(), a.images.end(), is_npy);
  if (!volumes && std::any_of(a.images.begin(), a.images.end(), is_npy)) throw Error("give images or .npy volumes, not both in one run");
  if (volumes && a.task != "classification") throw Error("--task " + a.task + " explains 2-D images, not volumes");
  if (volumes && (!a.size.empty() || !a.mean.empty() || !a.std.empty()))
    throw Error("a .npy volume is the model's input as it is: --input-size, --mean and --std do not apply");
  return volumes;
}

// Volumes of one batch, explained together when they have one shape (else shape by shape, in order);
// `slices` gets each volume's slices as pictures. `first`: the first path's volume when the caller has
// read it already (a volume can be large; it is read once).
std::vector<ImageExplanation> explain_volumes(const Explainer& explainer, const std::vector<std::string>& paths, const ExplainOptions& opt,
                                              bool rgb, std::vector<cv::Mat>& slices, torch::Tensor first) {
  std::vector<torch::Tensor> volumes;
  for (const auto& p : paths) {
    volumes.push_back(volumes.empty() && first.defined() ? first : read_volume(p));
    slices.push_back(volume_slices(volumes.back(), rgb));
  }
  std::vector<ImageExplanation> out;
  for (size_t first = 0; first < volumes.size();) {
    size_t last = first + 1;
    while (last < volumes.size() && volumes[last].sizes() == volumes[first].sizes()) ++last;
    const std::vector<torch::Tensor> group(volumes.begin() + static_cast<int64_t>(first), volumes.begin() + static_cast<int64_t>(last));
    const std::vector<std::string> names(paths.begin() + static_cast<int64_t>(first), paths.begin() + static_cast<int64_t>(last));
    for (auto& e : explainer.explain_tensor(torch::stack(group), opt, {}, names)) out.push_back(std::move(e));
    first = last;
  }
  return out;
}

// The first batch's input shape, which the forward mode is probed with. For volumes that is the first
// volume's, read here once into `first_volume` for the first batch to explain.
std::vector<int64_t> first_batch_shape(const Args& a, const Inputs& in, bool volumes, torch::Tensor& first_volume) {
  const int64_t first_batch = static_cast<int64_t>(std::min(a.images.size(), static_cast<size_t>(a.batch)));
  if (!volumes) return {first_batch, 3, in.pre.height, in.pre.width};
  first_volume = read_volume(a.images.front());
  std::vector<int64_t> shape = first_volume.sizes().vec();
  shape.insert(shape.begin(), first_batch);
  return shape;
}

int run(const Args& given) {
  given.runtime.apply();
  // The images: --image, then --image-list's; with --shard, this process's block of them. File stems are
  // made unique over the whole list, so that shards writing into one folder never collide.
  Args a = given;
  if (!a.image_list.empty())
    for (auto& p : read_image_list(a.image_list)) a.images.push_back(std::move(p));
  if (a.images.empty()) throw Error("no image given: --image FILE ... or --image-list FILE");
  const Shard shard = shard_of_flag(a.shard);
  const auto stems = shard_of(unique_stems(a.images), shard, static_cast<size_t>(std::max(1, a.batch)));
  a.images = shard_of(a.images, shard, static_cast<size_t>(std::max(1, a.batch)));
  // One run file per shard: the shards of one list write their maps into the same folder.
  const std::string run_file = shard.whole() ? "run.json" : "run." + std::to_string(shard.index) + "-of-" + std::to_string(shard.count) + ".json";
  const std::string page_file = shard.whole() ? "index.html" : "index." + std::to_string(shard.index) + "-of-" + std::to_string(shard.count) + ".html";
  // Everything that can be checked before any work is checked first, so a typo costs no time.
  if (a.batch < 1) throw Error("--batch must be at least 1");
  const Inputs in = inputs_of(a);
  ExplainOptions opt = options_of(a, in.layers);
  check_request(opt);
  for (const auto& img : a.images)
    if (!path_exists(img)) throw Error("image not found: " + img);
  const bool volumes = volume_inputs(a);
  RenderOptions render;
  render.rgb_input = in.pre.rgb;
  render.colormap = parse_colormap(a.colormap);
  render.alpha = a.alpha;
  render.draw_box = !a.no_box;
  render.sign = parse_sign(a.sign);
  render.plain = a.plain;

  Model model = Model::load(a.model);
  if (model.images_per_forward() > 0) a.batch = std::min(a.batch, static_cast<int>(model.images_per_forward()));
  for (const auto& l : in.layers) model.check_layer(l);
  nlohmann::json forward;
  torch::Tensor first_volume;  // read for the forward probe's shape, explained in the first batch
  model = with_forward_mode(model, a.runtime, first_batch_shape(a, in, volumes, first_volume), forward);
  Explainer explainer(model, in.pre, in.labels);
  if (a.task == "similarity") {
    const OutputSelector embedding = a.output.empty() ? OutputSelector() : output_path(a.output);
    opt.targets = {similarity_target(reference_embedding(a, explainer, embedding), a.dissimilar, embedding)};
  }
  OutputDir out(a.out);

  nlohmann::json images = nlohmann::json::array();
  std::vector<std::string> empty_maps;
  auto start = std::chrono::steady_clock::now();
  const Progress images_done = progress_printer(a.runtime.quiet || a.images.size() <= static_cast<size_t>(a.batch));
  for (size_t first = 0; first < a.images.size(); first += a.batch) {
    size_t last = std::min(a.images.size(), first + static_cast<size_t>(a.batch));
    std::vector<cv::Mat> imgs;
    std::vector<std::string> paths(a.images.begin() + first, a.images.begin() + last);
    std::vector<std::string> batch_stems(stems.begin() + first, stems.begin() + last);
    ExplainOptions batch_opt = opt;
    std::vector<ImageExplanation> explained;
    if (volumes) {
      explained = explain_volumes(explainer, paths, batch_opt, in.pre.rgb, imgs, std::exchange(first_volume, torch::Tensor()));
    } else {
      for (const auto& p : paths) imgs.push_back(read_image(p));
      if (a.task == "segmentation" && !a.region.empty()) batch_opt.targets = segmentation_targets(a, imgs, paths);
      if (a.task == "detection") batch_opt.targets_from_output = detection_targets_of(a, imgs, paths, {in.pre.width, in.pre.height});
      explained = explainer.explain(imgs, batch_opt, paths);
    }
    auto entries = write_maps(out, imgs, explained, batch_stems, render);
    for (size_t i = 0; i < entries.size(); ++i) {
      // Only --allow-truncated lets such a file through; the record says what was explained.
      if (a.runtime.allow_truncated && image_file_truncated(paths[i]))
        entries[i]["warnings"] = {"truncated: the file ends before its end marker; the decoder filled the rest with grey"};
      images.push_back(entries[i]);
    }
    for (size_t i = 0; i < explained.size() && a.task == "detection"; ++i)
      if (explained[i].maps.empty())
        std::cerr << "lumen: note: no detection" << (a.classes.empty() ? "" : " of --class's labels") << " scored " << a.score_threshold
                  << " or more in " << paths[i] << " (--score-threshold lowers the bar); nothing to explain there\n";
    for (size_t i = 0; i < explained.size(); ++i)
      for (const auto& m : explained[i].maps)
        if (m.empty) empty_maps.push_back(map_file_stem(batch_stems[i], m));
    images_done("images", static_cast<int64_t>(last), static_cast<int64_t>(a.images.size()));
  }
  note_layouts(images);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json run = run_document(a, in, opt, seconds, images);
  run["forward"] = forward;
  if (!shard.whole()) run["shard"] = {{"index", shard.index}, {"count", shard.count}, {"source", shard.source}};
  out.write(run_file, run.dump(2) + "\n");
  out.write(page_file, report::run_page(run));
  out.commit();
  note_completeness_gaps(images);
  std::cout << "wrote " << images.size() << " image(s) to " << a.out << " (" << run_file << ", " << page_file << ") in " << duration_text(seconds) << "\n";
  print_predictions(images, a.task);
  if (!empty_maps.empty() && !a.allow_empty) {
    std::cerr << "lumen: error: " << empty_maps.size() << " map(s) are empty (constant: the target's gradient at the layer is zero), e.g. "
              << empty_maps.front() << "; files were written and flagged \"empty\" in run.json (--allow-empty accepts this)"
              << (a.task == "segmentation" && a.region.empty() && a.mask.empty()
                      ? "; with --task segmentation this happens when no pixel is predicted as the class: give --region or --mask"
                      : "")
              << "\n";
    return 3;
  }
  return 0;
}

}  // namespace explain

Command add_explain(CLI::App& app) {
  auto* sub = app.add_subcommand("explain", "Explain a model's decision on images");
  auto a = std::make_shared<explain::Args>();
  add_model_flag(sub, a->model);
  sub->add_option("--card", a->card, "model card JSON: input size, mean/std, colour order, labels, CAM layer");
  sub->add_option("--image,-i", a->images, "image file(s); a .npy file is a 3-D network's volume or clip, [C,D,H,W] or [D,H,W], as the model's input");
  sub->add_option("--image-list", a->image_list, "a file of image paths, one per line (relative to the list's folder); for bulk runs");
  add_shard_flag(sub, a->shard);
  sub->add_option("--layer,-l", a->layers, "module path(s) to explain at, e.g. features.18 (default: the card's)");
  sub->add_option("--method,--methods", a->methods, "method(s), comma-separated (default gradcam): " + joined(method_names()));
  sub->add_option("--class,-c", a->classes, "class index(es) to explain (default: the top-k predictions)");
  sub->add_option("--top-k,-k", a->top_k, "explain the k best predicted classes (default 1)")
      ->check(CLI::Range(1, 1000))
      ->excludes("--class");
  sub->add_option("--target", a->target, "score to explain: logit (default), prob, logprob");
  sub->add_flag("--counterfactual", a->counterfactual, "explain the negated score: evidence against the class");
  sub->add_option("--out,-o", a->out, "output directory (default lumen-out)")->check(output_folder());
  sub->add_option("--colormap", a->colormap, "colour map of unsigned maps: jet (default), turbo, viridis or inferno")
      ->check(CLI::IsMember({"jet", "turbo", "viridis", "inferno"}));
  sub->add_option("--sign", a->sign,
                  "signed maps (integrated-gradients, input-x-gradient, occlusion, contrast): all (default: diverging colours around "
                  "zero), positive, negative or absolute")
      ->check(CLI::IsMember({"all", "positive", "negative", "absolute"}));
  sub->add_flag("--plain", a->plain, "pictures without the caption strip and colour bar (for composing your own figures)");
  sub->add_option("--alpha", a->alpha, "heat-map weight in the overlay (0.5)")->check(CLI::Range(0.0, 1.0));
  sub->add_flag("--no-box", a->no_box, "do not draw the box on overlays");
  sub->add_option("--box-threshold", a->box_threshold, "box threshold as a fraction of the map's max (0.15)")->check(CLI::Range(0.0, 0.999));
  sub->add_option("--batch", a->batch, "images per forward pass (8)");
  sub->add_option("--input-size", a->size, "model input H W (overrides the card)")->expected(2);
  sub->add_option("--mean", a->mean, "per-channel mean in 0-255 units, model channel order")->expected(3);
  sub->add_option("--std", a->std, "per-channel std in 0-255 units, model channel order")->expected(3);
  sub->add_option("--color-order", a->color_order, "RGB or BGR")->check(CLI::IsMember({"RGB", "BGR"}));
  sub->add_option("--labels", a->labels, "labels file, one class name per line");
  sub->add_flag("--allow-empty", a->allow_empty, "exit 0 even when a map is empty");
  sub->add_option("--aggregate", a->aggregate, "with several --layer: also combine them: mean, max, product or weighted")
      ->check(CLI::IsMember({"mean", "max", "product", "weighted"}));
  sub->add_option("--layer-weights", a->layer_weights, "--aggregate weighted: one weight per layer");
  sub->add_flag("--contrast", a->contrast,
                "also write class-difference maps: each target against the other targets (--top-k K or several --class)");
  sub->add_option("--output", a->output,
                  "which model output holds the scores: tuple/list index or dict key, '.'-separated (e.g. 1, logits, heads.0)");
  sub->add_option("--token", a->token, "with a [N,T,V] output: explain step T (with --class / --top-k)");
  sub->add_option("--tokens", a->tokens,
                  "how the layer's output lies in space when its shape leaves it open: grid=HxW,prefix=P (tokens before the grid), "
                  "channels=first|last");
  sub->add_option("--sequence", a->sequence,
                  "with a [N,T,V] output: explain the sum of log-softmax scores of these tokens (a teacher-forced caption)")
      ->delimiter(',');
  sub->add_option("--task", a->task,
                  "what the model does: classification (default), segmentation ([N,classes,h,w] scores, or a dict's \"out\"; "
                  "explains --class over the pixels predicted as it, --region or --mask), similarity (an embedding model: the "
                  "cosine similarity of each image's embedding to --reference's) or detection (a torchvision detector: one map per "
                  "box found, or --box)")
      ->check(CLI::IsMember({"classification", "segmentation", "similarity", "detection"}));
  sub->add_option("--box", a->box, "--task detection: explain this box (x0,y0,x1,y1 in image pixels) as the detection of --class it overlaps")
      ->delimiter(',')
      ->expected(4);
  sub->add_option("--score-threshold", a->score_threshold, "--task detection: explain every box scoring at least this (0.5)")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--iou-threshold", a->iou_threshold, "--task detection: a box matches a reference when their IoU exceeds this (0.5)")
      ->check(CLI::Range(0.0, 0.999));
  sub->add_option("--detection-output", a->detection_output,
                  "--task detection: the output's form: torchvision (default: a list of dicts with boxes, labels, scores), yolov5 (a raw "
                  "[N, B, 5+C] tensor: cx, cy, w, h, objectness, classes) or yolov8 ([N, 4+C, B]), which get class-aware NMS at IoU 0.45; or "
                  "boxes ([N, K, 6]: x0, y0, x1, y1, score, class of a model that ran its own NMS)")
      ->check(CLI::IsMember({"torchvision", "yolov5", "yolov8", "boxes"}));
  sub->add_option("--max-boxes", a->max_boxes, "--task detection: explain at most this many boxes, the best (100)")->check(CLI::Range(1, 10000));
  sub->add_option("--reference", a->references,
                  "--task similarity: reference image(s), whose mean embedding is the concept, or one embedding .npy ([D] or [1, D])");
  sub->add_flag("--dissimilar", a->dissimilar, "--task similarity: explain what makes each image unlike the references (the negated similarity)");
  sub->add_option("--region", a->region, "--task segmentation: explain the class over this box, x0,y0,x1,y1 in image pixels")
      ->delimiter(',')
      ->expected(4);
  sub->add_option("--mask", a->mask, "--task segmentation: explain the class over this mask image (nonzero = inside, stretched over the image)");
  add_method_flags(sub, a->method);
  add_runtime_flags(sub, a->runtime);
  add_forward_flag(sub, a->runtime);
  return {sub, [a, sub] {
            // --target logit and --top-k 1 are the defaults, whoever wrote them.
            for (const auto& [setting, flag] : explain::kTaskFlags)
              if (sub->count(flag) > 0 && !(setting == TaskSetting::Score && a->target == "logit") && !(setting == TaskSetting::TopK && a->top_k == 1))
                a->given.insert(setting);
            return explain::run(*a);
          }};
}

}  // namespace lumen::cli
