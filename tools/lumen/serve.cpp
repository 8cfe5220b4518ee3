#include "commands.h"

#include "serve/server.h"

#include <lumen/error.h>
#include <lumen/output.h>

#include <filesystem>
#include <iostream>
#include <set>

namespace lumen::cli {

Command add_serve(CLI::App& app) {
  auto* sub = app.add_subcommand("serve", "Explore explanations in a browser: the viewer and its HTTP API (docs/serve.md)");
  struct Args {
    std::vector<std::string> models, cards;
    serve::Options options;
    long long max_body_mib = 32;
    Runtime runtime;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("--model,-m", a->models, "TorchScript (.pt) or ONNX (.onnx) model; repeat for several")->required();
  sub->add_option("--card", a->cards, "model card JSON for each --model, in the same order");
  add_ops_flag(sub);
  sub->add_option("--data", a->options.data, "a dataset folder (images/, labels.csv, boxes.csv) to browse with its labels and boxes");
  sub->add_option("--report", a->options.report, "an eval report folder (lumen eval --out DIR) to browse");
  sub->add_option("--host", a->options.host, "address to listen on (127.0.0.1: this machine only; any other needs --token)");
  sub->add_option("--port", a->options.port, "port (8080; 0: any free port)")->check(CLI::Range(0, 65535));
  sub->add_option("--token", a->options.token, "token every API call must carry (Authorization: Bearer TOKEN); 'generate' makes one");
  sub->add_option("--max-batch", a->options.max_batch, "images gathered into one forward pass (8)")->check(CLI::Range(1, 256));
  sub->add_option("--workers", a->options.workers, "batches of one model run side by side, sharing the cores under load (2)")->check(CLI::Range(1, 64));
  sub->add_option("--batch-wait", a->options.batch_wait_ms, "ms the first job of a batch waits for others (5)")->check(CLI::Range(0.0, 1000.0));
  sub->add_option("--max-body", a->max_body_mib, "largest request body, MiB (32)")->check(CLI::Range(1, 4096));
  sub->add_option("--max-pixels", a->options.limits.image_pixels, "largest image, pixels, read from its header before decoding (40000000)")
      ->check(CLI::Range(1LL, 1LL << 40));
  sub->add_option("--max-images", a->options.limits.images_per_request, "images per request (8)")->check(CLI::Range(1, 256));
  sub->add_option("--queue", a->options.limits.queue, "jobs that may wait per model; more are answered 503 (64)")->check(CLI::Range(1, 100000));
  sub->add_option("--timeout", a->options.limits.request_seconds, "seconds a request may take, waiting included (120)")->check(CLI::Range(0.1, 86400.0));
  sub->add_option("--http-threads", a->options.http_threads, "connections served at once (16)")->check(CLI::Range(2, 1024));
  sub->add_option("--threads", a->runtime.threads, "intra-op threads (default: all cores)")->check(CLI::Range(1, 1024));
  sub->add_flag("--quiet,-q", a->options.quiet, "no line per request on stderr");
  add_forward_flag(sub, a->runtime);
  return {sub, [a] {
            a->runtime.max_pixels = a->options.limits.image_pixels;
            a->runtime.apply();
            if (a->cards.size() > a->models.size()) throw Error("more --card than --model: give one card per model, in the same order");
            a->options.limits.body_bytes = static_cast<size_t>(a->max_body_mib) << 20;
            if (a->options.token == "generate") a->options.token = serve::generate_token();
            std::vector<serve::ServedModel> served;
            std::set<std::string> ids;
            for (size_t i = 0; i < a->models.size(); ++i) {
              const std::string card_path = i < a->cards.size() ? a->cards[i] : "";
              ModelCard card;
              if (!card_path.empty()) card = load_card(card_path);
              Model model = Model::load(a->models[i]);
              // The card is read once: its size is handed on, where input_size would read the card again.
              const auto [h, w] = input_size(model, "", card_path.empty() ? std::vector<int>{} : std::vector<int>{card.preprocess.height, card.preprocess.width});
              card.preprocess.height = h;
              card.preprocess.width = w;
              nlohmann::json forward;
              model = with_forward_mode(model, a->runtime, {1, 3, h, w}, forward);
              std::string id = safe_name(stem_of(card_path.empty() ? a->models[i] : card_path));
              for (int n = 2; ids.count(id); ++n) id = safe_name(stem_of(a->models[i])) + "-" + std::to_string(n);
              ids.insert(id);
              auto layers = model.layers({1, 3, h, w});
              if (!card.cam_layer.empty()) model.check_layer(card.cam_layer);
              served.push_back({id, card.name.empty() ? id : card.name, a->models[i], Explainer(model, card.preprocess, card.labels),
                                card.cam_layer, std::move(layers), forward});
            }
            return serve::run(std::move(served), a->options);
          }};
}

}  // namespace lumen::cli
