// The flags every explaining command shares: one per method setting, made from the methods' own
// declarations (lumen::setting_catalog()) with the help text they give, and the settings all methods
// share. Values are handed to the library as typed (Settings::set_text), so a bad one is refused by
// the same check the C++ API gets, naming the flag, before anything is loaded.
#include "commands.h"

#include <lumen/error.h>
#include <lumen/methods.h>

#include <iostream>
#include <sstream>

namespace lumen::cli {

// This command's own pieces (named, so that the CLI's files can be compiled as one batch).
namespace flags {

std::string shown(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  std::ostringstream s;
  if (v.is_number_float()) s << v.get<double>();
  else s << v.dump();
  return s.str();
}

}  // namespace flags

void add_method_flags(CLI::App* sub, MethodFlags& f) {
  for (const auto& s : setting_catalog()) {
    std::string help = s.help;
    if (s.kind != "flag" && !flags::shown(s.fallback).empty()) help += " (default " + flags::shown(s.fallback) + ")";
    if (s.methods.size() > 1) help += " [" + joined(s.methods) + "]";
    if (s.kind == "flag") {
      f.given[s.name] = sub->add_flag(s.flag)->description(help)->group("Method settings");
      continue;
    }
    auto* option = sub->add_option(s.flag, f.text[s.name], help)->group("Method settings");
    option->type_name(s.kind == "integer" ? "INT" : s.kind == "number" ? "NUMBER" : s.kind == "choice" ? "{" + joined(s.choices, ",") + "}" : "TEXT");
    f.given[s.name] = option;
  }
  add_shared_flags(sub, f);
}

void add_shared_flags(CLI::App* sub, MethodFlags& f) {
  sub->add_option("--compat", f.compat, "papers (default) or pytorch-grad-cam: reproduce that library's formulas and scaling")->group("Settings of every method");
  sub->add_flag("--aug-smooth", f.aug_smooth, "average each map over flip x input scale 0.9/1/1.1 (6 passes)")->group("Settings of every method");
  sub->add_option("--nonlinearity", f.nonlinearity,
                  "guided-backprop, deconvnet, deeplift and lrp on activations without a rule (SiLU, GELU, ...): strict (error) or plain")->group("Settings of every method");
  sub->add_option("--rows-per-pass", f.rows_per_pass,
                  "rows per extra pass of smoothgrad, IG, scorecam, ablationcam, occlusion, rise (0: 8, fewer if memory is short)")->group("Settings of every method");
  f.old_rows = sub->add_option("--method-batch,--batch-size", f.rows_per_pass, "old spellings of --rows-per-pass (until 0.3)")->group("Settings of every method");
  sub->add_option("--memory-budget", f.memory_budget_mib, "MiB one extra pass may take (0: a quarter of available memory)")->group("Settings of every method");
}

void apply(const MethodFlags& f, ExplainOptions& opt) {
  for (const auto& [name, option] : f.given) {
    if (option->count() == 0) continue;
    auto text = f.text.find(name);
    opt.settings.set_text(name, text == f.text.end() ? "true" : text->second);
  }
  if (f.compat != "papers" && f.compat != "pytorch-grad-cam") throw Error("--compat must be papers or pytorch-grad-cam, got '" + f.compat + "'");
  if (f.nonlinearity != "strict" && f.nonlinearity != "plain") throw Error("--nonlinearity must be strict or plain, got '" + f.nonlinearity + "'");
  if (f.rows_per_pass < 0 || f.rows_per_pass > 100000) throw Error("--rows-per-pass must be from 0 to 100000, got " + std::to_string(f.rows_per_pass));
  if (f.memory_budget_mib < 0) throw Error("--memory-budget must be at least 0, got " + std::to_string(f.memory_budget_mib));
  if (f.old_rows && f.old_rows->count() > 0) std::cerr << "lumen: note: --method-batch and --batch-size are now --rows-per-pass (the old spellings go in 0.3)\n";
  opt.shared.compat = f.compat == "pytorch-grad-cam" ? Compat::PytorchGradCam : Compat::Papers;
  opt.shared.aug_smooth = f.aug_smooth;
  opt.shared.strict_nonlinearities = f.nonlinearity == "strict";
  opt.shared.rows_per_pass = f.rows_per_pass;
  opt.shared.memory_budget_mib = f.memory_budget_mib;
}

}  // namespace lumen::cli
