// lumen bench: what each explanation costs next to the model's own inference forward, same process,
// same input, same threads. Prints one table (and optionally JSON); docs/performance.md explains it.
#include "commands.h"

#include <lumen/error.h>
#include <lumen/explain.h>
#include <lumen/image.h>
#include <lumen/model.h>
#include <lumen/output.h>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

namespace lumen::cli {
// This command's own pieces (named, so that the CLI's files can be compiled as one batch).
namespace bench {

// Writing 5 to clear_refs resets the kernel's high-water mark (Linux >= 4.0), so each measurement
// reports its own peak, not the process's.
void reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
}
struct Timing {
  double seconds = 0;  // median wall time of one call
  int runs = 0;
  double peak_mib = 0;
  double forward_share = 0;  // of the time, the part inside the model's graph executions
  std::vector<double> ratios;  // per baseline: median over runs of (this call / the baseline run beside it)
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Runs `call` once to warm up, then until `min_time` has passed (at least 3 timed runs), each run preceded
// by one run of every baseline (the inference forward; for a combined request also the first method
// alone). Each ratio is the median of the per-run ratios to the baseline run just before, so that the
// machine's drift (other work on 2 cores, clock changes) hits both sides of every ratio alike. A first
// run that alone takes longer than `min_time` (Score-CAM, RISE) is the measurement, between baseline runs.
Timing measure(const std::function<void()>& call, double min_time, const Model& model,
               const std::vector<std::function<void()>>& baselines) {
  using clock = std::chrono::steady_clock;
  Timing t;
  auto timed = [](const std::function<void()>& f) {
    const auto start = clock::now();
    f();
    return std::chrono::duration<double>(clock::now() - start).count();
  };
  std::vector<double> times;
  std::vector<std::vector<double>> base(baselines.size()), after(baselines.size());
  double forward = 0, total = 0;
  auto once = [&] {
    for (size_t b = 0; b < baselines.size(); ++b) base[b].push_back(timed(baselines[b]));
    const double f0 = model.forward_seconds();
    const double s = timed(call);
    times.push_back(s);
    total += s;
    forward += model.forward_seconds() - f0;
  };
  reset_peak_rss();
  once();
  if (times[0] >= min_time) {
    for (size_t b = 0; b < baselines.size(); ++b) after[b].push_back(timed(baselines[b]));
  } else {
    times.clear(), total = forward = 0;  // the warm-up
    for (auto& b : base) b.clear();
    while (times.size() < 3 || total < min_time) once();
  }
  for (size_t b = 0; b < baselines.size(); ++b) {
    std::vector<double> r;
    for (size_t i = 0; i < times.size(); ++i) {
      // A single long run is set against the mean of the baseline runs on either side of it.
      const double reference = after[b].empty() ? base[b][i] : 0.5 * (base[b][i] + after[b][i]);
      r.push_back(times[i] / reference);
    }
    t.ratios.push_back(median(r));
  }
  t.seconds = median(times);
  t.runs = static_cast<int>(times.size());
  t.peak_mib = peak_resident_mib();
  t.forward_share = total > 0 ? forward / total : 0;
  return t;
}

struct Args {
  std::string model, card, json;
  std::vector<std::string> methods{"gradcam"}, layers;
  std::vector<int> batches{1, 16};
  std::vector<int> size;
  std::vector<int64_t> shape;  // a 3-D network's input, C D H W
  int top_k = 1;
  std::string task = "classification";
  int boxes = 10;  // detection: boxes explained per image
  Runtime runtime;
  double min_time = 2.0;
  bool together = false;
  MethodFlags method;
  CLI::Option* old_batch = nullptr;
};

// One row: printed, and kept for --json. `t.ratios[0]` is against the inference forward (absent for
// the forward itself).
void record(nlohmann::json& rows, const std::string& what, int batch, const Timing& t) {
  const bool forward = t.ratios.empty();
  const std::string ratio = forward ? "1" : std::to_string(t.ratios[0]).substr(0, 5);
  const std::string share = forward ? "" : std::to_string(100.0 * t.forward_share).substr(0, 4) + "%";
  std::printf("%-28s %5d %12.2f %10.2f %12s %14s %10.0f\n", what.c_str(), batch, t.seconds * 1e3, batch / t.seconds, ratio.c_str(),
              share.c_str(), t.peak_mib);
  std::fflush(stdout);
  nlohmann::json row{{"what", forward ? "forward" : what}, {"batch", batch}, {"seconds", t.seconds}, {"runs", t.runs},
                     {"images_per_second", batch / t.seconds}, {"peak_rss_mib", t.peak_mib}};
  if (!forward) row["ratio_to_forward"] = t.ratios[0], row["forward_share"] = t.forward_share;
  rows.push_back(row);
}

// Every request at one batch size, each timed against the user's inference forward run beside it: the
// file's module as torch::jit::load gives it, called under c10::InferenceMode in its own layout (what
// an application pays for inference alone). lumen runs its copy in the forward mode --forward-mode
// chooses; its bare inference forward is a row of its own.
void time_batch(const Args& a, const Model& user, const ExplainOptions& given, int batch, const std::vector<int64_t>& row, nlohmann::json& rows) {
  if (batch < 1) throw Error("batch sizes must be positive");
  std::vector<int64_t> shape = row;  // one input per row: [C,H,W], or a volume's [C,D,H,W]
  shape.insert(shape.begin(), batch);
  nlohmann::json chosen;
  const Model model = with_forward_mode(user, a.runtime, shape, chosen);
  const Explainer explainer(model, Preprocess{});
  torch::manual_seed(0);
  // A detector takes images in [0, 1] and normalises them itself; a list of them when its forward says so.
  const auto x = a.task == "detection" ? torch::rand(shape) : torch::randn(shape);
  auto inference = [&] {
    c10::InferenceMode guard;
    user.run_module(x);
  };
  record(rows, "user's forward", batch, measure(inference, a.min_time, model, {}));
  auto lumen_forward = [&] {
    torch::NoGradGuard no_grad;
    model.forward(x);
  };
  record(rows, "lumen forward (" + to_string(model.forward_mode()) + ")", batch, measure(lumen_forward, a.min_time, model, {inference}));
  rows.back()["forward_mode"] = chosen;
  auto options = [&](const std::vector<std::string>& ms) {
    ExplainOptions o = given;
    o.boxes = false;  // no map is written or read here: the maps as an application that keeps them asks
    o.methods = ms;
    o.settings = taken_by(ms, given.settings);
    return o;
  };
  std::vector<std::vector<std::string>> requests;
  for (const auto& m : given.methods) requests.push_back({m});
  if (a.together && given.methods.size() > 1) requests.push_back(given.methods);
  for (const auto& ms : requests) {
    const auto opt = options(ms), first = options({ms[0]});
    const bool combined = ms.size() > 1;
    std::vector<std::function<void()>> baselines{inference};
    if (combined) baselines.push_back([&] { explainer.explain_tensor(x, first); });
    const auto t = measure([&] { explainer.explain_tensor(x, opt); }, a.min_time, model, baselines);
    record(rows, combined ? std::to_string(ms.size()) + " methods together" : ms[0], batch, t);
    if (combined) {
      // Against the first method alone, timed beside each combined run: the cost of the extra methods.
      std::printf("%-28s %5d %12s %10s %12.3f\n", ("  / " + ms[0] + " alone").c_str(), batch, "", "", t.ratios.at(1));
      rows.back()["ratio_to_first_method"] = t.ratios.at(1);
    }
  }
}

// --task: what each request explains. Segmentation: the class most pixels of the image are predicted as,
// summed over them; detection: the best --boxes boxes the detector finds in each image, whatever their
// score.
void task_targets(const Args& a, ExplainOptions& given) {
  if (a.task == "segmentation") {
    given.targets_from_output = [](const torch::IValue& output, int64_t) {
      const auto predicted = segmentation_scores()(output).detach().argmax(1).flatten();
      return std::vector<Target>{segmentation_target(predicted.bincount().argmax().item<int64_t>())};
    };
  } else if (a.task == "detection") {
    DetectionSettings settings;
    settings.score_threshold = 0;
    settings.max_boxes = a.boxes;
    given.targets_from_output = [settings](const torch::IValue& output, int64_t) { return detection_targets(output, settings); };
  }
}

int run(const Args& a) {
  a.runtime.apply();
  if (a.old_batch->count() > 0) std::cerr << "lumen: note: bench's --batch is now --batches (the old spelling goes in 0.3)\n";
  ExplainOptions given;
  given.methods = split_list(a.methods);
  given.layers = split_list(a.layers);
  given.top_k = a.top_k;
  task_targets(a, given);
  apply(a.method, given);
  check_request(given);
  const Model model = Model::load(a.model);
  const auto [h, w] = input_size(model, a.card, a.size);
  const std::vector<int64_t> row = a.shape.empty() ? std::vector<int64_t>{3, h, w} : a.shape;
  const std::string input = shape_text(a.shape.empty() ? std::vector<int64_t>{h, w} : a.shape);
  const std::string what = a.task == "detection" ? std::to_string(a.boxes) + " boxes" : a.task == "segmentation" ? "segmentation" : "top-" + std::to_string(a.top_k);
  // tcmalloc, when the command was linked with it (CMakeLists.txt): its malloc is the process's.
  const char* allocator = dlsym(RTLD_DEFAULT, "tc_malloc") ? "tcmalloc" : "glibc malloc";
  std::printf("lumen bench: %s, input %s, %d threads, %s, %s; maps without boxes; median of timed runs after a warm-up\n", model.name().c_str(), input.c_str(),
              at::get_num_threads(), allocator, what.c_str());
  std::printf("%-28s %5s %12s %10s %12s %14s %10s\n", "what", "batch", "ms/batch", "img/s", "/ user fwd", "forward share", "peak MiB");
  nlohmann::json rows = nlohmann::json::array();
  for (int batch : a.batches) {
    if (const int64_t most = model.images_per_forward(); most > 0 && batch > most) {
      std::printf("%-28s %5d  skipped: the model takes %ld image(s) per forward\n", "", batch, static_cast<long>(most));
      continue;
    }
    time_batch(a, model, given, batch, row, rows);
  }
  if (!a.json.empty()) {
    const nlohmann::json doc{{"model", model.name()}, {"input", a.shape.empty() ? nlohmann::json{h, w} : nlohmann::json(a.shape)}, {"threads", at::get_num_threads()}, {"top_k", a.top_k}, {"rows", rows}};
    write_file_atomic(a.json, doc.dump(1) + "\n");
  }
  return 0;
}

}  // namespace bench

Command add_bench(CLI::App& app) {
  auto* sub = app.add_subcommand("bench", "Time explanations against the model's own inference forward (same run)");
  auto a = std::make_shared<bench::Args>();
  add_model_flag(sub, a->model);
  sub->add_option("--card", a->card, "model card JSON (gives the input size)");
  sub->add_option("--methods,--method", a->methods, "methods to time, comma-separated (gradcam)");
  sub->add_option("--layer,-l", a->layers, "layer(s) for the CAM methods");
  sub->add_option("--batches", a->batches, "images per pass to time, comma-separated (1,16)")->delimiter(',');
  a->old_batch = sub->add_option("--batch", a->batches, "old spelling of --batches (until 0.3)")->delimiter(',');
  sub->add_option("--top-k", a->top_k, "explain the top-k classes of each image (1)")->check(CLI::Range(1, 1000));
  sub->add_option("--task", a->task,
                  "what to explain: classification (default: the top-k classes), segmentation (the class most pixels take, over "
                  "them) or detection (the best --boxes boxes a torchvision detector finds in each image)")
      ->check(CLI::IsMember({"classification", "segmentation", "detection"}));
  sub->add_option("--boxes", a->boxes, "--task detection: boxes explained per image (10)")->check(CLI::Range(1, 1000));
  sub->add_flag("--together", a->together, "also time all --methods in one request (they share the forward)");
  sub->add_option("--min-time", a->min_time, "seconds of timed runs per row (2)");
  add_input_flags(sub, a->size, a->shape, "input H W (default: card, else the file's, else 224 224)");
  add_runtime_flags(sub, a->runtime);
  add_forward_flag(sub, a->runtime);
  sub->add_option("--json", a->json, "also write the rows as JSON to this file");
  add_method_flags(sub, a->method);
  return {sub, [a] { return bench::run(*a); }};
}

}  // namespace lumen::cli
