// lumen serve: the explanation viewer and its HTTP API (docs/serve.md). The server is its own library
// (lumen_serve), linked by the command line only: liblumen stays free of HTTP. The stages of a request
// read top to bottom by file: server.cpp (routes, limits, tokens, signals) -> request.cpp (params
// JSON -> ExplainOptions, upload checks, answer JSON) -> batcher.cpp (jobs gathered into batches, one
// worker per model) -> the engine (Explainer) -> request.cpp again (pictures and maps as JSON).
#pragma once

#include <lumen/dataset.h>
#include <lumen/explain.h>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <vector>

namespace lumen::serve {

// One model the server explains with, ready to run (the command line loads it, its card and labels).
struct ServedModel {
  std::string id;               // what requests name it by: the card's or file's stem, made unique
  std::string name;             // shown to people, e.g. "MobileNetV2"
  std::string path;             // the model file
  Explainer explainer;
  std::string default_layer;    // the card's CAM layer ("" if none)
  std::vector<LayerInfo> layers;
  nlohmann::json forward;       // how it runs (forward mode), as run.json records it
};

// Every limit has a flag (lumen serve --help) and is documented in docs/serve.md.
struct Limits {
  size_t body_bytes = 32u << 20;          // --max-body: a request's body; larger: 413
  long long image_pixels = 40'000'000;    // --max-pixels: read from the header before decoding; larger: 413
  int images_per_request = 8;             // --max-images
  int queue = 64;                         // --queue: jobs waiting per model; more: 503 with Retry-After
  double request_seconds = 120;           // --timeout: from arrival to answer; longer: cancelled, 504
};

struct Options {
  std::string host = "127.0.0.1";
  int port = 8080;                        // 0: any free port (the line printed says which)
  std::string token;                      // required on every API call when not empty
  std::string data;                       // --data: a dataset folder (lumen/dataset.h), may be empty
  std::string report;                     // --report: an eval report folder, may be empty
  int max_batch = 8;                      // images gathered into one forward pass
  double batch_wait_ms = 5;               // how long the first job of a batch waits for others
  int workers = 2;                        // batches of one model run side by side (Batcher)
  int http_threads = 16;                  // connections handled at once (each waits for its job)
  Limits limits;
  bool quiet = false;
};

// Serves until SIGINT or SIGTERM, then stops accepting, lets running work finish (queued work is
// cancelled) and returns 0. Prints "lumen: serving on http://HOST:PORT/ (...)" once it listens.
// Throws lumen::Error when it cannot listen, or for a bad option.
int run(std::vector<ServedModel> models, const Options& options);

// A random token (128 bits, hex) for --host without --token.
std::string generate_token();

}  // namespace lumen::serve
