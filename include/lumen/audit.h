// lumen: the bias audit — is the evidence on the object? For every image of a dataset with boxes, the
// share of its explanation's mass inside the boxes of its class (the Grad-CAM paper's bias study made
// a measurement); per class the distribution; the images whose evidence lies mostly elsewhere.
#pragma once

#include <lumen/dataset.h>
#include <lumen/explain.h>
#include <lumen/output.h>
#include <lumen/shard.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

struct AuditRun {
  std::string method = "gradcam";
  std::vector<std::string> layers;   // for a CAM method
  double threshold = 0.5;            // images with a smaller share on the object are flagged
  int batch = 8;                     // images per explanation pass
  int show = 24;                     // flagged images drawn on the page
  Progress progress;
  // With an output folder (the overload below): what the records are tied to, as in DatasetRun.
  std::string model_file, card_file;
  int limit = 0;
  bool fresh = false;                // start over instead of resuming from OUT/records.jsonl
  Shard shard;                       // measure only this block of the images (lumen/shard.h)
  std::function<void(const std::string&)> note;
};

struct AuditRow {
  const Sample* sample = nullptr;
  double share = 0;          // of the normalised map's mass inside the boxes of the image's class
  int64_t predicted = -1;    // the model's top class
  std::string label, predicted_label;  // class names (the index when the model has no labels)
  bool flagged = false;
};

struct AuditResult {
  std::vector<AuditRow> rows;   // smallest share first
  nlohmann::json per_class;     // class -> images, mean, median, min, flagged
  std::string table;            // per class, Markdown
  size_t flagged = 0;
  nlohmann::json config;        // the records file's configuration (the overload with a folder)
  size_t resumed = 0;           // images read back from an earlier run's records
};

// Explains every image (maps are not kept: a dataset's worth would not fit) and measures it.
AuditResult audit_dataset(const Explainer& explainer, const Dataset& data, const AuditRun& run);
// The same over run.shard's images, each image's record appended to OUT/records.jsonl as it is measured:
// a killed run resumes where it stopped, and `lumen merge` joins shards.
AuditResult audit_dataset(const Explainer& explainer, const Dataset& data, const AuditRun& run, const std::string& out_dir);
// The rows, per-class table and flags of measured records ({"image", "share", "predicted"}, in dataset
// order); the images are looked up in `data`.
AuditResult audit_result(const Explainer& explainer, const Dataset& data, const AuditRun& run, const std::vector<nlohmann::json>& records);
// What audit.json says the run was ({"model", "data", "layer"}), from the records' configuration.
nlohmann::json audit_about(const nlohmann::json& config);
// audit.json, audit.csv, index.html and the flagged images (explained again, drawn with their boxes).
void write_audit_report(OutputDir& out, const Explainer& explainer, const AuditRun& run, const AuditResult& result,
                        const nlohmann::json& about);

}  // namespace lumen
#pragma GCC visibility pop
