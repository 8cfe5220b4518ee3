// Methods: every requested method's arithmetic on one target's evidence, one job per method and layer.
#include "core/side_by_side.h"
#include "explain/pipeline.h"

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
    torch::NoGradGuard no_grad;
    job.result = job.method->compute(ev, job.layer);
  };
  // A method without extra passes is a handful of small tensor ops. One after another, every op
  // wakes both threads for a few hundred microseconds of work, and six CAMs cost 5 ms each beyond
  // their maps; side by side, each on one thread (ATen runs ops serially inside a parallel region),
  // they do not (core/side_by_side.h). Methods with extra passes run alone, so that their own passes
  // can go side by side.
  std::vector<size_t> light;
  for (size_t j = 0; j < jobs.size(); ++j)
    if (jobs[j].method->extra_passes == ExtraPasses::None) light.push_back(j);
  side_by_side(static_cast<int64_t>(light.size()), [&](int64_t k) { compute(jobs[light[static_cast<size_t>(k)]]); });
  for (auto& job : jobs)
    if (job.method->extra_passes != ExtraPasses::None) compute(job);
  for (const auto& job : jobs)
    check_finite(job.result.maps, job.method->name + " map at " +
                                      (job.method->per_layer() ? "layer '" + job.layer_name(plan) + "'" : "the " + job.layer_name(plan)));
  return jobs;
}

}  // namespace lumen::detail
