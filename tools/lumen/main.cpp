#include "commands.h"

#include <lumen/image.h>

#include <lumen/error.h>
#include <lumen/runtime.h>

#include <c10/util/Exception.h>
#include <torch/version.h>

#include <opencv2/core.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <set>

#include <unistd.h>
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
  sub->add_flag("--quiet,-q", runtime.quiet, "no progress on stderr (errors and notes still)");
  sub->add_option("--max-pixels", runtime.max_pixels, "refuse images larger than this many pixels, read from the file's header before decoding (80000000)")
      ->check(CLI::Range(1LL, 1LL << 32));
  sub->add_flag("--allow-truncated", runtime.allow_truncated,
                "explain images whose file ends early (the decoder fills the rest with grey); refused by default");
  if (deterministic_flag)
    sub->add_flag("--deterministic", runtime.deterministic, "the same maps for any thread count (ATen's convolutions; slower)");
}

void add_forward_flag(CLI::App* sub, Runtime& runtime) {
  sub->add_option("--forward-mode", runtime.forward_mode,
                  "how lumen runs the model: auto (default: the faster of the two, probed once per model file and input size and "
                  "cached), plain, or channels-last (NHWC weights and inputs, batch norms folded into their convolutions); maps agree to float rounding")
      ->check(CLI::IsMember({"auto", "plain", "channels-last"}));
}

void add_shard_flag(CLI::App* sub, std::string& shard) {
  sub->add_option("--shard", shard,
                  "do only block K of N of the images (K from 0 to N-1, in list order; docs/scale.md); auto reads Kubernetes' "
                  "JOB_COMPLETION_INDEX (with auto/N or JOB_COMPLETIONS) or Slurm's array task; lumen merge joins the shards");
}

Shard shard_of_flag(const std::string& shard) {
  if (shard.empty()) return {};
  const Shard s = parse_shard(shard, process_environment());
  std::cerr << "lumen: shard " << s.text() << " (" << s.source << ")\n";
  return s;
}

Model with_forward_mode(const Model& model, const Runtime& runtime, const std::vector<int64_t>& shape, nlohmann::json& chosen) {
  if (runtime.forward_mode == "auto" && runtime.deterministic) {
    // --deterministic promises the same maps on any machine and thread count: no probe that could
    // choose differently from one run to the next.
    chosen = {{"mode", "plain"}, {"chosen_by", "--deterministic"}};
    return model.forward_mode() == ForwardMode::Plain ? model : model.with_forward_mode(ForwardMode::Plain);
  }
  if (runtime.forward_mode != "auto") {
    const ForwardMode mode = parse_forward_mode(runtime.forward_mode);
    chosen = {{"mode", to_string(mode)}, {"chosen_by", "--forward-mode"}};
    return mode == model.forward_mode() ? model : model.with_forward_mode(mode);
  }
  const std::string cache = default_forward_cache();
  const ForwardPlan plan = plan_forward(model, shape, cache);
  chosen = {{"mode", to_string(plan.mode)}, {"chosen_by", plan.cached ? "cached probe" : "probe"}, {"plain_ms", plan.plain_ms},
            {"channels_last_ms", plan.channels_last_ms}, {"probe_shape", shape}};
  // Said in run.json (and bench's rows), not on stderr: a run that then fails prints its one error line.
  return plan.mode == model.forward_mode() ? model : model.with_forward_mode(plan.mode);
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

const CLI::Validator& output_folder() {
  static const CLI::Validator v(
      [](const std::string& out) -> std::string {
        if (out == "-") return "lumen writes a folder of files (maps, pictures, run.json), not one stream; give a folder name";
        if (out.empty()) return "the folder name is empty";
        return "";
      },
      "FOLDER");
  return v;
}

void add_model_flag(CLI::App* sub, std::string& model) {
  sub->add_option("--model,-m", model, "TorchScript (.pt) or ONNX (.onnx) model file")->required();
  add_ops_flag(sub);
}

void add_ops_flag(CLI::App* sub) {
  sub->add_option_function<std::vector<std::string>>(
      "--ops-library",
      [](const std::vector<std::string>& paths) {
        // Thrown while parsing: as a parse error, it gets lumen's one-line refusal and exit 2.
        try {
          for (const auto& p : paths) load_ops_library(p);
        } catch (const Error& e) {
          throw CLI::ValidationError("--ops-library", e.what());
        }
      },
      "shared library of TorchScript operators the model calls, loaded first (a scripted torchvision detector: "
      "python3-torchvision's torchvision/_C*.so); repeatable");
}

void add_input_flags(CLI::App* sub, std::vector<int>& size, std::vector<int64_t>& shape, const std::string& size_help) {
  sub->add_option("--input-size", size, size_help)->expected(2);
  sub->add_option("--input-shape", shape, "a 3-D network's input C,D,H,W (a clip: 3,T,H,W), instead of an image's")
      ->delimiter(',')
      ->expected(4)
      ->check(CLI::Range(int64_t{1}, int64_t{100000}))
      ->excludes("--input-size");
}

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return s;
}

Progress progress_printer(bool quiet, std::function<std::string()> extra) {
  if (quiet) return [](const std::string&, int64_t, int64_t) {};
  // Per kind of work (what): when it started, when it was last printed, the last tenth printed.
  struct State {
    std::chrono::steady_clock::time_point start, printed;
    int64_t tenth = -1;
  };
  auto states = std::make_shared<std::map<std::string, State>>();
  const bool live = ::isatty(STDERR_FILENO) != 0;
  return [states, live, extra](const std::string& what, int64_t done, int64_t total) {
    const auto now = std::chrono::steady_clock::now();
    auto [it, fresh] = states->try_emplace(what);
    State& st = it->second;
    if (fresh) st.start = st.printed = now;
    const bool finished = done >= total;
    const double since = std::chrono::duration<double>(now - st.printed).count();
    const int64_t tenth = total > 0 ? done * 10 / total : 10;
    // A terminal gets a live line twice a second; a file or pipe one line per tenth or per 5 s.
    if (!finished && (live ? since < 0.5 : (tenth == st.tenth && since < 5))) return;
    st.printed = now;
    st.tenth = tenth;
    const double elapsed = std::chrono::duration<double>(now - st.start).count();
    std::ostringstream line;
    line << "  " << what << " " << done << "/" << total;
    if (elapsed > 0.2 && done > 0) {
      const double rate = static_cast<double>(done) / elapsed;
      line << "  " << std::setprecision(3) << rate << "/s";
      if (!finished) line << "  eta " << duration_text(static_cast<double>(total - done) / rate);
      else line << "  in " << duration_text(elapsed);
    }
    if (extra) line << "  " << extra();
    const std::lock_guard<std::mutex> lock(stderr_mutex());  // not while a decoder has stderr silenced
    std::cerr << (live ? "\r" : "") << line.str() << (live ? "\033[K" : "") << (finished || !live ? "\n" : "") << std::flush;
    if (finished) states->erase(what);
  };
}

std::string duration_text(double seconds) {
  char buf[32];
  if (seconds < 60) std::snprintf(buf, sizeof buf, "%.1f s", seconds);
  else std::snprintf(buf, sizeof buf, "%d:%02d", static_cast<int>(seconds) / 60, static_cast<int>(seconds) % 60);
  return buf;
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

namespace {
// A model's own warnings (TorchScript's warn(), e.g. a scripted torchvision detector's "RCNN always
// returns a (Losses, Detections) tuple") run on every forward: LibTorch's handler would log each one
// through glog, hundreds of times for a perturbation method. Each distinct one is said once.
class WarnOnce : public c10::WarningHandler {
 public:
  void process(const c10::SourceLocation&, const std::string& message, bool) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (seen_.insert(message).second) std::cerr << "lumen: note: the model warns: " << message << "\n";
  }

 private:
  std::mutex mutex_;
  std::set<std::string> seen_;
};
}  // namespace

int main(int argc, char** argv) {
  lumen::ensure_passive_openmp(argv);
  lumen::keep_freed_memory();
  static WarnOnce warn_once;
  c10::Warning::set_warning_handler(&warn_once);

  CLI::App app{"lumen: why a deep network decided what it decided"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("lumen ") + lumen::version() + " (LibTorch " + TORCH_VERSION + ", OpenCV " +
                                        cv::getVersionString() + ")");
  std::vector<lumen::cli::Command> commands{lumen::cli::add_layers(app), lumen::cli::add_explain(app),
                                            lumen::cli::add_demo(app), lumen::cli::add_eval(app),
                                            lumen::cli::add_visualize(app), lumen::cli::add_audit(app), lumen::cli::add_merge(app),
                                            lumen::cli::add_bench(app), lumen::cli::add_serve(app)};
  // A missing or unknown command: name them all, and the closest (CLI11 would only say that one is required).
  std::vector<std::string> names;
  for (const auto& c : commands) names.push_back(c.app->get_name());
  if (argc < 2) {
    std::cerr << "lumen: error: a command is required: " << lumen::cli::joined(names) << " (lumen --help describes them)\n";
    return 2;
  }
  if (const std::string first = argv[1]; first[0] != '-' && std::find(names.begin(), names.end(), first) == names.end()) {
    std::cerr << "lumen: error: unknown command '" << first << "'; did you mean '" << lumen::closest_names(first, names, 1).at(0)
              << "'? The commands are " << lumen::cli::joined(names) << "\n";
    return 2;
  }
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
