#include "commands.h"

#include <lumen/error.h>
#include <lumen/image.h>
#include <lumen/layout.h>
#include <lumen/model.h>

#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>

namespace lumen::cli {

Command add_layers(CLI::App& app) {
  auto* sub = app.add_subcommand("layers", "List a model's layers: module path (ONNX: node), type, output shape");
  struct Args {
    std::string model, card;
    std::vector<int> size;
    std::vector<int64_t> shape;  // a 3-D network's input, C D H W
    bool json = false;
    Runtime runtime;
  };
  auto args = std::make_shared<Args>();
  sub->add_option("model", args->model, "TorchScript (.pt) or ONNX (.onnx) model file")->required();
  add_ops_flag(sub);
  sub->add_option("--card", args->card, "model card JSON (gives the input size)");
  add_input_flags(sub, args->size, args->shape, "input H W (default: the card's, else the file's, else 224 224)");
  sub->add_flag("--json", args->json, "print JSON instead of a table");
  add_runtime_flags(sub, args->runtime, false);
  return {sub, [args] {
            args->runtime.apply();
            Model model = Model::load(args->model);
            const auto size = input_size(model, args->card, args->size);
            std::vector<int64_t> input{1, 3, size.first, size.second};
            if (!args->shape.empty()) {
              input = args->shape;
              input.insert(input.begin(), 1);
            }
            const int64_t h = input[input.size() - 2], w = input.back();  // named, not bound: lambdas below capture them
            auto layers = model.layers(input);
            // How each output lies in space, as explain will read it: said only where it is not a
            // plain [N,C,h,w] map.
            const int64_t patch = model.patch_stride();
            auto layout_of = [&](const LayerInfo& l) -> std::string {
              if (l.output_kind != "tensor") return "";
              try {
                const auto layout = infer_layout(l.shape, h, w, patch);
                return layout.kind == TokenLayout::Kind::ChannelsFirst ? "" : layout.describe();
              } catch (const Error& e) {
                return l.shape.size() == 3 || l.shape.size() == 4 ? "ambiguous: explain needs --tokens" : "";
              }
            };
            if (args->json) {
              nlohmann::json j = nlohmann::json::array();
              for (const auto& l : layers)
                j.push_back({{"path", l.path}, {"type", l.type}, {"output", l.output_kind}, {"shape", l.shape}, {"onnx_outputs", l.outputs},
                             {"layout", layout_of(l)}});
              std::cout << j.dump(2) << "\n";
              return 0;
            }
            size_t width = 4;
            for (const auto& l : layers) width = std::max(width, l.path.size());
            bool onnx = false;
            for (const auto& l : layers) onnx |= !l.outputs.empty();
            std::cout << std::left << std::setw(static_cast<int>(width) + 2) << "path" << std::setw(24) << "type"
                      << std::setw(onnx ? 28 : 0) << "output (input " + shape_text(input) + ")"
                      << (onnx ? "  ONNX output value" : "") << "\n";
            for (const auto& l : layers) {
              std::string shape = l.output_kind;
              if (l.output_kind == "tensor") {
                shape.clear();
                for (size_t i = 0; i < l.shape.size(); ++i) shape += (i ? "x" : "") + std::to_string(l.shape[i]);
              }
              const std::string layout = layout_of(l);
              std::cout << std::setw(static_cast<int>(width) + 2) << l.path << std::setw(24) << l.type << std::setw(onnx || !layout.empty() ? 28 : 0)
                        << shape << (layout.empty() ? "" : "  " + layout) << (onnx ? "  " + l.outputs : "") << "\n";
            }
            return 0;
          }};
}

}  // namespace lumen::cli
