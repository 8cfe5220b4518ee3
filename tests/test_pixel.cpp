// Pixel-space methods against independent eager-PyTorch references (scripts/make_fixtures.py): plain
// gradients, and guided backprop / deconvnet with the ReLU backward swapped by a Python autograd Function
// on the activation modules (for the shared MobileNetV2, on an eager re-implementation of it).
#include "common.h"

#include "explain/pipeline.h"

#include <torch/csrc/autograd/autograd.h>

#include <map>

namespace lumen::test::pixel_tests {

struct PixelCase {
  nlohmann::json entry;
  std::string model_path, card_path;
};

std::vector<PixelCase> pixel_cases() {
  std::vector<PixelCase> out;
  const auto manifest = read_json(fixture("manifest_pixel.json"));
  for (const auto& c : manifest["cases"]) {
    PixelCase p{c, c["model"], c["card"]};
    if (p.model_path[0] != '/') p.model_path = fixture(p.model_path);
    if (p.card_path[0] != '/') p.card_path = fixture(p.card_path);
    out.push_back(p);
  }
  return out;
}

TEST(Pixel, EveryMethodMatchesEagerReference) {
  auto cases = pixel_cases();
  ASSERT_EQ(cases.size(), 4u);
  std::map<std::string, double> worst_r, worst_rel;
  for (const auto& pc : cases) {
    const auto& c = pc.entry;
    Model model = Model::load(pc.model_path);
    ModelCard card = load_card(pc.card_path);
    Explainer ex(model, card.preprocess);
    std::vector<cv::Mat> images;
    for (const auto& p : c["images"]) images.push_back(read_image(p));
    for (const auto& [key, files] : c["maps"].items()) {
      SCOPED_TRACE(c["name"].get<std::string>() + " " + key);
      ExplainOptions opt;
      opt.methods = {key.substr(0, key.find('/'))};
      if (!c["cam_layer"].is_null()) opt.layers = {c["cam_layer"].get<std::string>()};
      opt.targets = {class_target(c["classes"].get<std::vector<int64_t>>())};
      // "method/variant": the reference's settings are in the manifest beside it.
      if (c["settings"].contains(key))
        for (const auto& [name, value] : c["settings"][key].items()) opt.settings.set(name, value);
      auto result = ex.explain(images, opt);
      for (size_t i = 0; i < images.size(); ++i) {
        const Map& m = result[i].maps.at(0);
        cv::Mat ref = read_npy(fixture(files[i]));
        ASSERT_EQ(m.raw.size(), ref.size());
        double r = pearson(m.raw, ref), rel = max_abs_diff(m.raw, ref) / cv::norm(ref, cv::NORM_INF);
        EXPECT_GE(r, 0.999);
        // Float summation order differs between the eager references and lumen's graph (and with the
        // batch size of extra passes); where a ReLU6 sits on a boundary the gradient jumps, so isolated
        // pixels of multi-pass methods move by up to ~1.5% of the map's max while r stays >= 0.9999.
        EXPECT_LE(rel, 3e-2);
        worst_r.try_emplace(key, 1.0);
        worst_rel.try_emplace(key, 0.0);
        worst_r[key] = std::min(worst_r[key], r);
        worst_rel[key] = std::max(worst_rel[key], rel);
        if (c["completeness_gaps"].contains(key)) {
          double gap = m.extra.at("completeness_gap").get<double>();
          double ref_gap = c["completeness_gaps"][key][i].get<double>();
          EXPECT_NEAR(gap, ref_gap, 0.01 * std::max(1.0, ref_gap)) << "completeness gap differs from the reference's";
        }
      }
    }
  }
  for (const auto& [k, r] : worst_r) std::printf("pixel parity %-36s min r %.6f  max |diff|/max %.2e\n", k.c_str(), r, worst_rel[k]);
}

TEST(Pixel, BackwardRulesChangeTheGradient) {
  Model model = Model::load(fixture("resnet18_traced.pt"));
  Explainer ex(model, load_card(fixture("imagenet_card.json")).preprocess);
  ExplainOptions opt;
  opt.methods = {"saliency", "guided-backprop", "deconvnet"};
  auto r = ex.explain({read_image(shared("images/cat.png"))}, opt)[0].maps;
  ASSERT_EQ(r.size(), 3u);
  EXPECT_GT(max_abs_diff(r[0].raw, r[1].raw), 1e-3 * cv::norm(r[0].raw, cv::NORM_INF));
  EXPECT_GT(max_abs_diff(r[0].raw, r[2].raw), 1e-3 * cv::norm(r[0].raw, cv::NORM_INF));
  EXPECT_GT(max_abs_diff(r[1].raw, r[2].raw), 1e-3 * cv::norm(r[1].raw, cv::NORM_INF));
  EXPECT_EQ(r[1].attribution.channels(), 3);
}

TEST(Pixel, RewriteLeavesPlainForwardAndGradientsBitIdentical) {
  const std::string path = shared("models/mobilenet_v2_imagenet.pt");
  auto original = torch::jit::load(path);
  for (auto p : original.parameters()) p.requires_grad_(false);
  Model model = Model::load(path);
  torch::manual_seed(1);
  auto x0 = torch::randn({2, 3, 224, 224});
  auto plain = [&](const std::function<torch::Tensor(const torch::Tensor&)>& run) {
    auto x = x0.clone().requires_grad_(true);
    auto y = run(x);
    auto g = torch::autograd::grad({y.select(1, 285).sum()}, {x})[0];
    return std::make_pair(y.detach(), g);
  };
  auto reference = plain([&](const torch::Tensor& x) { return original.forward({x}).toTensor(); });
  auto before = plain([&](const torch::Tensor& x) { return model.forward(x).output.toTensor(); });
  // Build and run both rewritten graphs, then the plain one again.
  for (auto rule : {BackwardRule::Guided, BackwardRule::Deconvnet}) {
    auto x = x0.clone().requires_grad_(true);
    auto y = model.forward(x, {}, rule).output.toTensor();
    EXPECT_TRUE(torch::equal(y.detach(), reference.first)) << "a backward rule must not change forward values";
    auto g = torch::autograd::grad({y.select(1, 285).sum()}, {x})[0];
    EXPECT_FALSE(torch::allclose(g, reference.second)) << "the rule must change the gradient";
  }
  auto after = plain([&](const torch::Tensor& x) { return model.forward(x).output.toTensor(); });
  EXPECT_TRUE(torch::equal(before.first, reference.first));
  EXPECT_TRUE(torch::equal(before.second, reference.second));
  EXPECT_TRUE(torch::equal(after.first, reference.first));
  EXPECT_TRUE(torch::equal(after.second, reference.second));
}

TEST(Pixel, ActivationWithoutRuleNamesTheLayer) {
  Model model = Model::load(fixture("gelu_net.pt"));
  Explainer ex(model, load_card(fixture("small_card.json")).preprocess);
  ExplainOptions opt;
  opt.methods = {"guided-backprop"};
  try {
    ex.explain({read_image(shared("images/cat.png"))}, opt);
    FAIL() << "GELU accepted";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("layer 'block"), std::string::npos) << msg;
    EXPECT_NE(msg.find("aten::gelu"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--nonlinearity plain"), std::string::npos) << msg;
  }
  opt.shared.strict_nonlinearities = false;
  auto r = ex.explain({read_image(shared("images/cat.png"))}, opt);
  EXPECT_FALSE(r[0].maps[0].empty);
}

// DeepLIFT's two forms of the rescale rule give the same multipliers: references recorded on a tape
// (one row shared, or one per row) and read by the inputs' own forward, and the pairs side by side in
// one batch. A forward that does not meet the tape's units as recorded (another input size) is caught.
// resnet18: in-place ReLUs after residual sums.
TEST(Pixel, RescaleTapeMatchesThePairedForm) {
  const Model model = Model::load(fixture("resnet18_traced.pt"));
  torch::manual_seed(3);
  const auto x = torch::randn({2, 3, 64, 64});
  const auto paired = [&](const torch::Tensor& references) {
    auto both = torch::cat({x, references.expand_as(x)}).requires_grad_(true);
    const auto y = model.forward(both, {}, BackwardRule::Rescale).output.toTensor();
    return torch::autograd::grad({y.slice(0, 0, 2).select(1, 7).sum()}, {both})[0].slice(0, 0, 2);
  };
  for (const auto& references : {torch::randn({1, 3, 64, 64}), torch::randn({2, 3, 64, 64})}) {
    const auto expected = paired(references);  // (with no tape alive: a live tape is read by every rescale forward)
    RescaleTape tape;
    {
      torch::NoGradGuard no_grad;
      model.forward(references, {}, BackwardRule::Rescale);
    }
    EXPECT_EQ(tape.units(), 17u);  // resnet18's ReLUs, as called
    tape.replay();
    auto input = x.clone().requires_grad_(true);
    const auto y = model.forward(input, {}, BackwardRule::Rescale).output.toTensor();
    ASSERT_TRUE(tape.matched());
    const auto taped = torch::autograd::grad({y.select(1, 7).sum()}, {input})[0];
    EXPECT_GT(expected.abs().max().item<double>(), 0);
    EXPECT_LE((taped - expected).abs().max().item<double>(), 1e-5 * expected.abs().max().item<double>()) << references.size(0);
    // Not the plain gradient: the rule changed something.
    auto plain_input = x.clone().requires_grad_(true);
    const auto plain_y = model.forward(plain_input).output.toTensor();
    const auto plain = torch::autograd::grad({plain_y.select(1, 7).sum()}, {plain_input})[0];
    EXPECT_GT((taped - plain).abs().max().item<double>(), 1e-3 * expected.abs().max().item<double>());
    tape.replay();
    torch::NoGradGuard no_grad;
    model.forward(torch::randn({2, 3, 32, 32}), {}, BackwardRule::Rescale);
    EXPECT_FALSE(tape.matched());
  }
}

// A fixed reference's forward is kept across an explainer's calls (detail::ReferenceCache): the maps of
// a second batch, read from the kept tape, equal a fresh explainer's for DeepLIFT and layer DeepLIFT;
// and the kept entry is what the rule's forward reads: an entry planted for black but taped on another
// reference gives that reference's scores.
TEST(Pixel, DeepLiftKeepsAFixedReferenceAcrossCalls) {
  const Model model = Model::load(fixture("resnet18_traced.pt"));
  Preprocess p;
  p.width = p.height = 64;
  torch::manual_seed(11);
  const auto first = torch::randn({1, 3, 64, 64}), second = torch::randn({2, 3, 64, 64});
  ExplainOptions opt;
  opt.methods = {"deeplift", "layer-deeplift"};
  opt.layers = {"layer3"};
  Explainer kept(model, p);
  kept.explain_tensor(first, opt);
  const auto again = kept.explain_tensor(second, opt);
  const auto fresh = Explainer(model, p).explain_tensor(second, opt);
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_EQ(again[i].maps.size(), 2u);
    for (size_t k = 0; k < 2; ++k) {
      double range = 0;
      cv::minMaxLoc(cv::abs(fresh[i].maps[k].raw), nullptr, &range);
      EXPECT_GT(range, 0);
      EXPECT_LE(max_abs_diff(again[i].maps[k].raw, fresh[i].maps[k].raw), 1e-6 * range) << i << " " << k;
    }
  }
  // The plan's forward with a planted entry: black's key, another reference's tape and capture.
  ExplainOptions alone;
  alone.methods = {"deeplift"};
  const auto plan = detail::make_plan(model, alone, second);
  const auto black = reference_input(second, "black", p, 0, 0).slice(0, 0, 1);
  const auto other = torch::randn({1, 3, 64, 64});
  Capture taped;
  std::vector<torch::Tensor> units;
  {
    RescaleTape tape;
    torch::NoGradGuard no_grad;
    taped = model.forward(other, {}, BackwardRule::Rescale);
    units = tape.recorded();
  }
  detail::ReferenceCache planted;
  planted.keep(std::make_shared<const detail::ReferenceCache::Entry>(detail::ReferenceCache::Entry{black, {}, true, units, taped}));
  ASSERT_TRUE(planted.find(black, {}, true));
  EXPECT_FALSE(planted.find(other, {}, true));
  const auto scores = [&](detail::ReferenceCache* cache) {
    const auto f = detail::run_forward(model, plan, second, p, cache);
    return f.rule_passes.at(BackwardRule::Rescale).reference_output.toTensor();
  };
  torch::Tensor on_other;
  {
    torch::NoGradGuard no_grad;
    on_other = model.forward(other).output.toTensor();
  }
  EXPECT_LE((scores(&planted) - on_other.expand({2, -1})).abs().max().item<double>(), 1e-5);
  EXPECT_GT((scores(nullptr) - on_other.expand({2, -1})).abs().max().item<double>(), 1e-2);
}

// A forward that depends on its input cannot read its reference from a tape: here the black reference
// takes the other branch (two ReLUs, the input's one). DeepLIFT then runs each image beside its
// reference in one batch, where both take the first branch, and its map is that branch's closed form:
// y_c = sum relu(w_c x_c), so with w_c x_c > 0 > w_c x0 the attribution is relu(w_c x_c) - relu(w_c x0)
// = w_c x_c per pixel (multipliers read from a mismatched tape would give w_c (x_c - x0) instead).
TEST(Pixel, DeepLiftWithInputDependentControlFlowPairsItsRows) {
  torch::jit::Module net("Branchy");
  net.register_buffer("w", torch::tensor({0.5f, -1.0f, 2.0f}).view({1, 3, 1, 1}));
  net.define(R"(
def forward(self, x):
    if bool(x.mean() > 0.0):
        return torch.relu(x * self.w).sum(dim=[2, 3])
    return torch.relu(torch.relu(x * self.w + 3.0) - 1.0).sum(dim=[2, 3])
)");
  Preprocess p;
  p.width = p.height = 8;
  p.mean = {127.5f, 127.5f, 127.5f};  // black is -0.5
  Explainer ex(Model::from_module(net, "branchy"), p);
  torch::manual_seed(5);
  const auto x = 1 + torch::rand({2, 3, 8, 8});
  ExplainOptions opt;
  opt.methods = {"deeplift"};
  opt.targets = {class_target({0, 0})};
  const auto r = ex.explain_tensor(x, opt);
  for (int64_t i = 0; i < 2; ++i) {
    const auto expected = (0.5 * x[i][0]).contiguous();
    const cv::Mat want(8, 8, CV_32F, expected.data_ptr<float>());
    EXPECT_LE(max_abs_diff(r[static_cast<size_t>(i)].maps.at(0).raw, want), 1e-5) << i;
  }
}

// Closed forms on a small ReLU network (functional and in-place ReLUs, a tuple output): DeepLIFT's
// rescale rule makes the attributions sum to y(x) - y(x0) exactly, whatever the baseline; LRP with
// epsilon 0 is input x gradient (Ancona et al. 2018), and a large epsilon absorbs relevance. Small
// enough for the sanitizer build.
TEST(Pixel, DeepLiftAndLrpClosedForms) {
  Model model = Model::load(fixture("tuple_out_scripted.pt"));
  Explainer ex(model, load_card(fixture("small_card.json")).preprocess);
  const std::vector<cv::Mat> images{read_image(shared("images/cat.png")), read_image(shared("images/pets.jpg"))};
  ExplainOptions opt;
  opt.methods = {"deeplift"};
  for (const std::string baseline : {"black", "noise", "128"}) {
    opt.settings.set("baseline", baseline);
    for (const auto& r : ex.explain(images, opt)) EXPECT_LT(r.maps.at(0).extra.at("completeness_gap").get<double>(), 1e-4) << baseline;
  }
  // One pair per pass: each image's pair in a pass of its own, under its own class, gives the same maps
  // as the pairs together.
  opt.targets = {class_target({1, 3})};
  const auto together = ex.explain(images, opt);
  opt.shared.rows_per_pass = 2;
  const auto apart = ex.explain(images, opt);
  for (size_t i = 0; i < images.size(); ++i) {
    EXPECT_LE(max_abs_diff(apart[i].maps[0].raw, together[i].maps[0].raw), 1e-5 * cv::norm(together[i].maps[0].raw, cv::NORM_INF));
    EXPECT_LT(apart[i].maps[0].extra.at("completeness_gap").get<double>(), 1e-4);
    EXPECT_EQ(apart[i].maps[0].cls, i == 0 ? 1 : 3);
  }
  opt.shared.rows_per_pass = 0;
  opt.targets.clear();
  opt.settings = Settings();
  opt.methods = {"lrp", "input-x-gradient"};
  opt.settings.set("lrp_epsilon", 0.0);
  for (const auto& r : ex.explain(images, opt)) {
    const double scale = cv::norm(r.maps.at(1).raw, cv::NORM_INF);
    EXPECT_GT(scale, 0);
    EXPECT_LE(max_abs_diff(r.maps.at(0).raw, r.maps.at(1).raw), 1e-4 * scale);
  }
  // At a layer too: layer LRP with epsilon 0 is the layer's gradient x activation. Asked for with the
  // input methods, one rule pass serves both LRPs; asked for alone, the rule pass is the only forward.
  opt.methods = {"lrp", "input-x-gradient", "layer-lrp", "layer-gradient-x-activation"};
  opt.layers = {"conv1"};
  const auto all_four = ex.explain(images, opt);
  opt.methods = {"layer-lrp"};
  const auto alone = ex.explain(images, opt);
  for (size_t i = 0; i < images.size(); ++i) {
    const auto& maps = all_four[i].maps;
    ASSERT_EQ(maps.size(), 4u);
    const double scale = cv::norm(maps.at(3).raw, cv::NORM_INF);
    EXPECT_GT(scale, 0);
    EXPECT_EQ(maps.at(2).method, "layer-lrp");
    EXPECT_LE(max_abs_diff(maps.at(2).raw, maps.at(3).raw), 1e-4 * scale);
    EXPECT_LE(max_abs_diff(alone[i].maps.at(0).raw, maps.at(2).raw), 1e-5 * scale);
    EXPECT_LE(max_abs_diff(maps.at(0).raw, maps.at(1).raw), 1e-4 * cv::norm(maps.at(1).raw, cv::NORM_INF));
  }
  opt.methods = {"lrp", "layer-lrp"};
  opt.settings.set("lrp_epsilon", 10.0);
  for (const auto& r : ex.explain(images, opt))
    for (const auto& m : r.maps)
      EXPECT_LT(std::abs(m.extra.at("relevance_sum").get<double>()), std::abs(m.extra.at("f_input").get<double>())) << m.method;
  opt.layers.clear();
  // The gamma rule with gamma 0 is the epsilon rule (rho(w) = w), through the other graph; a positive
  // gamma changes the map.
  opt.settings = Settings();
  opt.methods = {"lrp"};
  const auto epsilon = ex.explain(images, opt);
  opt.settings.set("lrp_rule", "gamma");
  opt.settings.set("lrp_gamma", 0.0);
  const auto gamma0 = ex.explain(images, opt);
  opt.settings.set("lrp_gamma", 1.0);
  const auto gamma1 = ex.explain(images, opt);
  for (size_t i = 0; i < images.size(); ++i) {
    const double scale = cv::norm(epsilon[i].maps[0].raw, cv::NORM_INF);
    EXPECT_LE(max_abs_diff(gamma0[i].maps[0].raw, epsilon[i].maps[0].raw), 1e-4 * scale);
    EXPECT_GT(max_abs_diff(gamma1[i].maps[0].raw, epsilon[i].maps[0].raw), 1e-2 * scale);
    EXPECT_EQ(gamma1[i].maps[0].extra.at("lrp_rules"), "gamma;gamma=1");
  }
  // A rule or a layer that does not exist is refused before anything runs.
  opt.settings = Settings();
  opt.settings.set("lrp_layer_rules", "0=sideways");
  EXPECT_THROW(ex.explain(images, opt), Error);
  opt.settings.set("lrp_layer_rules", "no.such.layer=gamma");
  EXPECT_THROW(ex.explain(images, opt), Error);
}

TEST(Pixel, IntegratedGradientsCompletenessImprovesWithSteps) {
  ModelCard card = load_card(shared("models/mobilenet_v2_imagenet.json"));
  Model model = Model::load(shared("models/mobilenet_v2_imagenet.pt"));
  Explainer ex(model, card.preprocess);
  ExplainOptions opt;
  opt.methods = {"integrated-gradients"};
  auto gap = [&](const std::string& image, int steps) {
    opt.settings.set("steps", steps);
    return ex.explain({read_image(shared("images/" + image))}, opt)[0].maps[0].extra["completeness_gap"].get<double>();
  };
  double parrot64 = gap("parrot.jpg", 64), cat16 = gap("cat.png", 16), cat48 = gap("cat.png", 48);
  std::printf("IG completeness gap (Gauss-Legendre): parrot 64 steps %.4f; cat 16 steps %.4f, 48 steps %.4f\n", parrot64, cat16,
              cat48);
  EXPECT_LT(parrot64, 0.01);
  // The shared model's ReLU6 kinks make some paths rough (cat.png needs ~256 steps for 1%); the gap
  // must still shrink as the rule gets finer.
  EXPECT_LT(cat48, cat16);
}

}  // namespace lumen::test::pixel_tests
