// lumen: settings of an explanation. Settings every method shares (whose formulas, how many rows an
// extra pass takes, memory) are a plain struct; settings of particular methods (IG's steps, occlusion's
// patch, ...) are values by name, declared by the method that reads them (methods.h lists them), and
// checked against that declaration before any forward pass.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

// Whose formulas: the papers' (default), or pytorch-grad-cam's pipeline reproduced for people who
// move from it (docs/methods.md lists every difference).
enum class Compat { Papers, PytorchGradCam };

// Long work reports here: what, done, total.
using Progress = std::function<void(const std::string& what, int64_t done, int64_t total)>;

struct SharedSettings {
  Compat compat = Compat::Papers;
  // Rows per extra pass (SmoothGrad samples, IG steps, masks, ...). Small batches were faster here:
  // SmoothGrad on MobileNetV2 took 5.7 s at 4, 6.2 s at 8 and 8.3 s at 32 rows (and 4x the memory).
  // 0: 8, or fewer when 8 rows of the pass would not fit `memory_budget_mib` (the maps say how many
  // were used, as "rows_per_pass").
  int rows_per_pass = 0;
  // Memory one extra pass may take, in MiB; 0: a quarter of what the system has available.
  int64_t memory_budget_mib = 0;
  // Backward rules (guided-backprop, deconvnet): an activation with no rule (SiLU, GELU, ...) is an
  // error naming its layer; false keeps its ordinary gradient (CLI --nonlinearity plain).
  bool strict_nonlinearities = true;
  // Test-time augmentation: every map is averaged over the horizontal flip x input scaled by
  // 0.9 / 1 / 1.1 (pytorch-grad-cam's aug_smooth), mapped back to the original orientation.
  bool aug_smooth = false;
  Progress progress;  // may be empty
};

// Values of method settings by name ("steps", "smooth_base", ...). A name must be one that a method
// declares (lumen::setting_catalog()), and one of the requested methods must take it; values are
// checked against the declaration (kind, range, choices) when the explanation is planned.
class Settings {
 public:
  Settings& set(const std::string& name, nlohmann::json value);
  // The same from command-line text ("16", "0.25", "blur"), converted by the setting's declared kind.
  Settings& set_text(const std::string& name, const std::string& text);
  bool has(const std::string& name) const { return values_.contains(name); }
  const nlohmann::json& values() const { return values_; }

  // Typed reads of a planned request's settings (every setting of its methods has a value then).
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  std::string text(const std::string& name) const;
  bool flag(const std::string& name) const;

 private:
  const nlohmann::json& at(const std::string& name) const;
  nlohmann::json values_ = nlohmann::json::object();
};

}  // namespace lumen
#pragma GCC visibility pop
