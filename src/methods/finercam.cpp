// FinerCAM (Zhang et al., CVPR 2025, arXiv 2501.11309; pytorch-grad-cam's FinerCAM): for fine-grained
// classes, explain what tells the class apart from its nearest rivals rather than what it shares with
// them. A base CAM (--finer-base, Grad-CAM by default) runs under the target
//   y = sum_j p_j (z_c - alpha z_j) / (sum_j p_j + 1e-9),
// j over the --finer-comparisons classes whose logits lie closest to z_c, p = softmax(z) (lumen's
// finer_target, pytorch-grad-cam's FinerWeightedTarget). alpha = 0 gives the base method on z_c
// (up to the weights' gradient); larger alpha subtracts more of the rivals' evidence. How it differs from
// --contrast: that subtracts finished maps of targets the user chose; this changes the target the
// gradient follows, with the rivals and their weights chosen from the logits. Costs one forward and
// backward of its own: the target is only known once the method runs.
#include <lumen/error.h>

#include "methods/kit/method.h"

namespace lumen::detail {
namespace {

void check_finer_base(const std::string& name) {
  std::string bases;
  bool found = false;
  for (const auto& m : methods()) {
    if (m.family != Family::Cam || !m.per_layer() || m.extra_passes != ExtraPasses::None || m.uses || !m.needs.layer_gradients) continue;
    bases += (bases.empty() ? "" : ", ") + m.name;
    found |= m.name == name;
  }
  if (!found) throw Error("--finer-base '" + name + "' is not a gradient CAM without extra passes (" + bases + ")");
}

}  // namespace
}  // namespace lumen::detail

LUMEN_METHOD(finercam) {
  Method m("finercam", "Zhang et al. 2025, Finer-CAM", Family::Cam);
  Param base = text("finer_base", "gradcam", "finercam: the gradient CAM it runs under the comparison target");
  base.check = check_finer_base;
  m.params = {base, number("finer_alpha", 1.0, 0, 100, "finercam: how much of the nearest classes' logits is subtracted"),
              integer("finer_comparisons", 3, 1, 1000, "finercam: how many classes with the closest logits it compares against")};
  m.uses = [](const Settings& s) { return std::vector<std::string>{s.text("finer_base")}; };
  m.volumes = true;  // as its base method (the plan checks the base too)
  m.compute = [](const Evidence& e, size_t layer) {
    const Settings& s = *e.settings;
    const Target finer = finer_target(*e.target, s.number("finer_alpha"), static_cast<int>(s.integer("finer_comparisons")));
    return e.passes->run_for(find_method(s.text("finer_base")), finer, layer);
  };
  return m;
}
