// The lumen command line: one file per subcommand, each adding itself to the CLI11 app and returning
// the function that runs it.
#pragma once

#include <lumen/model.h>
#include <lumen/runtime.h>

#include <CLI/CLI.hpp>

#include <functional>
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
Command add_bench(CLI::App& app);

// Helpers shared by the subcommands.
std::vector<std::string> split_list(const std::vector<std::string>& items);  // "a,b" "c" -> a b c
std::string stem_of(const std::string& path);
// Model input H, W: --input-size, else the card's, else what an ONNX file declares, else 224 x 224.
std::pair<int, int> input_size(const Model& model, const std::string& card, const std::vector<int>& size);

}  // namespace lumen::cli
