#include "commands.h"

#include <lumen/image.h>

#include <lumen/error.h>
#include <lumen/runtime.h>

#include <c10/util/Exception.h>

#include <opencv2/core.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <iostream>
#include <sstream>

namespace lumen::cli {

std::vector<std::string> split_list(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const auto& item : items) {
    size_t start = 0;
    while (start <= item.size()) {
      size_t comma = item.find(',', start);
      std::string part = item.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!part.empty()) out.push_back(part);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return out;
}

std::string stem_of(const std::string& path) { return std::filesystem::path(path).stem().string(); }

std::string joined(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

void Runtime::apply() const {
  set_threads(threads);
  set_deterministic(deterministic);
  set_image_limits({max_pixels, allow_truncated});
}

void add_runtime_flags(CLI::App* sub, Runtime& runtime, bool deterministic_flag) {
  sub->add_option("--threads", runtime.threads, "intra-op threads (default: all cores)")->check(CLI::Range(1, 1024));
  sub->add_option("--max-pixels", runtime.max_pixels, "refuse images larger than this many pixels, read from the file's header before decoding (80000000)")
      ->check(CLI::Range(1LL, 1LL << 32));
  sub->add_flag("--allow-truncated", runtime.allow_truncated,
                "explain images whose file ends early (the decoder fills the rest with grey); refused by default");
  if (deterministic_flag)
    sub->add_flag("--deterministic", runtime.deterministic, "the same maps for any thread count (ATen's convolutions; slower)");
}

void refuse_non_finite(const CLI::App& sub) {
  for (const CLI::Option* opt : sub.get_options()) {
    for (const std::string& given : opt->results()) {
      // Each item of a comma-separated list too (--layer-weights 1,nan).
      std::stringstream items(given);
      for (std::string item; std::getline(items, item, ',');) {
        std::string lower;
        for (char ch : item) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (!lower.empty() && (lower[0] == '+' || lower[0] == '-')) lower.erase(0, 1);
        if (lower == "nan" || lower == "inf" || lower == "infinity" || lower.rfind("nan(", 0) == 0)
          throw Error(opt->get_name() + " must be a finite number, got " + given);
      }
    }
  }
}

void add_model_flag(CLI::App* sub, std::string& model) {
  sub->add_option("--model,-m", model, "TorchScript (.pt) or ONNX (.onnx) model file")->required();
}

Progress progress_printer() {
  auto last_report = std::make_shared<std::chrono::steady_clock::time_point>();
  return [last_report](const std::string& what, int64_t done, int64_t total) {
    auto now = std::chrono::steady_clock::now();
    if (done < total && now - *last_report < std::chrono::milliseconds(500)) return;
    *last_report = now;
    std::cerr << "\r  " << what << " " << done << "/" << total << (done >= total ? "\n" : "") << std::flush;
  };
}

std::pair<int, int> input_size(const Model& model, const std::string& card, const std::vector<int>& size) {
  if (size.size() == 2) return {size[0], size[1]};
  if (!card.empty()) {
    const auto c = load_card(card);
    return {c.preprocess.height, c.preprocess.width};
  }
  if (auto d = model.declared_input_shape(); d.size() == 4 && d[2] > 0 && d[3] > 0) return {static_cast<int>(d[2]), static_cast<int>(d[3])};
  return {224, 224};
}

}  // namespace lumen::cli

int main(int argc, char** argv) {
  lumen::ensure_passive_openmp(argv);
  lumen::keep_freed_memory();

  CLI::App app{"lumen: why a deep network decided what it decided"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("lumen ") + lumen::version());
  std::vector<lumen::cli::Command> commands{lumen::cli::add_layers(app), lumen::cli::add_explain(app),
                                            lumen::cli::add_demo(app), lumen::cli::add_eval(app),
                                            lumen::cli::add_visualize(app), lumen::cli::add_audit(app),
                                            lumen::cli::add_bench(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, like every other refusal: what was wrong, and where to look.
    std::cerr << "lumen: error: " << lumen::first_line(e.what()) << " (see lumen " << (argc > 1 ? argv[1] : "") << " --help)\n";
    return 2;
  }
  try {
    // No option takes NaN or infinity (CLI11's range checks let NaN through: it compares false).
    for (auto& c : commands)
      if (c.app->parsed()) lumen::cli::refuse_non_finite(*c.app);
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
    return 1;
  } catch (const lumen::Error& e) {
    std::cerr << "lumen: error: " << e.what() << "\n";
  } catch (const c10::Error& e) {
    std::cerr << "lumen: error: " << lumen::first_line(e.what_without_backtrace()) << "\n";
  } catch (const cv::Exception& e) {
    std::cerr << "lumen: error: " << lumen::first_line(e.what()) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "lumen: error: " << lumen::first_line(e.what()) << "\n";
  }
  return 2;
}
