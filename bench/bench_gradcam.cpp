// Grad-CAM cost against the model's own inference forward, measured in the same run.
//
//   build/bench/lumen_bench [--benchmark_min_time=2] [google-benchmark flags]
//
// Models: ../shared MobileNetV2 (TorchScript, and its ONNX export against the TorchScript forward), torchvision resnet50
// and vgg16 with random weights (made by the test fixtures:
// run `ctest -R fixtures` once). Per model and batch size (1, 8):
//   forward      torch::InferenceMode + module.forward: what inference alone costs
//   gradcam      lumen Explainer: forward with the layer captured, backward to the layer only, map,
//                upsampling to 224x224, normalisation and the box
//   naive        forward + loss.backward() into every parameter: what hook-based Python tools pay
// and prints gradcam/forward and naive/forward at the end.
#include <lumen/lumen.h>
#include <lumen/runtime.h>

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include "reporter.h"

#include <filesystem>
#include <iostream>
#include <map>

namespace {

struct Subject {
  std::string name, path, layer;
  torch::jit::Module plain;       // as the user would run it
  torch::jit::Module trainable;   // parameters requiring grad, for the naive baseline
  std::unique_ptr<lumen::Model> model;
};

std::vector<std::unique_ptr<Subject>> subjects;

torch::Tensor input(int batch) {
  torch::manual_seed(0);
  return torch::randn({batch, 3, 224, 224});
}

void forward(benchmark::State& state, Subject* s, int batch) {
  auto x = input(batch);
  for (auto _ : state) {
    c10::InferenceMode guard;
    benchmark::DoNotOptimize(s->plain.forward({x}).toTensor());
  }
  state.counters["img/s"] = benchmark::Counter(batch * state.iterations(), benchmark::Counter::kIsRate);
}

void gradcam(benchmark::State& state, Subject* s, int batch) {
  auto x = input(batch);
  lumen::Explainer ex(*s->model, lumen::Preprocess{});
  lumen::ExplainOptions opt;
  opt.layers = {s->layer};
  for (auto _ : state) benchmark::DoNotOptimize(ex.explain_tensor(x, opt));
  state.counters["img/s"] = benchmark::Counter(batch * state.iterations(), benchmark::Counter::kIsRate);
}

void naive(benchmark::State& state, Subject* s, int batch) {
  auto x = input(batch);
  for (auto _ : state) {
    auto logits = s->trainable.forward({x}).toTensor();
    auto cls = logits.argmax(1, true);
    logits.gather(1, cls).sum().backward();
    for (auto p : s->trainable.parameters()) p.mutable_grad() = torch::Tensor();
  }
  state.counters["img/s"] = benchmark::Counter(batch * state.iterations(), benchmark::Counter::kIsRate);
}


}  // namespace

int main(int argc, char** argv) {
  lumen::ensure_passive_openmp(argv);
  lumen::keep_freed_memory();
  lumen::set_threads(0);
  benchmark::Initialize(&argc, argv);
  const std::string shared = LUMEN_SHARED_DIR, fixtures = LUMEN_FIXTURES_DIR;
  // name, model lumen explains, layer, model whose plain forward is the baseline. The ONNX subject is
  // measured against PyTorch's own forward of the same network, the inference a user would otherwise run.
  const std::vector<std::array<std::string, 4>> wanted{
      {"mobilenet_v2", shared + "/models/mobilenet_v2_imagenet.pt", "features.18", shared + "/models/mobilenet_v2_imagenet.pt"},
      {"mobilenet_onnx", shared + "/models/mobilenet_v2_imagenet.onnx", "features.18", shared + "/models/mobilenet_v2_imagenet.pt"},
      {"resnet50", fixtures + "/resnet50_traced.pt", "layer4", fixtures + "/resnet50_traced.pt"},
      {"vgg16", fixtures + "/vgg16_traced.pt", "features.29", fixtures + "/vgg16_traced.pt"}};
  for (const auto& [name, path, layer, baseline] : wanted) {
    if (!std::filesystem::exists(path)) {
      std::cerr << "skipping " << name << ": " << path << " not found (run `ctest -R fixtures` first)\n";
      continue;
    }
    auto s = std::make_unique<Subject>();
    s->name = name;
    s->path = path;
    s->layer = layer;
    s->plain = torch::jit::load(baseline);
    s->plain.eval();
    s->trainable = torch::jit::load(baseline);
    for (auto p : s->trainable.parameters()) p.requires_grad_(true);
    s->model = std::make_unique<lumen::Model>(lumen::Model::load(path));
    for (int batch : {1, 8}) {
      std::string suffix = "/" + name + "/batch:" + std::to_string(batch);
      benchmark::RegisterBenchmark(("forward" + suffix).c_str(), forward, s.get(), batch)->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("gradcam" + suffix).c_str(), gradcam, s.get(), batch)->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("naive" + suffix).c_str(), naive, s.get(), batch)->Unit(benchmark::kMillisecond);
    }
    subjects.push_back(std::move(s));
  }
  lumen::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  std::printf("\nratios (same run, %d threads):\n%-14s %6s %16s %16s\n", at::get_num_threads(), "model", "batch",
              "gradcam/forward", "naive/forward");
  for (const auto& s : subjects) {
    for (int batch : {1, 8}) {
      std::string suffix = "/" + s->name + "/batch:" + std::to_string(batch);
      auto f = reporter.seconds.find("forward" + suffix), g = reporter.seconds.find("gradcam" + suffix),
           n = reporter.seconds.find("naive" + suffix);
      if (f == reporter.seconds.end() || g == reporter.seconds.end() || n == reporter.seconds.end()) continue;
      std::printf("%-14s %6d %16.3f %16.3f\n", s->name.c_str(), batch, g->second / f->second, n->second / f->second);
    }
  }
  benchmark::Shutdown();
  return 0;
}
