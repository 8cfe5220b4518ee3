// Grad-CAM parity with an independent eager-PyTorch reference (scripts/make_fixtures.py): torchvision
// resnet18 / vgg11 / mobilenet_v2 with seeded random weights, traced and scripted, several layers (nested,
// in-place-ReLU'd, inside scripted if-branches), batch 1 and 3, positive and counterfactual; the shared
// ImageNet MobileNetV2 on the shared photos; a small model with a tuple output and functional ReLUs.
#include "common.h"

#include <map>
#include <memory>

namespace lumen::test::parity_tests {

struct Worst {
  double r = 1.0, norm_diff = 0.0, raw_rel = 0.0;
  int maps = 0, empty = 0;
};

TEST(Parity, GradCamMatchesEagerReference) {
  auto manifest = read_json(fixture("manifest_gradcam.json"));
  ASSERT_GE(manifest["cases"].size(), 40u);
  std::map<std::string, std::unique_ptr<Model>> models;
  Worst worst;
  for (const auto& c : manifest["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    std::string model_path = c["model"], card_path = c["card"];
    if (model_path[0] != '/') model_path = fixture(model_path);
    if (card_path[0] != '/') card_path = fixture(card_path);
    auto& model = models[model_path];
    if (!model) model = std::make_unique<Model>(Model::load(model_path));
    ModelCard card = load_card(card_path);
    Explainer explainer(*model, card.preprocess);
    std::vector<cv::Mat> images;
    for (const auto& p : c["images"]) images.push_back(read_image(p));
    ExplainOptions opt;
    opt.layers = {c["layer"].get<std::string>()};
    opt.targets = {class_target(c["classes"].get<std::vector<int64_t>>(), Score::Logit, c["counterfactual"].get<bool>())};
    auto result = explainer.explain(images, opt);
    ASSERT_EQ(result.size(), images.size());
    for (size_t i = 0; i < images.size(); ++i) {
      const Map& m = result[i].maps.at(0);
      cv::Mat raw_ref = read_npy(fixture(c["raw"][i]));
      cv::Mat norm_ref = read_npy(fixture(c["normalised"][i]));
      ASSERT_EQ(m.raw.size(), raw_ref.size());
      ASSERT_EQ(m.normalized.size(), norm_ref.size());
      double scale = std::max(1e-6, cv::norm(raw_ref, cv::NORM_INF));
      double raw_rel = max_abs_diff(m.raw, raw_ref) / scale;
      EXPECT_LE(raw_rel, 1e-4) << "raw map differs (relative to its max)";
      worst.raw_rel = std::max(worst.raw_rel, raw_rel);
      ++worst.maps;
      if (c["empty"][i].get<bool>()) {
        EXPECT_TRUE(m.empty) << "the reference map is empty; lumen must say so";
        ++worst.empty;
        continue;
      }
      ASSERT_FALSE(m.empty);
      double r = pearson(m.normalized, norm_ref), d = max_abs_diff(m.normalized, norm_ref);
      EXPECT_GE(r, 0.999);
      EXPECT_LE(d, 1e-4);
      worst.r = std::min(worst.r, r);
      worst.norm_diff = std::max(worst.norm_diff, d);
    }
  }
  std::printf("parity: %zu cases, %d maps (%d empty in the reference and in lumen): min Pearson r %.7f, max |diff| of "
              "normalised maps %.2e, max |diff|/max of raw maps %.2e\n",
              manifest["cases"].size(), worst.maps, worst.empty, worst.r, worst.norm_diff, worst.raw_rel);
}

}  // namespace lumen::test::parity_tests
