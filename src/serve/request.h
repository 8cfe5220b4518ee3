// One explain request, from the bytes that came in to the JSON that goes out: the `params` part read
// into ExplainOptions (the CLI's names and defaults), the uploaded image checked before it is decoded,
// and the answer (run.json's shape, pictures as base64 PNG, maps as base64 float32).
#pragma once

#include "serve/server.h"

#include <lumen/picture.h>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace lumen::serve {

// An error the client caused or must wait out, with the HTTP status that says which.
struct HttpError : std::runtime_error {
  int status;
  HttpError(int status, const std::string& message) : std::runtime_error(message), status(status) {}
};

struct Params {
  std::string model;                              // the model's id ("" when one is served)
  std::shared_ptr<const ExplainOptions> options;
  std::string key;                                // equal keys: the same explanation, batchable
  RenderOptions render;
  bool raw = false;                               // also each normalised map as float32
  bool pictures = true;                           // overlay_png and heat_png
  std::string job;                                // the client's id for progress and cancelling
  // Set when the targets depend on each image's size (a "region" or "box" in its own pixels): makes
  // an image's options from a copy of `options`; such images batch only with images of their size.
  std::function<void(ExplainOptions& options, cv::Size image, const std::string& source)> per_image;
};

// The params JSON (an object). Everything in it is checked here or by lumen::check_request; anything
// wrong is an HttpError 400 naming the parameter (404 for an unknown layer).
nlohmann::json parse_params_json(const std::string& text);
// `mask`: the request's "mask" part decoded (empty when it has none), for "task": "segmentation".
Params read_params(const nlohmann::json& params, const ServedModel& model, const cv::Mat& mask = cv::Mat());

// The image of an upload, decoded; refused before decoding when its header declares more than
// `max_pixels` (413), when it is no PNG, JPEG, BMP or WebP (415), or when it is truncated (400).
cv::Mat decode_upload(const std::string& bytes, const std::string& name, long long max_pixels);

// The large strings of an answer (base64 pictures and maps), kept out of the JSON document until it
// is written: nlohmann-json escapes a string character by character, which took a sixth of the
// server's time on megabyte maps, and base64 never needs escaping. The document holds a marker per
// blob; render() writes the document with the blobs in their places.
class Blobs {
 public:
  Blobs();
  std::string put(std::string blob);  // the marker to store in the document
  std::string render(const nlohmann::json& document) const;

 private:
  std::string marker_;                // a per-process random prefix, so no client string can pose as one
  std::vector<std::string> items_;
};

// One image's answer: source, size, predictions (top-5 with labels) and maps, each with method, layer,
// target, box, stats, overlay_png and heat_png (base64) and, with raw, map {shape, float32_base64}.
nlohmann::json answer_json(const ImageExplanation& explained, const cv::Mat& image, const Params& params, Blobs& blobs);

// Standard base64 (RFC 4648, with padding).
std::string base64(const std::string& bytes);

}  // namespace lumen::serve
