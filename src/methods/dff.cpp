// Deep Feature Factorization (Collins et al., ECCV 2018; pytorch-grad-cam's DeepFeatureFactorization):
// the layer's activations of one image, channels x positions, shifted per channel by its minimum
// (as pytorch-grad-cam does, so that layers without a ReLU factorise too), are factorised by NMF into
// k concepts: X - offset ≈ W H. Column j of W (+ offset) is concept j's channel vector, row j of H its
// map over the positions. Each concept's classes are the network run on from the layer with every
// position set to the concept vector: for a head that pools first (MobileNetV2's features.18, ResNet's
// layer4) that is pytorch-grad-cam's classifier(concept), and deeper heads work as well.
//
// lumen's map for a target is the map of the concept that scores highest for it (y through the head);
// every concept's map and classes are in the Map's parts, drawn in one picture, one colour per concept.
// One factorisation per image: an image's concepts do not depend on the batch it ran in.
#include "methods/kit/cam.h"
#include "methods/kit/nmf.h"

LUMEN_METHOD(dff) {
  Method m("dff", "Collins et al. 2018, Deep Feature Factorization", Family::Cam, Space::Layer, ExtraPasses::Forward);
  m.params = {integer("concepts", 5, 1, 64, "dff: how many concepts (NMF components)"),
              integer("nmf_iterations", 200, 1, 100000, "dff: at most this many multiplicative updates"),
              number("nmf_tol", 1e-4, 0, 1, "dff: stop when an update's error drop is below this share of the first error (0: never)"),
              seed_param()};
  m.volumes = true;  // positions only as samples of the channel vectors
  m.compute = [](const Evidence& e, size_t layer) {
    const auto& a = e.layers[layer].activations;
    const auto& s = *e.settings;
    const int64_t n = a.size(0), c = a.size(1), h = a.size(2), w = a.size(3), k = s.integer("concepts");
    Result r;
    std::vector<torch::Tensor> maps, parts, scores;
    for (int64_t i = 0; i < n; ++i) {
      auto x = a[i].reshape({c, h * w}).to(torch::kFloat64);
      const auto offset = x.amin(1, true);
      const auto f = nmf(x - offset, k, s.integer("nmf_iterations"), s.number("nmf_tol"), static_cast<uint64_t>(s.integer("seed")));
      const auto concepts = (f.w + offset).t().to(a.scalar_type());  // [k,C]
      const auto filled = concepts.view({k, c, 1, 1}).expand({k, c, h, w}).contiguous();
      const auto scored = e.passes->scores_from_layer(layer, filled, i);  // y and the classes, from one run of the head
      const auto& y = scored.target;
      const int64_t chosen = y.argmax().item<int64_t>();
      const auto part_maps = f.h.reshape({k, h, w}).to(a.scalar_type());
      maps.push_back(part_maps[chosen]);
      parts.push_back(part_maps);
      scores.push_back(scored.classes);
      std::vector<double> ys(static_cast<size_t>(k));
      for (int64_t j = 0; j < k; ++j) ys[static_cast<size_t>(j)] = y[j].item<double>();
      r.extra.push_back({{"concept", chosen}, {"concept_target_values", ys}, {"nmf_iterations", f.iterations},
                         {"nmf_relative_error", f.relative_error}});
    }
    r.maps = torch::stack(maps);
    r.parts = torch::stack(parts);
    if (scores.front().defined()) r.part_scores = torch::stack(scores);
    return r;
  };
  return m;
}
