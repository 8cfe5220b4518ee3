// RandomCAM, the sanity baseline of pytorch-grad-cam (its RandomCAM): channel weights drawn uniformly
// from [-1, 1), map = ReLU(sum_k w_k A_k). It uses the layer but not what the model learned about the
// class: a map any faithfulness metric must rank below the real methods. The weights come from a CPU
// generator seeded with --seed, one [C] draw shared by every image (torch.rand(1, C, generator=...) *
// 2 - 1 in Python gives the same numbers). pytorch-grad-cam draws per image from numpy's global state;
// one draw per image here made an image's map depend on which images shared its batch, and on how the
// explainer split the batch into row groups.
#include "methods/kit/cam.h"

#include <ATen/CPUGeneratorImpl.h>

LUMEN_METHOD(random_cam) {
  Method m = weighted_cam("random", "pytorch-grad-cam's RandomCAM (a baseline)", Needs{}, [](const LayerTensors& t, const Evidence& e, size_t) {
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(e.settings->integer("seed")));
    const auto& a = t.activations;
    return (at::rand({1, a.size(1)}, gen, a.options()) * 2 - 1).expand({a.size(0), -1}).unsqueeze(-1).unsqueeze(-1);
  });
  m.params.push_back(seed_param());
  return m;
}
