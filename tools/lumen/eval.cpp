// lumen eval: every metric of docs/evaluation.md for every requested method over a dataset folder.
// The run is the library's (lumen::evaluate_dataset): per-image records go to OUT/records.jsonl as they
// are measured (a killed run resumes from them); the report is written atomically at the end.
#include "commands.h"

#include <lumen/dataset.h>
#include <lumen/error.h>
#include <lumen/evaluate.h>
#include <lumen/image.h>
#include <lumen/model.h>
#include <lumen/shard.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lumen::cli {
// This command's own pieces (named, so that the CLI's files can be compiled as one batch).
namespace eval {

struct Args {
  std::string model, card, data, layer, out = "lumen-eval", aggregate, shard;
  std::vector<std::string> methods{"gradcam"}, metrics{"loc,pointing,deletion,insertion,drop"};
  int limit = 0, batch = 8, steps = 50, sanity_images = 8, workers = 1;
  bool no_overlap = false;
  bool report = true;  // a worker (--workers) leaves the report to its parent
  Runtime runtime;
  uint64_t seed = 0;
  bool fresh = false;
  MethodFlags shared;
};

std::atomic<bool> g_interrupted{false};
std::atomic<int64_t> g_first_interrupt_ns{0};
// The first Ctrl-C asks the run to stop at its next record. `timeout -s INT` and a shell's Ctrl-C can
// deliver the same interrupt twice (to the process and to its group), so only a second one a second or
// more later means "stop now". Only async-signal-safe calls here.
extern "C" void on_interrupt(int) {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const int64_t now = static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
  int64_t first = 0;
  if (g_first_interrupt_ns.compare_exchange_strong(first, now)) {
    g_interrupted = true;
    return;
  }
  if (now - first > 1000000000LL) {
    static const char message[] = "\nlumen: interrupted again; stopping now (records.jsonl keeps every finished image)\n";
    [[maybe_unused]] const auto written = ::write(STDERR_FILENO, message, sizeof message - 1);
    ::_exit(130);
  }
}
struct Interrupted {};

// Progress with the time so far, the time to go, and the resident memory (which must stay flat).
Progress eval_progress(bool quiet) {
  const Progress print = progress_printer(quiet, [] { return "rss " + std::to_string(static_cast<int>(resident_mib())) + " MiB"; });
  return [print](const std::string& what, int64_t done, int64_t total) {
    if (g_interrupted) throw Interrupted{};
    print(what, done, total);
  };
}

int run(const Args& a);

// --workers W: W processes, each a shard k/W of this run on its own set of cores, then `lumen merge`
// into --out. Processes, not threads: each is an ordinary resumable shard (OUT/workers/part-k), and
// LibTorch's thread pool is per process. They are forked before this process touches LibTorch (a fork
// after OpenMP has started its threads can hang the child).
int run_workers(const Args& a) {
  if (!a.shard.empty()) throw Error("--workers splits one machine's run; with --shard give each shard its own machine (or its own --workers)");
  cpu_set_t mine;
  CPU_ZERO(&mine);
  if (::sched_getaffinity(0, sizeof mine, &mine) != 0) throw Error("cannot read this process's CPU set");
  std::vector<int> cores;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &mine)) cores.push_back(c);
  const int w = a.workers;
  if (w > static_cast<int>(cores.size()))
    throw Error("--workers " + std::to_string(w) + " is more than the " + std::to_string(cores.size()) + " cores this process may use");
  const std::string parts_dir = a.out + "/workers";
  std::vector<std::string> parts;
  std::vector<pid_t> children;
  for (int k = 0; k < w; ++k) {
    parts.push_back(parts_dir + "/part-" + std::to_string(k));
    // Cores [k*n/w, (k+1)*n/w) of the n this process may use.
    const size_t lo = cores.size() * static_cast<size_t>(k) / static_cast<size_t>(w), hi = cores.size() * static_cast<size_t>(k + 1) / static_cast<size_t>(w);
    std::cout << std::flush;
    std::cerr << std::flush;
    const pid_t pid = ::fork();
    if (pid < 0) throw Error("cannot start worker " + std::to_string(k) + ": " + std::strerror(errno));
    if (pid == 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      for (size_t i = lo; i < hi; ++i) CPU_SET(cores[i], &set);
      ::sched_setaffinity(0, sizeof set, &set);
      Args child = a;
      child.workers = 1;
      child.shard = std::to_string(k) + "/" + std::to_string(w);
      child.out = parts.back();
      child.runtime.threads = static_cast<int>(hi - lo);
      child.runtime.quiet = true;
      child.report = false;
      int code = 2;
      try {
        code = run(child);
      } catch (const std::exception& e) {
        std::cerr << "lumen: error: worker " << k << ": " << first_line(e.what()) << "\n";
      }
      std::cout << std::flush;
      std::cerr << std::flush;
      ::_exit(code);
    }
    children.push_back(pid);
  }
  // Progress: the workers' records, counted as they are written (the sanity cascade's too, so the count
  // is held below the total until every worker is done); the table after the merge.
  std::signal(SIGINT, on_interrupt);
  Dataset data = load_dataset(a.data);
  if (a.limit > 0 && static_cast<size_t>(a.limit) < data.samples.size()) data.samples.resize(static_cast<size_t>(a.limit));
  const auto total = static_cast<int64_t>(data.samples.size() * split_list(a.methods).size());
  const Progress progress = progress_printer(a.runtime.quiet);
  int failed = 0, interrupted = 0;
  size_t running = children.size();
  while (running > 0) {
    for (auto& pid : children) {
      if (pid <= 0) continue;
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (code == 130) ++interrupted;
        else if (code != 0) ++failed;
        pid = 0;
        --running;
      }
    }
    int64_t lines = 0;
    for (const auto& part : parts) {
      std::ifstream in(part + "/records.jsonl");
      lines += std::max<int64_t>(0, std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n') - 1);
    }
    progress("eval (" + std::to_string(w) + " workers)", running > 0 ? std::min(lines, total - 1) : total, total);
    if (running > 0) ::usleep(500000);
  }
  if (interrupted) {
    std::cerr << "\nlumen: interrupted; the workers' records are kept in " << parts_dir << "; run the same command again to resume\n";
    return 130;
  }
  if (failed) throw Error(std::to_string(failed) + " of " + std::to_string(w) + " workers failed (their errors are above); run the same command again to resume");
  std::signal(SIGINT, SIG_DFL);
  MergeRun merge;
  merge.parts = parts;
  merge.out = a.out;
  const auto start = std::chrono::steady_clock::now();
  const MergeResult r = merge_shards(merge);
  std::cout << r.summary << "evaluated with " << w << " workers (" << r.records << " records; merged in "
            << duration_text(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()) << ")\n";
  std::string folder = a.out;
  while (folder.size() > 1 && folder.back() == '/') folder.pop_back();
  std::cout << "wrote " << folder << "/table.md, results.csv, results.json, index.html (the workers' shards are in " << parts_dir << ")\n";
  return 0;
}

int run(const Args& a) {
  if (a.workers > 1) return run_workers(a);
  std::signal(SIGINT, on_interrupt);  // from the start: a Ctrl-C while the model loads also stops cleanly
  a.runtime.apply();
  if (a.card.empty()) throw Error("--card is required: eval needs the model's preprocessing");
  DatasetRun run;
  run.methods = split_list(a.methods);
  run.eval.metrics = split_list(a.metrics);
  run.eval.steps = a.steps;
  run.batch = a.batch;
  run.sanity_images = a.sanity_images;
  run.seed = a.seed;
  run.fresh = a.fresh;
  run.aggregate = a.aggregate;
  run.model_file = a.model;
  run.card_file = a.card;
  run.limit = a.limit;
  run.shard = shard_of_flag(a.shard);
  run.overlap = !a.no_overlap;
  ExplainOptions shared;
  apply(a.shared, shared);
  run.shared = shared.shared;
  run.progress = eval_progress(a.runtime.quiet);
  run.note = [](const std::string& note) { std::cerr << note << "\n"; };
  const ModelCard card = load_card(a.card);
  run.layers = split_list({a.layer});
  if (run.layers.empty() && !card.cam_layer.empty()) run.layers.push_back(card.cam_layer);
  Dataset data = load_dataset(a.data);
  if (a.limit > 0 && static_cast<size_t>(a.limit) < data.samples.size()) data.samples.resize(static_cast<size_t>(a.limit));
  nlohmann::json forward;
  const Model model = with_forward_mode(Model::load(a.model), a.runtime, {a.batch, 3, card.preprocess.height, card.preprocess.width}, forward);
  const Explainer explainer(model, card.preprocess, card.labels);
  EvalResult result;
  try {
    result = evaluate_dataset(explainer, data, run, a.out);
  } catch (const Interrupted&) {
    std::ifstream records(a.out + "/records.jsonl");
    const auto lines = std::count(std::istreambuf_iterator<char>(records), std::istreambuf_iterator<char>(), '\n');
    std::cerr << "\nlumen: interrupted; " << std::max<std::ptrdiff_t>(0, lines - 1) << " records kept in " << a.out
              << "/records.jsonl; run the same command again to resume\n";
    return 130;
  }
  std::signal(SIGINT, SIG_DFL);
  if (!a.report) return 0;
  std::cout << result.table << "\n" << result.notes << "evaluated " << result.pairs << " image x method pairs"
            << (result.resumed ? " (" + std::to_string(result.resumed) + " of them resumed from records.jsonl)" : std::string())
            << (result.resumed < result.pairs ? " in " + duration_text(result.seconds) : std::string()) << "\n";
  write_eval_report(explainer, data, run, result, a.out);
  std::string folder = a.out;
  while (folder.size() > 1 && folder.back() == '/') folder.pop_back();  // "report/" -> "report/table.md", not "report//table.md"
  std::cout << "wrote " << folder << "/table.md, results.csv, results.json, index.html\n";
  return 0;
}

}  // namespace eval

Command add_eval(CLI::App& app) {
  auto* sub = app.add_subcommand("eval", "Measure explanations over a dataset: localisation, pointing, deletion/insertion, drop, sanity");
  auto a = std::make_shared<eval::Args>();
  add_model_flag(sub, a->model);
  sub->add_option("--card", a->card, "model card JSON")->required();
  sub->add_option("--data,-d", a->data, "dataset folder: images/, labels.csv, boxes.csv")->required();
  sub->add_option("--methods,--method", a->methods, "method(s), comma-separated (default gradcam): " + joined(method_names()));
  sub->add_option("--metrics", a->metrics, "comma-separated: " + joined(eval_metrics()) + " (default: " + joined(EvalOptions().metrics) + ")");
  sub->add_option("--layer,-l", a->layer, "layer(s) for CAM methods, comma-separated (default: the card's)");
  sub->add_option("--aggregate", a->aggregate, "with several layers: score their combination (mean, max, product)")
      ->check(CLI::IsMember({"mean", "max", "product"}));
  sub->add_option("--out,-o", a->out, "report folder (default lumen-eval); an interrupted run resumes from it")->check(output_folder());
  sub->add_flag("--fresh", a->fresh, "ignore records of an earlier run in --out");
  sub->add_option("--limit", a->limit, "only the first N images of labels.csv");
  sub->add_option("--batch", a->batch, "images per explanation pass (8)")->check(CLI::Range(1, 4096));
  sub->add_option("--steps", a->steps, "deletion/insertion: steps of the curve (50)")->check(CLI::Range(1, 1000000));
  add_shard_flag(sub, a->shard);
  sub->add_option("--workers", a->workers,
                  "run W processes, each a shard on its own share of the cores, and merge them (faster when one process cannot "
                  "use every core at this batch size; docs/scale.md)")
      ->check(CLI::Range(1, 1024));
  sub->add_flag("--no-overlap", a->no_overlap, "decode each batch only when it is needed (for measuring what decoding ahead gains)");
  sub->add_option("--sanity-images", a->sanity_images, "sanity: images used (8)")->check(CLI::Range(1, 100000));
  add_shared_flags(sub, a->shared);
  sub->add_option("--seed", a->seed, "seed of random methods and of the sanity randomisation (0)");
  add_runtime_flags(sub, a->runtime);
  add_forward_flag(sub, a->runtime);
  return {sub, [a] { return eval::run(*a); }};
}

}  // namespace lumen::cli
