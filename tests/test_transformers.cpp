// Vision transformers and hybrids: layouts read from shapes, every CAM method against pytorch-grad-cam's
// formulas behind a hand-written reshape_transform (scripts/fixtures/transformers.py), traced, scripted
// and ONNX.
#include "common.h"

namespace lumen::test::transformers_tests {

std::string q(const std::string& s) { return "'" + s + "'"; }

TEST(Layout, ReadFromShapes) {
  struct Case {
    std::vector<int64_t> shape;
    int64_t h, w, patch;
    TokenLayout::Kind kind;
    int64_t grid_h, grid_w, prefix;
  };
  using K = TokenLayout::Kind;
  const std::vector<Case> cases{
      {{2, 197, 768}, 224, 224, 16, K::Tokens, 14, 14, 1},       // ViT-B/16: class token + 14x14
      {{2, 197, 768}, 224, 224, 0, K::Tokens, 14, 14, 1},        // the same without a patch embedding to read
      {{2, 201, 64}, 224, 224, 16, K::Tokens, 14, 14, 5},        // class token + 4 registers
      {{2, 198, 384}, 224, 224, 16, K::Tokens, 14, 14, 2},       // DeiT: class + distillation tokens
      {{2, 196, 64}, 224, 224, 16, K::Tokens, 14, 14, 0},        // no prefix
      {{2, 281, 64}, 224, 320, 16, K::Tokens, 14, 20, 1},        // a non-square input
      {{2, 50, 768}, 224, 224, 32, K::Tokens, 7, 7, 1},          // ViT-B/32
      {{2, 50, 768}, 224, 224, 0, K::Tokens, 7, 7, 1},           // the same read from the shape alone
      {{2, 7, 7, 768}, 224, 224, 4, K::ChannelsLast, 7, 7, 0},   // Swin, channels last
      {{2, 7, 10, 96}, 224, 320, 4, K::ChannelsLast, 7, 10, 0},  // Swin on 224x320
      {{2, 1280, 7, 7}, 224, 224, 0, K::ChannelsFirst, 7, 7, 0}, // a CNN
      {{2, 64, 111, 111}, 224, 224, 0, K::ChannelsFirst, 111, 111, 0},  // unpadded convolutions: no stride gives 111
      {{2, 7, 7, 7}, 224, 224, 0, K::ChannelsFirst, 7, 7, 0},    // both readings fit: PyTorch's convention
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::PrintToString(c.shape));
    const auto layout = infer_layout(c.shape, c.h, c.w, c.patch);
    EXPECT_EQ(layout.kind, c.kind);
    EXPECT_EQ(layout.grid_h, c.grid_h);
    EXPECT_EQ(layout.grid_w, c.grid_w);
    EXPECT_EQ(layout.prefix, c.prefix);
  }
  // Shapes that admit more than one reading, or none, are refused with what was seen.
  auto refused = [](const std::vector<int64_t>& shape, int64_t patch, const std::string& needle) {
    try {
      infer_layout(shape, 224, 224, patch);
      ADD_FAILURE() << ::testing::PrintToString(shape) << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  refused({2, 9, 64}, 0, "can be read as 0 prefix + 3x3 or 5 prefix + 2x2");
  refused({2, 300, 64}, 0, "is no token grid of the 224x224 input");
  refused({2, 1000}, 0, "neither a [N,C,h,w] or [N,h,w,C] map, a [N,C,d,h,w] volume nor a [N,tokens,C] sequence");
  // Given explicitly, a layout is checked against the shape.
  EXPECT_EQ(infer_layout({2, 50, 768}, 224, 224, 0, parse_tokens("grid=6x6")).prefix, 14);
  EXPECT_EQ(infer_layout({2, 9, 64}, 224, 224, 0, parse_tokens("prefix=5")).grid_h, 2);
  EXPECT_EQ(infer_layout({2, 7, 7, 7}, 224, 224, 0, parse_tokens("channels=last")).kind, K::ChannelsLast);
  try {
    infer_layout({2, 197, 768}, 224, 224, 16, parse_tokens("grid=14x14,prefix=2"));
    ADD_FAILURE() << "a layout that does not fit was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("2 + 14x14 tokens is not the layer's 197"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_tokens("grid=14"), Error);
  EXPECT_THROW(parse_tokens("prefix=-1"), Error);
  EXPECT_THROW(parse_tokens("shape=3"), Error);
}

TEST(Layout, SpatialAndBackAreInverse) {
  torch::manual_seed(0);
  const auto tokens = torch::randn({2, 1 + 4 * 6, 8});
  TokenLayout layout;
  layout.kind = TokenLayout::Kind::Tokens;
  layout.grid_h = 4, layout.grid_w = 6, layout.prefix = 1;
  const auto spatial = to_spatial(tokens, layout);
  ASSERT_EQ(spatial.sizes(), (std::vector<int64_t>{2, 8, 4, 6}));
  EXPECT_TRUE(torch::equal(spatial[1].select(1, 2).select(1, 3), tokens[1][1 + 2 * 6 + 3]));  // token (2,3) is position (2,3)
  EXPECT_TRUE(torch::equal(from_spatial(spatial, layout, tokens), tokens));
}

// Every CAM method at a transformer layer equals the CAM formulas applied after pytorch-grad-cam's
// reshape_transform, for each file kind of each model.
TEST(Transformers, CamMethodsMatchReshapeTransformReferences) {
  const auto cases = read_json(fixture("manifest_transformers.json"))["cases"];
  ASSERT_GE(cases.size(), 7u);
  size_t compared = 0;
  for (const auto& c : cases) {
    for (const auto& [kind, file] : c["files"].items()) {
      SCOPED_TRACE(c["name"].get<std::string>() + " " + kind);
      Model model = Model::load(fixture(file));
      Explainer ex(model, load_card(fixture(c["card"])).preprocess);
      std::vector<cv::Mat> images;
      for (const auto& p : c["images"]) images.push_back(read_image(p));
      ExplainOptions opt;
      opt.layers = {c["layer"].get<std::string>()};
      opt.targets = {class_target(c["classes"].get<std::vector<int64_t>>())};
      for (const auto& [method, files] : c["maps"].items()) opt.methods.push_back(method);
      opt.methods.erase(opt.methods.begin());  // the default gradcam; the list above has it
      const auto result = ex.explain(images, opt);
      for (size_t i = 0; i < images.size(); ++i) {
        for (const auto& m : result[i].maps) {
          cv::Mat ref = read_npy(fixture(c["maps"][m.method][i]));
          ASSERT_EQ(m.raw.size(), ref.size()) << m.method;
          const double r = pearson(m.raw, ref), rel = max_abs_diff(m.raw, ref) / std::max(1e-12, cv::norm(ref, cv::NORM_INF));
          EXPECT_GE(r, 0.999) << m.method;
          EXPECT_LE(rel, kind == "onnx" ? 1e-2 : 1e-3) << m.method;
          ++compared;
        }
      }
    }
  }
  std::printf("%zu transformer CAM maps compared\n", compared);
}

// Attention rollout and transformer attribution equal the two papers' formulas applied to attention
// recomputed in PyTorch from the module weights (every block's softmax written out, gradients from
// autograd), for TorchScript (traced, scripted, traced through the fused inference kernel) and ONNX.
TEST(Transformers, AttentionMethodsMatchExplicitSoftmaxReferences) {
  const auto cases = read_json(fixture("manifest_transformers.json"))["cases"];
  size_t compared = 0;
  for (const auto& c : cases) {
    if (!c.contains("attention")) continue;
    for (const auto& [kind, file] : c["files"].items()) {
      Model model = Model::load(fixture(file));
      Explainer ex(model, load_card(fixture(c["card"])).preprocess);
      std::vector<cv::Mat> images;
      for (const auto& p : c["images"]) images.push_back(read_image(p));
      for (const auto& [key, files] : c["attention"].items()) {
        SCOPED_TRACE(c["name"].get<std::string>() + " " + kind + " " + key);
        ExplainOptions opt;
        opt.targets = {class_target(c["classes"].get<std::vector<int64_t>>())};
        const auto cut = key.find('/');
        opt.methods = {key.substr(0, cut)};
        if (cut != std::string::npos) {  // "attention-rollout/max/0.5": head fusion and discard ratio
          const auto second = key.find('/', cut + 1);
          opt.settings.set_text("head_fusion", key.substr(cut + 1, second - cut - 1));
          opt.settings.set_text("discard_ratio", key.substr(second + 1));
        }
        const auto result = ex.explain(images, opt);
        for (size_t i = 0; i < images.size(); ++i) {
          ASSERT_EQ(result[i].maps.size(), 1u);
          const auto& m = result[i].maps[0];
          cv::Mat ref = read_npy(fixture(files[i]));
          ASSERT_EQ(m.raw.size(), ref.size());
          EXPECT_GE(pearson(m.raw, ref), 0.999);
          // Discarding is a threshold: entries within rounding of it may fall on either side.
          const double tolerance = kind == "onnx" ? 1e-2 : cut != std::string::npos ? 5e-3 : 1e-3;
          EXPECT_LE(max_abs_diff(m.raw, ref) / std::max(1e-12, cv::norm(ref, cv::NORM_INF)), tolerance);
          EXPECT_EQ(m.extra.value("blocks", 0), 4);
          ++compared;
        }
      }
    }
  }
  EXPECT_GE(compared, 36u);  // 2 models x 3-4 files x 3 variants x 2 images
  std::printf("%zu attention maps compared\n", compared);
}

// Rollout reads attention alone, so every class gets its map; transformer attribution weights it by
// each class's gradient. (`lumen demo --vit` measures the same on trained two-object scenes.)
TEST(Transformers, TransformerAttributionIsClassSpecificRolloutIsNot) {
  Model model = Model::load(fixture("tf_vit_traced.pt"));
  Explainer ex(model, load_card(fixture("imagenet_card.json")).preprocess);
  ExplainOptions opt;
  opt.methods = {"attention-rollout", "transformer-attribution"};
  opt.classes = {2, 7};
  const auto result = ex.explain({read_image(shared("images/cat.png"))}, opt);
  std::map<std::string, std::vector<cv::Mat>> by_method;
  for (const auto& m : result[0].maps) by_method[m.method].push_back(m.raw);
  ASSERT_EQ(by_method["attention-rollout"].size(), 2u);
  ASSERT_EQ(by_method["transformer-attribution"].size(), 2u);
  EXPECT_EQ(max_abs_diff(by_method["attention-rollout"][0], by_method["attention-rollout"][1]), 0.0);
  EXPECT_LT(pearson(by_method["transformer-attribution"][0], by_method["transformer-attribution"][1]), 0.99);
}

// Models whose attention the methods cannot read are refused by name, before any map is written.
TEST(Transformers, AttentionMethodsRefuseModelsWithoutGlobalAttention) {
  const std::string card = q(fixture("imagenet_card.json")), img = q(shared("images/cat.png"));
  auto cnn = run_cli("explain --model " + q(shared("models/mobilenet_v2_imagenet.pt")) + " --card " +
                     q(shared("models/mobilenet_v2_imagenet.json")) + " --image " + img +
                     " --method attention-rollout --out " + q(temp_dir("tf-none")));
  EXPECT_EQ(cnn.code, 2);
  EXPECT_NE(cnn.err.find("has none"), std::string::npos) << cnn.err;
  const std::string out = temp_dir("tf-swin");
  auto swin = run_cli("explain --model " + q(fixture("tf_swin_traced.pt")) + " --card " + card + " --image " + img +
                      " --method transformer-attribution --out " + q(out));
  EXPECT_EQ(swin.code, 2);
  EXPECT_NE(swin.err.find("windowed"), std::string::npos) << swin.err;
  EXPECT_FALSE(std::filesystem::exists(out + "/run.json"));
}

TEST(Transformers, CliStatesTheLayoutAndRefusesOneThatDoesNotFit) {
  const std::string model = q(fixture("tf_vit_traced.pt")), card = q(fixture("imagenet_card.json"));
  const std::string out = temp_dir("tf-cli");
  auto r = run_cli("explain --model " + model + " --card " + card + " --image " + q(shared("images/cat.png")) +
                   " --layer encoder.layers.encoder_layer_3.ln_1 --method gradcam --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("read as 1 prefix token + 14x14 grid of tokens"), std::string::npos) << r.err;
  EXPECT_EQ(read_json(out + "/run.json")["images"][0]["maps"][0]["extra"]["layout"], "1 prefix token + 14x14 grid of tokens");
  auto bad = run_cli("explain --model " + model + " --card " + card + " --image " + q(shared("images/cat.png")) +
                     " --layer encoder.layers.encoder_layer_3.ln_1 --tokens grid=14x14,prefix=2 --out " + q(out + "/bad"));
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("2 + 14x14 tokens is not the layer's 197"), std::string::npos) << bad.err;
  auto layers = run_cli("layers " + model);
  ASSERT_EQ(layers.code, 0) << layers.err;
  EXPECT_NE(layers.out.find("1x197x64                      1 prefix token + 14x14 grid of tokens"), std::string::npos) << layers.out;
}

}  // namespace lumen::test::transformers_tests
