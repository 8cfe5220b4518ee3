// lumen audit: is the evidence on the object? The measurement and the report are the library's
// (lumen/audit.h); this file reads the flags and prints the table.
#include "commands.h"

#include <lumen/audit.h>
#include <lumen/dataset.h>
#include <lumen/error.h>
#include <lumen/image.h>
#include <lumen/model.h>

#include <algorithm>
#include <iomanip>
#include <iostream>

namespace lumen::cli {

Command add_audit(CLI::App& app) {
  auto* sub = app.add_subcommand("audit", "Bias audit: how much of each explanation lies on the object");
  struct Args {
    std::string model, card, data, layer, method = "gradcam", out = "lumen-audit", shard;
    bool fresh = false;
    double threshold = 0.5;
    int limit = 0, batch = 8, show = 24;
    Runtime runtime;
  };
  auto a = std::make_shared<Args>();
  add_model_flag(sub, a->model);
  sub->add_option("--card", a->card, "model card JSON")->required();
  sub->add_option("--data,-d", a->data, "dataset folder: images/, labels.csv, boxes.csv")->required();
  sub->add_option("--method", a->method, "map method (gradcam)");
  sub->add_option("--layer,-l", a->layer, "layer for CAM methods (default: the card's)");
  sub->add_option("--threshold", a->threshold, "flag images with less than this share of the map on the object (0.5)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--limit", a->limit, "only the first N images");
  sub->add_option("--batch", a->batch, "images per pass (8)")->check(CLI::Range(1, 4096));
  sub->add_option("--show", a->show, "flagged images drawn on the page (24)");
  sub->add_option("--out,-o", a->out, "output directory (default lumen-audit); an interrupted run resumes from it")->check(output_folder());
  sub->add_flag("--fresh", a->fresh, "ignore records of an earlier run in --out");
  add_shard_flag(sub, a->shard);
  add_runtime_flags(sub, a->runtime, false);
  add_forward_flag(sub, a->runtime);
  return {sub, [a] {
            a->runtime.apply();
            const ModelCard card = load_card(a->card);
            Dataset data = load_dataset(a->data);
            if (a->limit > 0 && static_cast<size_t>(a->limit) < data.samples.size()) data.samples.resize(static_cast<size_t>(a->limit));
            if (std::none_of(data.samples.begin(), data.samples.end(), [](const Sample& s) { return !s.boxes.empty(); }))
              throw Error("the dataset has no boxes: the audit measures evidence inside them");
            AuditRun run;
            run.method = a->method;
            const std::string layer = a->layer.empty() ? card.cam_layer : a->layer;
            if (!layer.empty()) run.layers = {layer};
            run.threshold = a->threshold;
            run.batch = a->batch;
            run.show = a->show;
            run.progress = progress_printer(a->runtime.quiet);
            run.model_file = a->model;
            run.card_file = a->card;
            run.limit = a->limit;
            run.fresh = a->fresh;
            run.shard = shard_of_flag(a->shard);
            run.note = [](const std::string& note) { std::cerr << note << "\n"; };
            nlohmann::json forward;
            const Explainer explainer(
                with_forward_mode(Model::load(a->model), a->runtime, {a->batch, 3, card.preprocess.height, card.preprocess.width}, forward),
                card.preprocess, card.labels);
            const AuditResult result = audit_dataset(explainer, data, run, a->out);
            OutputDir out(a->out);
            write_audit_report(out, explainer, run, result, audit_about(result.config));
            out.commit();
            std::cout << result.table << "\n" << result.flagged << " of " << result.rows.size() << " images have less than " << a->threshold
                      << " of the map on the object. Worst:\n";
            for (size_t rank = 0; rank < std::min<size_t>(10, result.rows.size()); ++rank) {
              const auto& r = result.rows[rank];
              std::cout << "  " << rank + 1 << ". " << r.sample->name << " (" << r.label << "): " << std::fixed << std::setprecision(3) << r.share << std::defaultfloat << "\n";
            }
            std::cout << "wrote " << a->out << "/audit.json, audit.csv, index.html\n";
            return 0;
          }};
}

}  // namespace lumen::cli
