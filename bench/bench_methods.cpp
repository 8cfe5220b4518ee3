// Pixel-space and other methods on the shared MobileNetV2, relative to one forward + backward to the
// input of the same model, measured in the same run.
//
//   build/bench/lumen_bench_methods [--benchmark_min_time=1]
//
// SmoothGrad (n=50), Integrated Gradients (m=50), Score-CAM, Ablation-CAM and occlusion (32 px patch,
// 16 px stride) run at batch 1 and are reported in images/s; six gradient-weighted CAMs in one request
// are compared with Grad-CAM alone.
#include <lumen/lumen.h>
#include <lumen/runtime.h>

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include "reporter.h"
#include <torch/csrc/autograd/autograd.h>

#include <map>

namespace {

torch::jit::Module plain;
std::unique_ptr<lumen::Model> model;
const std::string kLayer = "features.18";

torch::Tensor input(int batch) {
  torch::manual_seed(0);
  return torch::randn({batch, 3, 224, 224});
}

void forward_backward(benchmark::State& state, int batch) {
  auto x0 = input(batch);
  for (auto _ : state) {
    auto x = x0.clone().requires_grad_(true);
    auto logits = plain.forward({x}).toTensor();
    auto y = logits.gather(1, logits.argmax(1, true)).sum();
    benchmark::DoNotOptimize(torch::autograd::grad({y}, {x}));
  }
}

void method(benchmark::State& state, std::string name, int batch) {
  auto x = input(batch);
  lumen::Explainer ex(*model, lumen::Preprocess{});
  lumen::ExplainOptions opt;
  opt.methods.clear();
  for (size_t start = 0; start <= name.size();) {  // comma-separated list
    size_t comma = name.find(',', start);
    opt.methods.push_back(name.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  opt.layers = {kLayer};
  for (auto _ : state) benchmark::DoNotOptimize(ex.explain_tensor(x, opt));
  state.counters["img/s"] = benchmark::Counter(batch * state.iterations(), benchmark::Counter::kIsRate);
}


}  // namespace

int main(int argc, char** argv) {
  lumen::ensure_passive_openmp(argv);
  lumen::keep_freed_memory();
  lumen::set_threads(0);
  benchmark::Initialize(&argc, argv);
  const std::string path = std::string(LUMEN_SHARED_DIR) + "/models/mobilenet_v2_imagenet.pt";
  plain = torch::jit::load(path);
  plain.eval();
  for (auto p : plain.parameters()) p.requires_grad_(false);
  model = std::make_unique<lumen::Model>(lumen::Model::load(path));
  const std::vector<std::string> per_batch{"gradcam", "saliency", "input-x-gradient", "guided-backprop", "deconvnet",
                                           "guided-gradcam"};
  for (int batch : {1, 8}) {
    benchmark::RegisterBenchmark(("fwd+bwd-to-input/batch:" + std::to_string(batch)).c_str(), forward_backward, batch)
        ->Unit(benchmark::kMillisecond);
    for (const auto& m : per_batch)
      benchmark::RegisterBenchmark((m + "/batch:" + std::to_string(batch)).c_str(), method, m, batch)->Unit(benchmark::kMillisecond);
  }
  for (const std::string m : {"smoothgrad", "integrated-gradients", "scorecam", "ablationcam", "occlusion"})
    benchmark::RegisterBenchmark((m + "/batch:1").c_str(), method, m, 1)->Unit(benchmark::kMillisecond)->Iterations(2);
  // All six gradient-weighted CAM methods in one request, against Grad-CAM alone.
  benchmark::RegisterBenchmark("six-cams/batch:8", method, std::string("gradcam,gradcam++,hirescam,xgradcam,layercam,eigengradcam"), 8)
      ->Unit(benchmark::kMillisecond);
  lumen::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  std::printf("\nratio to one forward + backward to the input (same run, %d threads):\n", at::get_num_threads());
  for (int batch : {1, 8}) {
    auto base = reporter.seconds.find("fwd+bwd-to-input/batch:" + std::to_string(batch));
    if (base == reporter.seconds.end()) continue;
    for (const auto& m : per_batch) {
      auto t = reporter.seconds.find(m + "/batch:" + std::to_string(batch));
      if (t != reporter.seconds.end()) std::printf("  %-20s batch %d  %6.3f\n", m.c_str(), batch, t->second / base->second);
    }
  }
  for (const std::string m : {"smoothgrad", "integrated-gradients", "scorecam", "ablationcam", "occlusion"}) {
    auto t = reporter.seconds.find(m + "/batch:1/iterations:2");
    if (t != reporter.seconds.end()) std::printf("  %-20s %.3f images/s\n", m.c_str(), 1000.0 / t->second);  // times in ms
  }
  auto six = reporter.seconds.find("six-cams/batch:8"), one = reporter.seconds.find("gradcam/batch:8");
  if (six != reporter.seconds.end() && one != reporter.seconds.end())
    std::printf("  six gradient CAMs together / Grad-CAM alone, batch 8: %.3f\n", six->second / one->second);
  benchmark::Shutdown();
  return 0;
}
