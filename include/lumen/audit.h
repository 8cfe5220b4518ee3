// lumen: the bias audit — is the evidence on the object? For every image of a dataset with boxes, the
// share of its explanation's mass inside the boxes of its class (the Grad-CAM paper's bias study made
// a measurement); per class the distribution; the images whose evidence lies mostly elsewhere.
#pragma once

#include <lumen/dataset.h>
#include <lumen/explain.h>
#include <lumen/output.h>

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
};

// Explains every image (maps are not kept: a dataset's worth would not fit) and measures it.
AuditResult audit_dataset(const Explainer& explainer, const Dataset& data, const AuditRun& run);
// audit.json, audit.csv, index.html and the flagged images (explained again, drawn with their boxes).
void write_audit_report(OutputDir& out, const Explainer& explainer, const AuditRun& run, const AuditResult& result,
                        const nlohmann::json& about);

}  // namespace lumen
#pragma GCC visibility pop
