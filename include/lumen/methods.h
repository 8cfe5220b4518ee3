// lumen: the methods there are and the settings each takes, as the method files declare them
// (src/methods/). The command line builds its flags and help from this, run.json echoes it, and a
// request is checked against it before anything runs.
#pragma once

#include <lumen/settings.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

struct SettingInfo {
  std::string name;                  // key in Settings and in run.json, e.g. "smooth_base"
  std::string flag;                  // command-line spelling, e.g. "--smooth-base"
  std::string kind;                  // "integer", "number", "text", "choice" or "flag"
  nlohmann::json fallback;           // the default
  std::string help;
  std::vector<std::string> choices;  // kind "choice"
  std::vector<std::string> methods;  // the methods that take it
};

struct MethodInfo {
  std::string name, paper;
  std::string family;                // "cam", "attention", "perturbation" or "pixel"
  bool per_layer = true;             // one map per requested layer; false: one map for the model (in input
                                     // space, or over the attention's token grid for family "attention")
  bool attribution = false;          // also a per-channel attribution in input space (wrappers can take it)
  std::vector<std::string> settings; // names of the settings it takes
  bool volumes = false;              // also explains 3-D networks' [N,C,D,H,W] volumes and clips
};

// Registered methods, grouped by family (CAM, attention, perturbation, pixel), and their names.
std::vector<MethodInfo> method_catalog();
std::vector<std::string> method_names();
// Every method setting, each once (methods that share one, like "seed", share its declaration).
std::vector<SettingInfo> setting_catalog();

// Refuses a request before anything runs: an unknown method, an unknown setting, a setting none of
// `methods` (or the methods they wrap) takes, a value of the wrong kind, out of range, NaN or not one
// of the choices. Throws lumen::Error naming the flag.
void check_settings(const std::vector<std::string>& methods, const Settings& settings);

// The part of `settings` that `methods` (or the methods they use) take: what one request of several
// (a benchmark row, one method of an evaluation) passes on.
Settings taken_by(const std::vector<std::string>& methods, const Settings& settings);

// Every method setting's value — given, else the default — for run.json.
nlohmann::json effective_settings(const Settings& settings);

}  // namespace lumen
#pragma GCC visibility pop
