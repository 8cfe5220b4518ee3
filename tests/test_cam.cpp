// CAM-family and perturbation methods against independent references (scripts/make_fixtures.py), and
// the planner's pass counts.
#include "common.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace lumen::test::cam_tests {

// A case of manifest_cam.json: its model (a fixture's name or a path) with its card, and its images.
Explainer case_explainer(const nlohmann::json& c) {
  std::string model_path = c["model"], card_path = c["card"];
  if (model_path[0] != '/') model_path = fixture(model_path);
  if (card_path[0] != '/') card_path = fixture(card_path);
  return Explainer(Model::load(model_path), load_card(card_path).preprocess);
}

std::vector<cv::Mat> case_images(const nlohmann::json& c) {
  std::vector<cv::Mat> images;
  for (const auto& p : c["images"]) images.push_back(read_image(p));
  return images;
}

TEST(Cam, EveryMethodMatchesReference) {
  const auto cases = read_json(fixture("manifest_cam.json"))["cases"];
  ASSERT_EQ(cases.size(), 4u);
  std::map<std::string, double> worst_r, worst_rel;
  for (const auto& c : cases) {
    Explainer ex = case_explainer(c);
    const std::vector<cv::Mat> images = case_images(c);
    for (const auto& [key, files] : c["maps"].items()) {
      SCOPED_TRACE(c["name"].get<std::string>() + " " + key);
      // "method:counterfactual": the reference negated the gradients; lumen negates the target.
      const std::string method = key.substr(0, key.find(':'));
      ExplainOptions opt;
      opt.methods = {method};
      opt.layers = {c["layer"].get<std::string>()};
      opt.targets = {class_target(c["classes"].get<std::vector<int64_t>>(), Score::Logit, key != method)};
      auto result = ex.explain(images, opt);
      for (size_t i = 0; i < images.size(); ++i) {
        cv::Mat ref = read_npy(fixture(files[i]));
        const cv::Mat& got = result[i].maps.at(0).raw;
        ASSERT_EQ(got.size(), ref.size());
        double r = pearson(got, ref), rel = max_abs_diff(got, ref) / std::max(1e-12, cv::norm(ref, cv::NORM_INF));
        EXPECT_GE(r, 0.999);
        EXPECT_LE(rel, 1e-3);
        worst_r.try_emplace(key, 1.0);
        worst_rel.try_emplace(key, 0.0);
        worst_r[key] = std::min(worst_r[key], r);
        worst_rel[key] = std::max(worst_rel[key], rel);
      }
    }
  }
  for (const auto& [k, r] : worst_r) std::printf("cam parity %-20s min r %.7f  max |diff|/max %.2e\n", k.c_str(), r, worst_rel[k]);
}

// DFF beyond its map: every concept's map against scikit-learn's NMF from the same documented start,
// each concept's top-2 classes through the head, and the concepts picture (one colour per concept).
TEST(Cam, DeepFeatureFactorizationMatchesScikitLearn) {
  const auto cases = read_json(fixture("manifest_cam.json"))["cases"];
  int checked = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    Explainer ex = case_explainer(c);
    const std::vector<cv::Mat> images = case_images(c);
    ExplainOptions opt;
    opt.methods = {"dff"};
    opt.layers = {c["layer"].get<std::string>()};
    opt.targets = {class_target(c["classes"].get<std::vector<int64_t>>())};
    const auto result = ex.explain(images, opt);
    for (size_t i = 0; i < images.size(); ++i) {
      const Map& m = result[i].maps.at(0);
      ASSERT_EQ(m.parts.size(), 5u);
      const cv::Mat ref = read_npy(fixture(c["dff"]["parts"][i]));
      const int h = m.raw.rows;
      ASSERT_EQ(ref.rows, 5 * h);
      for (int j = 0; j < 5; ++j) {
        const cv::Mat want = ref.rowRange(j * h, (j + 1) * h);
        EXPECT_GE(pearson(m.parts[j].raw, want), 0.999) << "concept " << j;
        EXPECT_LE(max_abs_diff(m.parts[j].raw, want), 1e-3 * cv::norm(want, cv::NORM_INF)) << "concept " << j;
        ASSERT_EQ(m.parts[j].top.size(), 2u);
        for (int r = 0; r < 2; ++r) EXPECT_EQ(m.parts[j].top[r].cls, c["dff"]["top"][i][j][r].get<int64_t>()) << "concept " << j;
      }
      // The map is the chosen concept's, and the concept scores highest for the class.
      const int chosen = m.extra.at("concept");
      EXPECT_LE(max_abs_diff(m.raw, m.parts[chosen].raw), 0.0);
      const auto ys = m.extra.at("concept_target_values").get<std::vector<double>>();
      EXPECT_EQ(std::max_element(ys.begin(), ys.end()) - ys.begin(), chosen);
      EXPECT_LT(m.extra.at("nmf_relative_error").get<double>(), 1.0);
      // The picture: at each concept's own peak (where it is the strongest), the colour blended over the
      // image is that concept's, and the five colours are far apart; a legend strip lies below.
      RenderOptions ro;
      const cv::Mat pic = parts_picture(images[i], m, result[i], ro);
      EXPECT_GT(pic.rows, images[i].rows + 5 * 12);
      std::vector<cv::Vec3f> seen;
      for (int j = 0; j < 5; ++j) {
        cv::Point peak;
        cv::minMaxLoc(m.parts[j].normalized, nullptr, nullptr, nullptr, &peak);
        bool strongest = true;
        for (int o = 0; o < 5; ++o)
          if (o != j && m.parts[o].normalized.at<float>(peak) >= 1.0f) strongest = false;
        if (!strongest) continue;
        const int x0 = std::max(0, (pic.cols - images[i].cols) / 2);
        const cv::Vec3b p = pic.at<cv::Vec3b>(peak.y, peak.x + x0), im = images[i].at<cv::Vec3b>(peak);
        cv::Vec3f colour;
        for (int ch = 0; ch < 3; ++ch) colour[ch] = (p[ch] - (1 - ro.alpha) * im[ch]) / ro.alpha;
        for (const auto& other : seen) EXPECT_GT(cv::norm(colour - other), 60.0);
        seen.push_back(colour);
      }
      EXPECT_GE(seen.size(), 3u);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6);
}

// --eigen-smooth, --aug-smooth, FullGrad, and --compat pytorch-grad-cam against the fixture script's
// references (raw maps, or the final scaled map at the input size for the compat pipeline).
TEST(Cam, SmoothingFullGradAndCompatMatchReferences) {
  const auto cases = read_json(fixture("manifest_variants.json"))["cases"];
  ASSERT_GE(cases.size(), 22u);
  for (const auto& c : cases) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    Model model = Model::load(fixture(c["model"]));
    ModelCard card = load_card(fixture(c["card"]));
    Explainer ex(model, card.preprocess);
    std::vector<cv::Mat> images;
    for (const auto& p : c["images"]) images.push_back(read_image(p));
    ExplainOptions opt;
    opt.methods = {c["method"].get<std::string>()};
    const auto& o = c["options"];
    if (!c["layer"].is_null()) opt.layers = {c["layer"].get<std::string>()};
    if (o.contains("layers")) opt.layers = o["layers"].get<std::vector<std::string>>();
    opt.aggregate = o.value("aggregate", "");
    opt.targets = {class_target(c["classes"].get<std::vector<int64_t>>(), parse_score(o.value("score", "logit")))};
    const bool eigen = o.value("eigen_smooth", false);
    if (eigen) opt.settings.set("eigen_smooth", true);
    opt.shared.aug_smooth = o.value("aug_smooth", false);
    opt.shared.compat = o.value("compat", false) ? Compat::PytorchGradCam : Compat::Papers;
    const nlohmann::json settings = o.value("settings", nlohmann::json::object());  // kept: items() refers to it
    for (const auto& [key, value] : settings.items()) opt.settings.set(key, value);
    // Maps at the model's input size, where pytorch-grad-cam's pipeline leaves them.
    auto result = ex.explain_tensor(to_batch(images, card.preprocess), opt);
    const bool normalized = c["compare"] == "normalized";
    for (size_t i = 0; i < images.size(); ++i) {
      cv::Mat ref = read_npy(fixture(c["files"][i]));
      // With --aggregate, the map compared is the layers' combination (the last one, layer "a+b+c").
      const Map& m = opt.aggregate.empty() ? result[i].maps.at(0) : result[i].maps.back();
      const cv::Mat& got = normalized ? m.normalized : m.raw;
      ASSERT_EQ(got.size(), ref.size());
      double r = pearson(got, ref), rel = max_abs_diff(got, ref) / std::max(1e-12, cv::norm(ref, cv::NORM_INF));
      std::printf("variant %-28s image %zu  r %.7f  max |diff|/max %.2e\n", name.c_str(), i, r, rel);
      EXPECT_GE(r, 0.999);
      EXPECT_LE(rel, normalized ? 1e-4 : 1e-3);
      EXPECT_FALSE(m.empty);
      EXPECT_EQ(m.extra.value("eigen_smooth", false), eigen) << name;
    }
  }
}

TEST(Cam, OcclusionMatchesBruteForceAndRiseMatchesReference) {
  const auto spec = read_json(fixture("perturbation.json"));
  Model model = Model::load(fixture(spec["model"]));
  Explainer ex(model, load_card(fixture(spec["card"])).preprocess);
  ExplainOptions opt;
  opt.classes = {spec["class"].get<int64_t>()};
  opt.methods = {"occlusion"};
  opt.settings.set("patch", spec["occlusion"]["patch"]).set("stride", spec["occlusion"]["stride"]).set("fill", spec["occlusion"]["fill"]);
  opt.shared.rows_per_pass = 7;  // a batch size that does not divide the positions
  cv::Mat img = read_image(spec["image"]);
  auto occ = ex.explain({img}, opt)[0].maps[0].raw;
  cv::Mat occ_ref = read_npy(fixture("perturb_occlusion.npy"));
  EXPECT_LE(max_abs_diff(occ, occ_ref), 1e-5 * std::max(1.0, cv::norm(occ_ref, cv::NORM_INF)));
  // Left to lumen, the rows per pass come from memory: 8 by default, fewer under a 1 MiB budget; the
  // map is the reference either way.
  opt.shared.rows_per_pass = 0;
  for (int64_t budget : {int64_t{0}, int64_t{1}}) {
    opt.shared.memory_budget_mib = budget;
    const Map m = ex.explain({img}, opt)[0].maps[0];
    const int rows = m.extra.at("rows_per_pass").get<int>();
    if (budget == 0) EXPECT_EQ(rows, 8);
    else EXPECT_LT(rows, 8);
    EXPECT_LE(max_abs_diff(m.raw, occ_ref), 1e-5 * std::max(1.0, cv::norm(occ_ref, cv::NORM_INF))) << budget;
  }
  opt.shared.memory_budget_mib = 0;
  opt.methods = {"rise"};
  opt.settings = Settings();
  opt.settings.set("masks", spec["rise"]["masks"]).set("cells", spec["rise"]["cells"]).set("keep", spec["rise"]["keep"]).set("seed", spec["rise"]["seed"]);
  auto rise = ex.explain({img}, opt)[0].maps[0].raw;
  cv::Mat rise_ref = read_npy(fixture("perturb_rise.npy"));
  double r = pearson(rise, rise_ref);
  std::printf("occlusion max |diff| %.2e; RISE Pearson r %.6f\n", max_abs_diff(occ, occ_ref), r);
  EXPECT_GE(r, 0.99);
}

// Feature ablation, Shapley value sampling, KernelSHAP and LIME against the fixture's references: the
// same groups (a grid; SLIC through OpenCV's Python binding), the same seeded draws, and scikit-learn's
// LinearRegression / Lasso for the fits.
TEST(Cam, FeatureGroupMethodsMatchReferences) {
  const auto spec = read_json(fixture("feature_groups.json"));
  Model model = Model::load(fixture(spec["model"]));
  Explainer ex(model, load_card(fixture(spec["card"])).preprocess);
  const cv::Mat img = read_image(spec["image"]);
  for (const auto& [kind, maps] : spec["maps"].items()) {
    for (const auto& [method, file] : maps.items()) {
      SCOPED_TRACE(kind + " " + method);
      ExplainOptions opt;
      opt.classes = {spec["class"].get<int64_t>()};
      opt.methods = {method};
      for (const auto& [name, value] : spec["settings"].items())
        if ((method == "lime" || name != "lime_alpha") && (method != "feature-ablation" || name != "samples")) opt.settings.set(name, value);
      opt.settings.set("features", kind);
      opt.shared.rows_per_pass = 5;  // chunks that do not divide the coalitions
      const Map m = ex.explain({img}, opt)[0].maps.at(0);
      const cv::Mat ref = read_npy(fixture(file));
      EXPECT_EQ(m.extra.at("groups").get<int64_t>(), spec["groups"][kind].get<int64_t>());
      const double scale = cv::norm(ref, cv::NORM_INF);
      // LIME's lasso stops on scikit-learn's tolerance (a duality gap) and lumen's on the step size:
      // both within 1e-4 of the optimum's scale.
      const double tolerance = method == "lime" ? 2e-2 : 1e-4;
      EXPECT_LE(max_abs_diff(m.raw, ref), tolerance * scale);
      std::printf("%-5s %-17s max |diff|/max %.2e\n", kind.c_str(), method.c_str(), max_abs_diff(m.raw, ref) / scale);
      if (method == "shapley-sampling" || method == "kernel-shap") {  // efficiency: the groups share y(x) - y(baseline)
        EXPECT_LE(m.extra.at("completeness_gap").get<double>(), 1e-5);
      }
    }
  }
  // A grid of one square compares nothing: refused, not a constant map.
  ExplainOptions one;
  one.classes = {spec["class"].get<int64_t>()};
  one.methods = {"feature-ablation"};
  one.settings.set("patch", 64);
  try {
    ex.explain({img}, one);
    ADD_FAILURE() << "a single feature group was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("makes one feature group"), std::string::npos) << e.what();
  }
}

// Captum's layer methods at the small model's conv1 against their formulas through a forward hook.
TEST(Cam, LayerMethodsMatchReferences) {
  const auto spec = read_json(fixture("layer_methods.json"));
  Model model = Model::load(fixture(spec["model"]));
  Explainer ex(model, load_card(fixture(spec["card"])).preprocess);
  std::vector<cv::Mat> images;
  for (const auto& p : spec["images"]) images.push_back(read_image(p));
  for (const auto& [method, file] : spec["maps"].items()) {
    SCOPED_TRACE(method);
    ExplainOptions opt;
    opt.targets = {class_target(spec["classes"].get<std::vector<int64_t>>())};
    opt.methods = {method};
    opt.layers = {spec["layer"].get<std::string>()};
    if (spec["settings"].contains(method))
      for (const auto& [name, value] : spec["settings"][method].items()) opt.settings.set(name, value);
    opt.shared.rows_per_pass = 5;
    const auto result = ex.explain(images, opt);
    for (size_t i = 0; i < images.size(); ++i) {
      const Map& m = result[i].maps.at(0);
      const cv::Mat expected = read_npy(fixture(file[i]));
      const double r = pearson(m.raw, expected), rel = max_abs_diff(m.raw, expected) / cv::norm(expected, cv::NORM_INF);
      EXPECT_GE(r, 0.9999);
      EXPECT_LE(rel, 1e-3);
      std::printf("%-28s image %zu r %.6f max |diff|/max %.2e\n", method.c_str(), i, r, rel);
    }
  }
}

// A forward row of resnet18 at 224x224 is taken as its input (3 x 224 x 224 floats) plus three of its
// largest layer output (the stem's 64 x 112 x 112 floats): 10,235,904 bytes.
TEST(Cam, RowsPerPassFollowTheMemoryBudget) {
  Model model = Model::load(fixture("resnet18_traced.pt"));
  Explainer ex(model, load_card(fixture("imagenet_card.json")).preprocess);
  ExplainOptions opt;
  opt.classes = {1};
  opt.methods = {"occlusion"};
  opt.settings.set("patch", 112).set("stride", 112);
  const cv::Mat img = read_image(shared("images/cat.png"));
  const double row = 3 * 224 * 224 * 4 + 3 * 64 * 112 * 112 * 4;
  cv::Mat first;
  for (int64_t budget : {1, 25, 60, 100000}) {
    opt.shared.memory_budget_mib = budget;
    const Map m = ex.explain({img}, opt)[0].maps[0];
    const int want = static_cast<int>(std::clamp(std::floor(static_cast<double>(budget) * 1024 * 1024 / row), 1.0, 8.0));
    EXPECT_EQ(m.extra.at("rows_per_pass").get<int>(), want) << budget << " MiB";
    if (first.empty()) first = m.raw;
    EXPECT_LE(max_abs_diff(m.raw, first), 1e-5 * cv::norm(first, cv::NORM_INF)) << budget << " MiB";
  }
  opt.shared.rows_per_pass = 3;  // a user's choice is kept
  EXPECT_EQ(ex.explain({img}, opt)[0].maps[0].extra.at("rows_per_pass").get<int>(), 3);
}

// The Grad-CAM paper's claim: with global average pooling + one linear layer, alpha^c_k = w^c_k / Z, so
// Grad-CAM is CAM divided by Z = h * w. And CAM is refused where that head is absent.
// RandomCAM's weights are one draw that every image shares: an image's map is the same alone as in a
// batch of four (which the explainer splits into row groups when it has two threads), and another seed
// gives another map.
TEST(Cam, RandomCamGivesAnImageTheSameMapInAnyBatch) {
  ModelCard card = load_card(shared("models/mobilenet_v2_imagenet.json"));
  Explainer ex(Model::load(shared("models/mobilenet_v2_imagenet.pt")), card.preprocess);
  std::vector<cv::Mat> images;
  for (const char* name : {"cat.png", "pets.jpg", "owl.jpg", "bird.png"}) images.push_back(read_image(shared(std::string("images/") + name)));
  ExplainOptions opt;
  opt.methods = {"random"};
  opt.layers = {"features.18"};
  const auto together = ex.explain(images, opt);
  for (size_t i = 0; i < images.size(); ++i) {
    const auto alone = ex.explain({images[i]}, opt);
    const cv::Mat& a = alone[0].maps.at(0).raw;
    const cv::Mat& b = together[i].maps.at(0).raw;
    EXPECT_LE(max_abs_diff(a, b), 1e-5 * std::max(1e-12, cv::norm(a, cv::NORM_INF))) << i;
  }
  opt.settings.set("seed", 1);
  const auto other = ex.explain({images[1]}, opt);
  EXPECT_GT(max_abs_diff(other[0].maps.at(0).raw, together[1].maps.at(0).raw), 1e-3 * cv::norm(together[1].maps.at(0).raw, cv::NORM_INF));
}

// ExplainOptions::boxes off: no map has a box, and the maps and statistics are those with boxes.
TEST(Cam, BoxesOffLeaveTheMapsAsTheyAre) {
  ModelCard card = load_card(shared("models/mobilenet_v2_imagenet.json"));
  Explainer ex(Model::load(shared("models/mobilenet_v2_imagenet.pt")), card.preprocess);
  const std::vector<cv::Mat> images{read_image(shared("images/pets.jpg")), read_image(shared("images/cat.png"))};
  ExplainOptions opt;
  opt.methods = {"gradcam", "layercam"};
  opt.layers = {"features.18"};
  const auto with = ex.explain(images, opt);
  opt.boxes = false;
  const auto without = ex.explain(images, opt);
  for (size_t i = 0; i < images.size(); ++i)
    for (size_t j = 0; j < with[i].maps.size(); ++j) {
      const Map &a = with[i].maps[j], &b = without[i].maps.at(j);
      EXPECT_TRUE(a.box.valid);
      EXPECT_FALSE(b.box.valid);
      EXPECT_EQ(max_abs_diff(a.normalized, b.normalized), 0.0);
      EXPECT_EQ(a.stats.peak_x, b.stats.peak_x);
      EXPECT_EQ(a.stats.max, b.stats.max);
    }
}

TEST(Cam, CamIsGradCamTimesPositionsAndNeedsAPoolingHead) {
  ModelCard card = load_card(shared("models/mobilenet_v2_imagenet.json"));
  Model model = Model::load(shared("models/mobilenet_v2_imagenet.pt"));
  Explainer ex(model, card.preprocess);
  ExplainOptions opt;
  opt.layers = {"features.18"};
  opt.methods = {"cam", "gradcam"};
  opt.top_k = 2;
  for (bool cf : {false, true}) {
    opt.counterfactual = cf;
    auto r = ex.explain({read_image(shared("images/pets.jpg"))}, opt);
    ASSERT_EQ(r[0].maps.size(), 4u);
    for (size_t t = 0; t < 2; ++t) {
      const cv::Mat& camm = r[0].maps[2 * t].raw;
      const cv::Mat& grad = r[0].maps[2 * t + 1].raw;
      ASSERT_EQ(r[0].maps[2 * t].method, "cam");
      const double z = camm.rows * camm.cols;
      EXPECT_LE(max_abs_diff(camm, grad * z), 1e-4 * cv::norm(camm, cv::NORM_INF)) << "target " << t << " cf " << cf;
      EXPECT_GT(cv::norm(camm, cv::NORM_INF), 0);
    }
  }
  opt.methods = {"cam"};
  opt.counterfactual = false;
  opt.layers = {"features.17"};  // 320 channels: no linear layer takes them
  EXPECT_THROW(ex.explain({read_image(shared("images/cat.png"))}, opt), Error);
  Model resnet = Model::load(fixture("resnet18_traced.pt"));
  Explainer rx(resnet, load_card(fixture("imagenet_card.json")).preprocess);
  opt.layers = {"layer4.1.conv2"};  // 512 channels like fc's input, but batch norm and a residual follow
  try {
    rx.explain({read_image(shared("images/cat.png"))}, opt);
    ADD_FAILURE() << "CAM accepted a layer that is not followed by pooling + linear";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no global-average-pooling + linear head"), std::string::npos) << e.what();
  }
  opt.layers = {"layer4"};
  opt.score = Score::Probability;
  EXPECT_THROW(rx.explain({read_image(shared("images/cat.png"))}, opt), Error);
}

// Class-difference maps on pets.jpg, the shared photo with two ImageNet classes: an Italian greyhound
// (left) and a Boston bull (right), boxes drawn by hand on the 512x430 image. Each class's contrastive
// map puts a smaller share of its mass on the other dog than its plain map does. (Measured, not
// asserted, for saliency: absolute gradients are not class-specific enough for differences to help —
// 0.275 -> 0.244 for the greyhound but 0.292 -> 0.304 for the Boston bull.)
TEST(Cam, ContrastiveMapsMoveMassOffTheOtherObject) {
  ModelCard card = load_card(shared("models/mobilenet_v2_imagenet.json"));
  Model model = Model::load(shared("models/mobilenet_v2_imagenet.pt"));
  Explainer ex(model, card.preprocess);
  const cv::Rect greyhound(105, 10, 155, 285), bull(345, 165, 150, 200);
  ExplainOptions opt;
  opt.layers = {"features.18"};
  opt.methods = {"gradcam", "gradcam++", "layercam"};
  opt.classes = {171, 195};
  opt.contrast = true;
  auto r = ex.explain({read_image(shared("images/pets.jpg"))}, opt)[0];
  auto share = [](const Map& m, const cv::Rect& box) { return cv::sum(m.normalized(box))[0] / std::max(1e-12, cv::sum(m.normalized)[0]); };
  int checked = 0;
  for (const auto& plain : r.maps) {
    if (plain.contrastive) continue;
    for (const auto& c : r.maps) {
      if (!c.contrastive || c.method != plain.method || c.layer != plain.layer || c.cls != plain.cls) continue;
      const cv::Rect other = plain.cls == 171 ? bull : greyhound;
      double before = share(plain, other), after = share(c, other);
      std::printf("%-10s class %3lld: mass on the other dog %.3f plain -> %.3f contrastive\n", plain.method.c_str(),
                  static_cast<long long>(plain.cls), before, after);
      EXPECT_LT(after, before) << plain.method << " " << plain.cls;
      EXPECT_EQ(c.extra["contrast_against"].size(), 1u);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6);
  opt.classes = {171};
  EXPECT_THROW(ex.explain({read_image(shared("images/pets.jpg"))}, opt), Error);  // nothing to contrast with
}

// Multi-layer aggregation: the combined map is the stated function of the per-layer maps, each
// upsampled to the image and min-max normalised.
TEST(Cam, MultiLayerAggregation) {
  ModelCard card = load_card(shared("models/mobilenet_v2_imagenet.json"));
  Model model = Model::load(shared("models/mobilenet_v2_imagenet.pt"));
  Explainer ex(model, card.preprocess);
  ExplainOptions opt;
  opt.layers = {"features.18", "features.14", "features.10"};
  opt.methods = {"gradcam", "layercam"};
  auto img = read_image(shared("images/bird.png"));
  auto norm = [](const cv::Mat& m) {
    double lo, hi;
    cv::minMaxLoc(m, &lo, &hi);
    return cv::Mat((m - lo) / (hi - lo));
  };
  for (const std::string mode : {"mean", "max", "product", "weighted"}) {
    SCOPED_TRACE(mode);
    opt.aggregate = mode;
    opt.layer_weights = {3, 1, 0};
    int64_t before = model.passes();
    auto r = ex.explain({img}, opt)[0];
    EXPECT_EQ(model.passes() - before, 1) << "one forward serves every layer";
    ASSERT_EQ(r.maps.size(), 8u);
    for (size_t m = 0; m < 2; ++m) {
      const Map& agg = r.maps[6 + m];
      EXPECT_EQ(agg.layer, "features.18+features.14+features.10");
      EXPECT_EQ(agg.method, r.maps[3 * m].method);
      cv::Mat a = norm(r.maps[3 * m].upsampled), b = norm(r.maps[3 * m + 1].upsampled), c = norm(r.maps[3 * m + 2].upsampled);
      cv::Mat want = mode == "mean" ? cv::Mat((a + b + c) / 3)
                     : mode == "max" ? cv::Mat(cv::max(cv::max(a, b), c))
                     : mode == "product" ? cv::Mat(a.mul(b).mul(c))
                                         : cv::Mat(a * 0.75 + b * 0.25);
      EXPECT_LE(max_abs_diff(agg.raw, want), 1e-5);
    }
  }
  opt.aggregate = "weighted";
  opt.layer_weights = {1, 2};
  EXPECT_THROW(ex.explain({img}, opt), Error);
}

TEST(Planner, MethodsShareOneForwardAndOneBackward) {
  ModelCard card = load_card(shared("models/mobilenet_v2_imagenet.json"));
  Model model = Model::load(shared("models/mobilenet_v2_imagenet.pt"));
  Explainer ex(model, card.preprocess);
  auto img = read_image(shared("images/cat.png"));
  ExplainOptions opt;
  opt.layers = {"features.18", "features.14"};
  opt.methods = {"gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigengradcam", "gradcam-elementwise", "eigencam"};
  int64_t before = model.passes();
  auto r = ex.explain({img}, opt);
  EXPECT_EQ(model.passes() - before, 1) << "eight CAM methods at two layers need one forward";
  EXPECT_EQ(r[0].maps.size(), 16u);
  // Plain input gradients come from the same forward and backward.
  opt.methods.push_back("saliency");
  opt.methods.push_back("input-x-gradient");
  before = model.passes();
  ex.explain({img}, opt);
  EXPECT_EQ(model.passes() - before, 1);
  // A backward rule needs its own graph: one more forward.
  opt.methods.push_back("guided-backprop");
  opt.methods.push_back("guided-gradcam");
  before = model.passes();
  ex.explain({img}, opt);
  EXPECT_EQ(model.passes() - before, 2);
  // Guided backprop alone: the rule's graph also gives the predictions.
  opt.methods = {"guided-backprop"};
  before = model.passes();
  ex.explain({img}, opt);
  EXPECT_EQ(model.passes() - before, 1);
}

}  // namespace lumen::test::cam_tests
