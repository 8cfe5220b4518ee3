// The lumen command line: one file per subcommand, each adding itself to the CLI11 app and returning
// the function that runs it. The commands parse flags and print; the work is the library's.
#pragma once

#include <lumen/explain.h>
#include <lumen/image.h>
#include <lumen/model.h>
#include <lumen/runtime.h>
#include <lumen/shard.h>
#include <lumen/version.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace lumen::cli {

struct Command {
  CLI::App* app;            // the subcommand, to see whether it was chosen
  std::function<int()> run;
};

Command add_layers(CLI::App& app);
Command add_explain(CLI::App& app);
Command add_demo(CLI::App& app);
Command add_eval(CLI::App& app);
Command add_visualize(CLI::App& app);
Command add_audit(CLI::App& app);
Command add_merge(CLI::App& app);
Command add_bench(CLI::App& app);
Command add_serve(CLI::App& app);

// Flags of method settings (method_flags.cpp).
struct MethodFlags {
  std::map<std::string, CLI::Option*> given;    // setting -> its flag
  std::map<std::string, std::string> text;      // setting -> value as typed
  std::string compat = "papers", nonlinearity = "strict";
  bool aug_smooth = false;
  int rows_per_pass = 0;
  int64_t memory_budget_mib = 0;
  CLI::Option* old_rows = nullptr;
};
// Every method setting's flag, and the shared ones.
void add_method_flags(CLI::App* sub, MethodFlags& flags);
// Only the shared ones (compat, aug-smooth, nonlinearity, rows per pass, memory budget).
void add_shared_flags(CLI::App* sub, MethodFlags& flags);
// Into `options`: the settings given on the command line, checked by the library.
void apply(const MethodFlags& flags, ExplainOptions& options);

// Flags every command that runs a model shares.
struct Runtime {
  int threads = 0;  // 0: all cores (not given)
  bool deterministic = false;
  long long max_pixels = kMaxImagePixels;
  bool allow_truncated = false;
  bool quiet = false;  // --quiet: no progress lines
  std::string forward_mode = "auto";  // --forward-mode, where the command runs a model
  void apply() const;  // lumen::set_threads, lumen::set_deterministic, lumen::set_image_limits
};
// The model in the forward mode --forward-mode asks for; auto probes which is faster at `shape` (or
// reads the decision cached for this model file and shape). What was chosen, and how, for run.json.
Model with_forward_mode(const Model& model, const Runtime& runtime, const std::vector<int64_t>& shape, nlohmann::json& chosen);
// --forward-mode (explain, eval, audit, bench).
void add_forward_flag(CLI::App* sub, Runtime& runtime);
// --shard K/N|auto|auto/N (eval, audit, explain): which block of the images this process does.
void add_shard_flag(CLI::App* sub, std::string& shard);
// The parsed --shard (the whole list when empty); says on stderr, even with --quiet (a cluster job's log
// should say which piece it did), which shard and where it came from.
Shard shard_of_flag(const std::string& shard);
// --threads, --max-pixels, --allow-truncated, and --deterministic where the command computes maps.
void add_runtime_flags(CLI::App* sub, Runtime& runtime, bool deterministic_flag = true);
// Refuses NaN or infinity given to any option of this (parsed) subcommand.
void refuse_non_finite(const CLI::App& sub);
// Refuses an --out that is not a folder name: "-" (lumen writes a set of files, not one stream) or "".
const CLI::Validator& output_folder();
// --model (required), with --ops-library.
void add_model_flag(CLI::App* sub, std::string& model);
// --ops-library PATH (repeatable): libraries of TorchScript operators, loaded as the flag is parsed, so
// before any model (lumen::load_ops_library).
void add_ops_flag(CLI::App* sub);
// --input-size H W and, excluding it, --input-shape C,D,H,W (a 3-D network's input).
void add_input_flags(CLI::App* sub, std::vector<int>& size, std::vector<int64_t>& shape, const std::string& size_help);

// Helpers shared by the subcommands.
std::vector<std::string> split_list(const std::vector<std::string>& items);  // "a,b" "c" -> a b c
std::string stem_of(const std::string& path);
std::string joined(const std::vector<std::string>& items, const std::string& separator = ", ");
std::string shape_text(const std::vector<int64_t>& dims);  // {1, 3, 224, 224} -> "1x3x224x224"
// Model input H, W: --input-size, else the card's, else what an ONNX file declares, else 224 x 224.
std::pair<int, int> input_size(const Model& model, const std::string& card, const std::vector<int>& size);
// Progress of long work on stderr: done/total, rate and ETA, as a live line twice a second on a terminal,
// one line per tenth (or per 5 s) into a file or pipe, and always the final count; nothing when quiet.
// `extra` adds text to each line (eval: the resident memory).
Progress progress_printer(bool quiet, std::function<std::string()> extra = {});
// 12.3 s, or 4:05 from a minute on.
std::string duration_text(double seconds);

}  // namespace lumen::cli
