#include "serve/request.h"

#include <lumen/error.h>
#include <lumen/image.h>
#include <lumen/methods.h>
#include <lumen/output.h>
#include <lumen/target.h>
#include <lumen/task.h>

#include "core/hash.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string_view>

namespace lumen::serve {

namespace {

const std::set<std::string>& presentation_keys() {
  // Keys that change how an answer is drawn or delivered, not what is explained: left out of the
  // batching key, so that requests differing only in them share a forward pass.
  static const std::set<std::string> keys{"model", "job", "raw", "pictures", "colormap", "alpha", "sign", "plain"};
  return keys;
}

bool is_setting(const std::string& name) {
  for (const auto& s : setting_catalog())
    if (s.name == name) return true;
  return false;
}

template <typename T>
T get_as(const nlohmann::json& params, const std::string& key, const std::string& what) {
  try {
    return params.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw HttpError(400, "parameter \"" + key + "\" must be " + what);
  }
}

// A list parameter may also be given as one value ("gradcam" or ["gradcam", "hirescam"]).
template <typename T>
std::vector<T> list_of(const nlohmann::json& params, const std::string& key, const std::string& what) {
  const auto& v = params.at(key);
  // An integer beyond 64 bits parses as a float, which nlohmann would cast to T unchecked (undefined
  // behaviour; a fuzz find): integers must be JSON integers.
  if constexpr (std::is_integral_v<T>) {
    bool integers = v.is_number_integer();
    if (v.is_array()) {
      integers = true;
      for (const auto& e : v) integers = integers && e.is_number_integer();
    }
    if (!integers) throw HttpError(400, "parameter \"" + key + "\" must be " + what + " or a list of them");
  }
  try {
    if (v.is_array()) return v.get<std::vector<T>>();
    return {v.get<T>()};
  } catch (const nlohmann::json::exception&) {
    throw HttpError(400, "parameter \"" + key + "\" must be " + what + " or a list of them");
  }
}

double finite_in(const nlohmann::json& params, const std::string& key, double low, double high) {
  const double v = get_as<double>(params, key, "a number");
  if (!std::isfinite(v) || v < low || v > high)
    throw HttpError(400, "parameter \"" + key + "\" must be from " + std::to_string(low) + " to " + std::to_string(high));
  return v;
}

std::string choice(const nlohmann::json& params, const std::string& key, const std::set<std::string>& allowed) {
  const auto v = get_as<std::string>(params, key, "text");
  if (!allowed.count(v)) {
    std::string names;
    for (const auto& a : allowed) names += (names.empty() ? "" : ", ") + a;
    throw HttpError(400, "parameter \"" + key + "\" must be one of " + names + ", got \"" + v + "\"");
  }
  return v;
}

// Four finite numbers x0, y0, x1, y1 with x0 < x1 and y0 < y1 (image pixels).
std::vector<float> corners(const nlohmann::json& params, const std::string& key) {
  const auto v = list_of<float>(params, key, "a number");
  if (v.size() != 4 || !std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); }) || !(v[2] > v[0] && v[3] > v[1]))
    throw HttpError(400, "parameter \"" + key + "\" must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1 (image pixels)");
  return v;
}

// "task" as the CLI's --task: segmentation explains each class's scores summed over the pixels the
// batch's own output predicts as it, or over "region"; detection explains every box the detector
// finds in each image, or the one "box" of the one class given. Which parameters go with which task:
// lumen's task rules (lumen/task.h), in the API's names. A region or box is in each image's own
// pixels, so it becomes each image's target there (Params::per_image).
void apply_task(const std::string& task, const DetectionSettings& detection, const nlohmann::json& params, const cv::Mat& mask,
                cv::Size input, ExplainOptions& opt, Params& p) {
  static const std::map<TaskSetting, std::string> names{
      {TaskSetting::Classes, "classes"},     {TaskSetting::TopK, "top_k"},
      {TaskSetting::Score, "target"},        {TaskSetting::Counterfactual, "counterfactual"},
      {TaskSetting::Contrast, "contrast"},   {TaskSetting::Region, "region"}, {TaskSetting::Mask, "mask"},
      {TaskSetting::Box, "box"},             {TaskSetting::ScoreThreshold, "score_threshold"},
      {TaskSetting::IouThreshold, "iou_threshold"}, {TaskSetting::MaxBoxes, "max_boxes"},
      {TaskSetting::DetectionOutput, "detection_output"}};
  std::set<TaskSetting> given;
  for (const auto& [setting, name] : names)
    if (params.contains(name)) given.insert(setting);
  if (!mask.empty()) given.insert(TaskSetting::Mask);  // a part of its own, not a parameter
  if (const auto conflict = task_conflict(parse_task(task), given))
    throw HttpError(400, describe(*conflict, [](TaskSetting s) { return "\"" + names.at(s) + "\""; },
                                  [](Task t) { return "\"task\": \"" + to_string(t) + "\""; }));
  if (task == "segmentation" && !mask.empty()) {
    // Nonzero = inside, stretched over the output, as the CLI's --mask: the same for every image.
    if (params.contains("region")) throw HttpError(400, "give \"region\" or a \"mask\" part, not both");
    const torch::Tensor region = mask_region(mask);
    try {
      for (const int64_t c : opt.classes) opt.targets.push_back(segmentation_target(c, region));
    } catch (const Error& e) {
      throw HttpError(400, std::string("the mask part: ") + e.what());
    }
  } else if (task == "segmentation" && params.contains("region")) {
    const auto r = corners(params, "region");
    p.per_image = [r, classes = opt.classes](ExplainOptions& o, cv::Size image, const std::string& source) {
      const torch::Tensor region = rectangle_region(r[0], r[1], r[2], r[3], image.width, image.height);
      if (!region.defined())
        throw HttpError(400, "\"region\" lies outside " + source + " (" + std::to_string(image.width) + "x" + std::to_string(image.height) + ")");
      o.targets.clear();
      for (const int64_t c : classes) o.targets.push_back(segmentation_target(c, region));
    };
  } else if (task == "segmentation") {
    for (const int64_t c : opt.classes) opt.targets.push_back(segmentation_target(c));
  } else if (task == "detection" && params.contains("box")) {
    const auto b = corners(params, "box");
    if (opt.classes.size() != 1) throw HttpError(400, "\"box\" needs one class in \"classes\": the label of the box to explain");
    const Detection box{b[0], b[1], b[2], b[3], opt.classes.front(), 1.0f, {}};
    p.per_image = [box, detection, input](ExplainOptions& o, cv::Size image, const std::string& source) {
      const std::pair<float, float> scale{static_cast<float>(input.width) / static_cast<float>(image.width),
                                          static_cast<float>(input.height) / static_cast<float>(image.height)};
      o.targets_from_output = given_box_targets(box, {scale}, detection, {source});
    };
  } else if (task == "detection") {
    DetectionSettings s = detection;
    s.classes = opt.classes;
    opt.targets_from_output = [s](const torch::IValue& output, int64_t) { return detection_targets(output, s); };
  }
}

}  // namespace

nlohmann::json parse_params_json(const std::string& text) {
  if (text.empty()) return nlohmann::json::object();
  nlohmann::json params;
  try {
    params = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse errors, and numbers too large for any type (found by fuzz/fuzz_serve.cpp)
    throw HttpError(400, std::string("params is not JSON lumen can read: ") + e.what());
  }
  if (!params.is_object()) throw HttpError(400, "params must be a JSON object");
  return params;
}

Params read_params(const nlohmann::json& params, const ServedModel& model, const cv::Mat& mask) {
  Params p;
  auto opt = std::make_shared<ExplainOptions>();
  std::string task = "classification";
  DetectionSettings detection;
  nlohmann::json key = nlohmann::json::object();
  for (const auto& [name, value] : params.items()) {
    if (!presentation_keys().count(name)) key[name] = value;
    if (name == "model") p.model = get_as<std::string>(params, name, "a model id (GET /api/models)");
    else if (name == "methods") opt->methods = list_of<std::string>(params, name, "a method name");
    else if (name == "layers") opt->layers = list_of<std::string>(params, name, "a layer path");
    else if (name == "classes") opt->classes = list_of<int64_t>(params, name, "a class index");
    else if (name == "top_k") opt->top_k = static_cast<int>(finite_in(params, name, 1, 1000));
    else if (name == "target") opt->score = parse_score(choice(params, name, {"logit", "prob", "logprob"}));
    else if (name == "counterfactual") opt->counterfactual = get_as<bool>(params, name, "true or false");
    else if (name == "contrast") opt->contrast = get_as<bool>(params, name, "true or false");
    else if (name == "aggregate") opt->aggregate = choice(params, name, {"mean", "max", "product", "weighted"});
    else if (name == "layer_weights") opt->layer_weights = list_of<float>(params, name, "a number");
    else if (name == "box_threshold") opt->box_threshold = static_cast<float>(finite_in(params, name, 0, 0.999));
    else if (name == "compat")
      opt->shared.compat = choice(params, name, {"papers", "pytorch-grad-cam"}) == "papers" ? Compat::Papers : Compat::PytorchGradCam;
    else if (name == "aug_smooth") opt->shared.aug_smooth = get_as<bool>(params, name, "true or false");
    else if (name == "nonlinearity") opt->shared.strict_nonlinearities = choice(params, name, {"strict", "plain"}) == "strict";
    else if (name == "rows_per_pass") opt->shared.rows_per_pass = static_cast<int>(finite_in(params, name, 0, 256));
    else if (name == "settings") {
      if (!value.is_object()) throw HttpError(400, "parameter \"settings\" must be an object of method settings by name");
      for (const auto& [s, v] : value.items()) opt->settings.set(s, v);
    } else if (is_setting(name)) opt->settings.set(name, value);
    else if (name == "task") task = choice(params, name, {"classification", "segmentation", "detection"});
    else if (name == "score_threshold") detection.score_threshold = static_cast<float>(finite_in(params, name, 0, 1));
    else if (name == "iou_threshold") detection.iou = finite_in(params, name, 0, 0.999);
    else if (name == "max_boxes") detection.max_boxes = static_cast<int>(finite_in(params, name, 1, 1000));
    else if (name == "region" || name == "box") continue;  // read with the task
    else if (name == "detection_output") detection.format = parse_detection_format(choice(params, name, {"torchvision", "yolov5", "yolov8", "boxes"}));
    else if (name == "raw") p.raw = get_as<bool>(params, name, "true or false");
    else if (name == "pictures") p.pictures = get_as<bool>(params, name, "true or false");
    else if (name == "plain") p.render.plain = get_as<bool>(params, name, "true or false");
    else if (name == "colormap") p.render.colormap = parse_colormap(choice(params, name, {"jet", "turbo", "viridis", "inferno"}));
    else if (name == "alpha") p.render.alpha = static_cast<float>(finite_in(params, name, 0, 1));
    else if (name == "sign") p.render.sign = parse_sign(choice(params, name, {"all", "positive", "negative", "absolute"}));
    else if (name == "job") {
      p.job = get_as<std::string>(params, name, "text");
      if (p.job.empty() || p.job.size() > 64 || p.job.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != std::string::npos)
        throw HttpError(400, "parameter \"job\" must be 1 to 64 letters, digits, '-' or '_'");
    } else
      throw HttpError(400, "unknown parameter \"" + name + "\" (the CLI's option names with '_' for '-': methods, layers, classes, top_k, target, ...)");
  }
  if (!opt->classes.empty() && params.contains("top_k")) throw HttpError(400, "give \"classes\" or \"top_k\", not both");
  for (const auto c : opt->classes)
    if (c < 0) throw HttpError(400, "parameter \"classes\" holds a negative class index");
  // Requests batch together only with the same mask: its pixels are part of the key.
  if (!mask.empty())
    key["mask"] = std::to_string(mask.cols) + "x" + std::to_string(mask.rows) + ":" +
                  std::to_string(detail::fnv1a(std::string_view(reinterpret_cast<const char*>(mask.data), mask.total() * mask.elemSize())));
  apply_task(task, detection, params, mask, {model.explainer.preprocess().width, model.explainer.preprocess().height}, *opt, p);
  if (opt->layers.empty() && !model.default_layer.empty()) opt->layers.push_back(model.default_layer);
  for (const auto& l : opt->layers) {
    try {
      model.explainer.model().check_layer(l);
    } catch (const Error& e) {
      throw HttpError(404, e.what());
    }
  }
  p.render.rgb_input = model.explainer.preprocess().rgb;
  try {
    check_request(*opt);
  } catch (const Error& e) {
    throw HttpError(400, e.what());
  }
  key["layers"] = opt->layers;  // with the default filled in
  p.key = model.id + "\n" + key.dump();
  p.options = std::move(opt);
  return p;
}

cv::Mat decode_upload(const std::string& bytes, const std::string& name, long long max_pixels) {
  if (bytes.empty()) throw HttpError(400, "the image part is empty");
  const ImageHeader header = read_image_header(bytes);
  if (header.format.empty() || header.format == "GIF") throw HttpError(415, name + " is not a PNG, JPEG, BMP or WebP image");
  if (header.width < 1 || header.height < 1)
    throw HttpError(415, name + " is a " + header.format + " file that declares a " + std::to_string(header.width) + "x" + std::to_string(header.height) + " image");
  if (static_cast<double>(header.width) * static_cast<double>(header.height) > static_cast<double>(max_pixels))
    throw HttpError(413, name + " declares " + std::to_string(header.width) + "x" + std::to_string(header.height) + " pixels, over the limit of " +
                             std::to_string(max_pixels) + " (--max-pixels); refused before decoding");
  if (header.truncated) throw HttpError(400, name + " is truncated: the " + header.format + " file ends before its end marker");
  try {
    return decode_image(bytes, name);
  } catch (const Error& e) {
    throw HttpError(415, e.what());
  }
}

std::string base64(const std::string& bytes) {
  // Written here: none of the libraries lumen links (OpenCV, nlohmann-json, LibTorch) exposes an
  // encoder, cpp-httplib keeps its own in a detail namespace, and this is the whole of RFC 4648's.
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out((bytes.size() + 2) / 3 * 4, '=');
  const auto* in = reinterpret_cast<const uint8_t*>(bytes.data());
  char* o = out.data();
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3, o += 4) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    o[0] = alphabet[v >> 18], o[1] = alphabet[(v >> 12) & 63], o[2] = alphabet[(v >> 6) & 63], o[3] = alphabet[v & 63];
  }
  if (i < bytes.size()) {  // one or two bytes left: the padding '=' is already there
    const uint32_t v = (uint32_t{in[i]} << 16) | (i + 1 < bytes.size() ? uint32_t{in[i + 1]} << 8 : 0);
    o[0] = alphabet[v >> 18], o[1] = alphabet[(v >> 12) & 63];
    if (i + 1 < bytes.size()) o[2] = alphabet[(v >> 6) & 63];
  }
  return out;
}

Blobs::Blobs() {
  static const std::string process_marker = [] {
    std::random_device device;
    std::string m = "\x01lumen-blob-";
    for (int i = 0; i < 4; ++i) m += std::to_string(device()) + "-";
    return m;
  }();
  marker_ = process_marker;
}

std::string Blobs::put(std::string blob) {
  items_.push_back(std::move(blob));
  return marker_ + std::to_string(items_.size() - 1);
}

std::string Blobs::render(const nlohmann::json& document) const {
  const std::string text = document.dump();
  // The marker as dump() writes it: the control character escaped.
  const std::string mark = "\"\\u0001" + marker_.substr(1);
  size_t total = text.size();
  for (const auto& b : items_) total += b.size();
  std::string out;
  out.reserve(total);
  size_t pos = 0;
  for (size_t at; (at = text.find(mark, pos)) != std::string::npos;) {
    out.append(text, pos, at + 1 - pos);  // through the opening quote
    const size_t digits = at + mark.size(), end = text.find('"', digits);
    const size_t index = std::stoul(text.substr(digits, end - digits));
    if (index >= items_.size()) throw std::logic_error("an answer names a blob it does not hold");
    out += items_[index];
    pos = end;  // the closing quote
  }
  out.append(text, pos, std::string::npos);
  return out;
}

nlohmann::json answer_json(const ImageExplanation& explained, const cv::Mat& image, const Params& params, Blobs& blobs) {
  nlohmann::json entry = run_json({explained}, nlohmann::json::object())["images"][0];
  entry["predictions"] = std::move(entry["top5"]);
  entry.erase("top5");
  for (size_t k = 0; k < explained.maps.size(); ++k) {
    const Map& m = explained.maps[k];
    auto& j = entry["maps"][k];
    if (params.pictures) {
      j["overlay_png"] = blobs.put(base64(encode_png(overlay_picture(image, m, explained, params.render))));
      RenderOptions plain = params.render;
      plain.plain = true;  // the page lays it over the image itself, with its own colour bar
      j["heat_png"] = blobs.put(base64(encode_png(heat_picture(m, explained, plain))));
    }
    if (params.raw) {
      // Little-endian float32, as the x86 and ARM machines lumen runs on store it.
      const cv::Mat map = m.normalized.isContinuous() ? m.normalized : m.normalized.clone();
      j["map"] = {{"shape", {map.rows, map.cols}},
                  {"float32_base64", blobs.put(base64(std::string(reinterpret_cast<const char*>(map.data), map.total() * sizeof(float))))}};
    }
  }
  return entry;
}

}  // namespace lumen::serve
