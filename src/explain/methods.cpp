// Methods: every requested method's arithmetic on one target's evidence, one job per method and layer.
#include "explain/pipeline.h"

#include <ATen/Parallel.h>

namespace lumen::detail {

std::string Job::layer_name(const Plan& plan) const {
  switch (method->space) {
    case Space::Layer: return plan.layers[layer];
    case Space::Input: return "input";
    case Space::Attention: return "attention";
  }
  return "?";
}

std::vector<Job> run_methods(const Plan& plan, const Evidence& ev) {
  std::vector<Job> jobs;
  for (const auto* method : plan.methods)
    for (size_t l = 0; l < (method->per_layer() ? plan.layers.size() : 1); ++l) jobs.push_back({method, l, {}});
  auto compute = [&](Job& job) {
    torch::NoGradGuard no_grad;  // grad mode is per thread: set it on the worker too
    job.result = job.method->compute(ev, job.layer);
  };
  // A method without extra passes is a handful of small tensor ops. One after another, every op
  // wakes both threads for a few hundred microseconds of work, and six CAMs cost 5 ms each beyond
  // their maps; side by side, each on one thread (ATen runs ops serially inside a parallel region),
  // they do not. Methods with extra passes run alone, so that their forwards keep every thread.
  std::vector<size_t> side_by_side;
  for (size_t j = 0; j < jobs.size(); ++j)
    if (jobs[j].method->extra_passes == ExtraPasses::None) side_by_side.push_back(j);
  at::parallel_for(0, static_cast<int64_t>(side_by_side.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) compute(jobs[side_by_side[static_cast<size_t>(k)]]);
  });
  for (auto& job : jobs)
    if (job.method->extra_passes != ExtraPasses::None) compute(job);
  for (const auto& job : jobs)
    check_finite(job.result.maps, job.method->name + " map at " +
                                      (job.method->per_layer() ? "layer '" + job.layer_name(plan) + "'" : "the " + job.layer_name(plan)));
  return jobs;
}

}  // namespace lumen::detail
