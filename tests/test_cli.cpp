// The command line end to end: outputs, the documented JSON schema, and the bad-input matrix (one clear
// line on stderr, non-zero exit, no partial files).
#include "common.h"

#include <opencv2/imgcodecs.hpp>

namespace lumen::test::cli_tests {

namespace fs = std::filesystem;

std::string q(const std::string& s) { return "'" + s + "'"; }

const std::string kModel = "--model " + q(LUMEN_SHARED_DIR "/models/mobilenet_v2_imagenet.pt") + " --card " +
                           q(LUMEN_SHARED_DIR "/models/mobilenet_v2_imagenet.json");

size_t count_files(const std::string& dir) {
  if (!fs::exists(dir)) return 0;
  size_t n = 0;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it) n += it->is_regular_file();
  return n;
}

void expect_clean_failure(const CliResult& r, const std::string& needle, const std::string& out_dir) {
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.err.rfind("lumen: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.err;
  EXPECT_EQ(count_files(out_dir), 0u) << "partial files left in " << out_dir;
}

TEST(Cli, VersionIsTheSameEverywhere) {
  EXPECT_STREQ(version(), LUMEN_VERSION_STRING);
  auto v = run_cli("--version");
  ASSERT_EQ(v.code, 0) << v.err;
  EXPECT_EQ(v.out.rfind(std::string("lumen ") + version() + " (LibTorch 1.", 0), 0u) << v.out;
  EXPECT_NE(v.out.find(", OpenCV 4."), std::string::npos) << v.out;
  const std::string out = temp_dir("version");
  auto r = run_cli("explain " + kModel + " --image " + q(shared("images/cat.png")) + " --layer features.18 --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_json(out + "/run.json")["lumen_version"], version());
}

TEST(Cli, ExplainWritesMapsOverlaysAndValidJson) {
  std::string out = temp_dir("explain");
  auto r = run_cli("explain " + kModel + " --image " + q(shared("images/cat.png")) + " " + q(shared("images/pets.jpg")) +
                   " --layer features.18 --top-k 2 --method gradcam --colormap turbo --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  auto run = read_json(out + "/run.json");
  ASSERT_EQ(run["images"].size(), 2u);
  for (const auto& img : run["images"]) {
    ASSERT_EQ(img["maps"].size(), 2u);
    for (const auto& m : img["maps"]) {
      for (const auto& f : m["files"]) EXPECT_TRUE(fs::exists(out + "/" + f.get<std::string>())) << f;
      ASSERT_TRUE(m["box"].is_array());
      auto box = m["box"].get<std::vector<int>>();
      EXPECT_GE(box[0], 0);
      EXPECT_GE(box[1], 0);
      EXPECT_LT(box[0], box[2]);
      EXPECT_LT(box[1], box[3]);
      EXPECT_LE(box[2], img["width"].get<int>());
      EXPECT_LE(box[3], img["height"].get<int>());
      cv::Mat overlay = cv::imread(out + "/" + m["files"]["overlay"].get<std::string>());
      EXPECT_EQ(overlay.cols, img["width"].get<int>());
      cv::Mat map = read_npy(out + "/" + m["files"]["map"].get<std::string>());
      EXPECT_EQ(map.rows, img["height"].get<int>());
      EXPECT_TRUE(cv::checkRange(map, true, nullptr, 0.0, 1.0 + 1e-6));
    }
  }
  EXPECT_EQ(run["images"][1]["maps"][0]["class"], 171);
  // The schema in docs/ is the contract; check it with an independent validator.
  std::string cmd = std::string(LUMEN_PYTHON) +
                    " -c \"import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))\" " +
                    q(out + "/run.json") + " " + q(LUMEN_SOURCE_DIR "/docs/explain.schema.json");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << "run.json does not validate against docs/explain.schema.json";
  // No staging folder left behind.
  for (const auto& e : fs::directory_iterator(out)) EXPECT_EQ(e.path().filename().string().rfind(".lumen-staging", 0), std::string::npos);
}

TEST(Cli, ChosenClassAndCounterfactual) {
  std::string out = temp_dir("class");
  auto r = run_cli("explain " + kModel + " --image " + q(shared("images/pets.jpg")) + " --class 195 --counterfactual --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  auto m = read_json(out + "/run.json")["images"][0]["maps"][0];
  EXPECT_EQ(m["class"], 195);
  EXPECT_EQ(m["counterfactual"], true);
  EXPECT_LT(m["target_value"].get<double>(), 0.0) << "the counterfactual target is the negated logit";
  // Files are named by the class id; the rank (or "class 195") is in run.json.
  EXPECT_TRUE(fs::exists(out + "/pets.gradcam.features.18.195.cf.overlay.png"));
  EXPECT_EQ(m["target"], "class 195");
}

TEST(Cli, PixelMethodsWriteAttributions) {
  std::string out = temp_dir("pixel");
  auto r = run_cli("explain " + kModel + " --image " + q(shared("images/bird.png")) +
                   " --method saliency,guided-gradcam,integrated-gradients --steps 8 --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  auto maps = read_json(out + "/run.json")["images"][0]["maps"];
  ASSERT_EQ(maps.size(), 3u);
  EXPECT_EQ(maps[0]["layer"], "input");
  EXPECT_EQ(maps[1]["layer"], "features.18");
  EXPECT_TRUE(maps[2]["extra"].contains("completeness_gap"));
  for (const auto& m : maps) {
    EXPECT_TRUE(fs::exists(out + "/" + m["files"]["rgb"].get<std::string>()));
    cv::Mat attr = read_npy(out + "/" + m["files"]["attribution"].get<std::string>());
    EXPECT_EQ(attr.channels(), 3);
    EXPECT_EQ(attr.rows, 224);
  }
  std::string cmd = std::string(LUMEN_PYTHON) +
                    " -c \"import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))\" " +
                    q(out + "/run.json") + " " + q(LUMEN_SOURCE_DIR "/docs/explain.schema.json");
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

TEST(Cli, LayersCommandListsPathsTypesShapes) {
  auto r = run_cli("layers " + q(shared("models/mobilenet_v2_imagenet.pt")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("features.18 "), std::string::npos);
  EXPECT_NE(r.out.find("1x1280x7x7"), std::string::npos);
  EXPECT_NE(r.out.find("features.17.depthwise.conv"), std::string::npos);
  auto j = run_cli("layers --json --input-size 64 96 " + q(fixture("resnet18_scripted.pt")));
  ASSERT_EQ(j.code, 0) << j.err;
  auto layers = nlohmann::json::parse(j.out);
  bool found = false;
  for (const auto& l : layers)
    if (l["path"] == "layer4") found = l["shape"] == nlohmann::json({1, 512, 2, 3});
  EXPECT_TRUE(found) << j.out;
}

struct BadCase {
  std::string name, args, needle;
};

// The target language: a head of a nested dict/tuple output, one step of a captioner's [N,T,V] output,
// a whole teacher-forced caption, segmentation and embedding similarity (a tiny encoder and the shared
// MobileNetV2's pooled features), each against eager Grad-CAM of the same scalar.
TEST(Cli, TargetLanguageMatchesReferences) {
  const auto cases = read_json(fixture("manifest_targets.json"))["cases"];
  ASSERT_EQ(cases.size(), 10u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    std::string out = temp_dir("target");
    // The small models' card and layer, unless the case names its own (the shared MobileNetV2 encoder).
    const std::string card = c.contains("card") ? c["card"].get<std::string>() : fixture("small_card.json");
    std::string args = "explain --model " + q(fixture(c["model"])) + " --card " + q(card) + " --layer " + c.value("layer", std::string("conv2"));
    for (const auto& p : c["images"]) args += " --image " + q(p);
    for (const auto& a : c["args"]) args += " " + q(a);
    auto r = run_cli(args + " --out " + q(out));
    ASSERT_EQ(r.code, 0) << r.err;
    const auto run = read_json(out + "/run.json");
    for (size_t i = 0; i < c["images"].size(); ++i) {
      cv::Mat got = read_npy(out + "/" + run["images"][i]["maps"][0]["files"]["raw"].get<std::string>());
      cv::Mat ref = read_npy(fixture(c["files"][i]));
      ASSERT_EQ(got.size(), ref.size());
      EXPECT_GE(pearson(got, ref), 0.9999);
      EXPECT_LE(max_abs_diff(got, ref), 1e-4 * cv::norm(ref, cv::NORM_INF));
    }
  }
}

// Perturbation methods score each masked copy over the pixels the image itself predicted: the target's
// mask is bound once from the image's output (pytorch-grad-cam's fixed mask), so Score-CAM gives the
// map of that mask given explicitly as a region. Scoring each copy over its own prediction (the
// unbound target, rebuilt here) gives another map, so the comparison can fail.
TEST(Cli, SegmentationScoresPerturbedCopiesOverTheImagesOwnMask) {
  const Model model = Model::load(fixture("tiny_segmenter.pt"));
  const Explainer ex(model, load_card(fixture("small_card.json")).preprocess);
  torch::manual_seed(3);
  const auto batch = torch::randn({2, 3, 32, 32});
  int compared = 0;
  for (int64_t i = 0; i < 2; ++i) {
    const auto x = batch.narrow(0, i, 1);
    torch::Tensor scores;
    {
      torch::NoGradGuard no_grad;
      scores = segmentation_scores()(model.forward(x).output);
    }
    const auto predicted = scores.argmax(1)[0];
    const int64_t cls = predicted.flatten().bincount().argmax().item<int64_t>();  // the class most pixels take
    ExplainOptions bound, region, own;
    bound.methods = region.methods = own.methods = {"scorecam", "gradcam"};
    bound.layers = region.layers = own.layers = {"conv2"};
    bound.targets = {segmentation_target(cls)};
    region.targets = {segmentation_target(cls, (predicted == cls).to(torch::kFloat32))};
    own.targets = {custom_target("seg-own", [cls](const torch::IValue& out) {
      const auto s = segmentation_scores()(out);
      return (s.select(1, cls) * (s.detach().argmax(1) == cls).to(s.scalar_type())).sum({1, 2});
    })};
    const auto a = ex.explain_tensor(x, bound)[0], b = ex.explain_tensor(x, region)[0], c = ex.explain_tensor(x, own)[0];
    ASSERT_EQ(a.maps.size(), 2u);
    for (size_t m = 0; m < 2; ++m) {
      SCOPED_TRACE(a.maps[m].method + " image " + std::to_string(i));
      const double range = cv::norm(b.maps[m].raw, cv::NORM_INF);
      EXPECT_LE(max_abs_diff(a.maps[m].raw, b.maps[m].raw), 1e-5 * range);
      // Grad-CAM differentiates the image's own output: every form of the target agrees there.
      if (a.maps[m].method == "gradcam") {
        EXPECT_LE(max_abs_diff(a.maps[m].raw, c.maps[m].raw), 1e-5 * range);
      }
      if (a.maps[m].method == "scorecam" && max_abs_diff(a.maps[m].raw, c.maps[m].raw) > 1e-3 * range) ++compared;
    }
  }
  EXPECT_GE(compared, 1) << "no image where the masked copies predict other pixels: the test would not see the difference";
}

// Activation maximisation: the printed increase is the curve's, the saved input really scores what
// the curve says (recomputed here), the class is then top-1; a unit's input keeps the norm constraint.
TEST(Cli, VisualizeRaisesTheClassScoreToTop1) {
  const std::string out = temp_dir("visualize");
  auto r = run_cli("visualize " + kModel + " --class 88 --steps 40 --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto curve = read_json(out + "/class-88.curve.json");
  const double initial = curve["initial"], final = curve["final"];
  ASSERT_EQ(curve["scores"].size(), 41u);
  EXPECT_GT(final - initial, 5.0);
  char printed[64];
  std::snprintf(printed, sizeof printed, "(increase %g)", final - initial);
  EXPECT_NE(r.out.find(printed), std::string::npos) << r.out << " lacks " << printed;
  EXPECT_NE(r.out.find("top-1 class of the result: 88 macaw"), std::string::npos) << r.out;
  // Independently: the saved model input, run through the model.
  cv::Mat x = read_npy(out + "/class-88.npy");
  auto t = torch::from_blob(x.data, {x.rows, x.cols, 3}, torch::kFloat32).permute({2, 0, 1}).unsqueeze(0).clone();
  Model model = Model::load(shared("models/mobilenet_v2_imagenet.pt"));
  torch::NoGradGuard no_grad;
  auto logits = model.forward(t).output.toTensor();
  EXPECT_EQ(logits.argmax(1).item<int64_t>(), 88);
  EXPECT_NEAR(logits[0][88].item<double>(), final, 1e-3 * std::abs(final));
  EXPECT_TRUE(std::filesystem::exists(out + "/class-88.png"));

  const std::string unit = temp_dir("visualize-unit");
  r = run_cli("visualize " + kModel + " --layer features.18 --channel 7 --steps 20 --rho 100 --out " + q(unit));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto uc = read_json(unit + "/features.18.channel-7.curve.json");
  EXPECT_GT(uc["final"].get<double>(), uc["initial"].get<double>());
  cv::Mat ux = read_npy(unit + "/features.18.channel-7.npy");
  EXPECT_NEAR(cv::norm(ux), 100.0, 1.0);  // ||x|| = rho (up to the clamp to valid pixels)
  auto bad = run_cli("visualize " + kModel + " --layer features.18 --channel 5000 --steps 2 --out " + q(unit + "/b"));
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("channel 5000 does not exist"), std::string::npos) << bad.err;
}

// The bias audit on a model that learned a shortcut: the demo trains on scenes where most circles carry
// a white corner mark; on held-out scenes the audit must rank the marked ones first (their Grad-CAM
// evidence sits on the mark, not on the circle).
TEST(Cli, AuditRanksSpuriousEvidenceFirst) {
  const std::string dir = temp_dir("audit-demo");
  auto r = run_cli("demo --out " + q(dir) + " --spurious-cue 0.9 --steps 200 --scenes 80 --show 0 --write-dataset");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string out = temp_dir("audit");
  r = run_cli("audit --model " + q(dir + "/shapes_cnn_cue.pt") + " --card " + q(dir + "/card_cue.json") + " --data " +
              q(dir + "/dataset") + " --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  std::cout << r.out;
  const auto doc = read_json(out + "/audit.json");
  size_t cues = 0;
  for (const auto& e : doc["images"]) cues += e["image"].get<std::string>().find("-cue") != std::string::npos;
  ASSERT_GE(cues, 5u);
  size_t cue_first = 0;
  for (size_t i = 0; i < cues; ++i) cue_first += doc["images"][i]["image"].get<std::string>().find("-cue") != std::string::npos;
  std::printf("%zu marked scenes; %zu of the %zu lowest shares on the object are marked\n", cues, cue_first, cues);
  EXPECT_GE(cue_first, cues * 8 / 10);
  for (size_t i = 0; i < 5; ++i) EXPECT_NE(doc["images"][i]["image"].get<std::string>().find("-cue"), std::string::npos) << i;
  EXPECT_TRUE(std::filesystem::exists(out + "/index.html"));
  EXPECT_TRUE(std::filesystem::exists(out + "/flagged"));
}

// Every way to get the command line wrong: one "lumen: error:" line, exit 2, and no folder made.
TEST(Cli, CommandLineErrorsAreOneLineWithExitTwo) {
  const std::string img = q(shared("images/cat.png"));
  const std::string data = q(shared("data/imagenet-loc-dev"));
  const std::vector<BadCase> cases{
      {"no command", "", "a command is required: layers, explain, demo, eval, visualize, audit, merge, bench, serve"},
      {"unknown command", "expalin --image x", "unknown command 'expalin'; did you mean 'explain'?"},
      {"unknown flag", "explain " + kModel + " --image " + img + " --frobnicate 3", "--frobnicate"},
      {"missing required", "explain --image " + img, "--model is required"},
      {"not a number", "explain " + kModel + " --image " + img + " --top-k many", "--top-k"},
      {"out of range", "eval " + kModel + " --data " + data + " --batch 0", "--batch"},
      {"NaN", "explain " + kModel + " --image " + img + " --box-threshold nan", "finite"},
      {"out is a dash (explain)", "explain " + kModel + " --image " + img + " --out -", "not one stream"},
      {"out is a dash (eval)", "eval " + kModel + " --data " + data + " --out -", "not one stream"},
      {"out is a dash (audit)", "audit " + kModel + " --data " + data + " --out -", "not one stream"},
      {"out is a dash (visualize)", "visualize " + kModel + " --class 3 --out -", "not one stream"},
      {"unknown method (bench)", "bench --model " + q(shared("models/mobilenet_v2_imagenet.pt")) + " --method gradcam9", "gradcam9"},
  };
  const std::string cwd = temp_dir("cwd");
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = run_cli_prefixed("cd " + q(cwd) + " && ", c.args);
    EXPECT_EQ(r.code, 2);
    expect_clean_failure(r, c.needle, cwd);
  }
}

TEST(Cli, BadInputMatrix) {
  const std::string img = q(shared("images/cat.png"));
  const std::string file = temp_dir("afile") + "/plain";
  std::ofstream(file) << "x";
  // A 9000x9000 PNG (81 megapixels) is over lumen's limit.
  const std::string huge = temp_dir("huge") + "/huge.png";
  cv::imwrite(huge, cv::Mat::zeros(9000, 9000, CV_8U));
  // An embedding of the wrong length for the tiny encoder (16 values), and one that is all zero.
  const std::string short_embedding = temp_dir("emb") + "/short.npy", zero_embedding = temp_dir("emb0") + "/zero.npy";
  std::ofstream(short_embedding, std::ios::binary) << encode_npy(cv::Mat(1, 7, CV_32F, cv::Scalar(1)));
  std::ofstream(zero_embedding, std::ios::binary) << encode_npy(cv::Mat::zeros(1, 16, CV_32F));
  const std::string encoder = "--model " + q(fixture("tiny_encoder.pt")) + " --card " + q(fixture("small_card.json")) + " --layer conv2";
  const std::vector<BadCase> cases{
      {"missing image", kModel + " --image /nonexistent/cat.png", "image not found: /nonexistent/cat.png"},
      {"similarity without references", encoder + " --task similarity --image " + img, "--task similarity needs --reference"},
      {"reference without similarity", kModel + " --reference " + img + " --image " + img, "--reference belongs to --task similarity"},
      {"similarity with a class", encoder + " --task similarity --reference " + img + " --class 3 --image " + img, "--task similarity explains the cosine similarity of each image's embedding to the references; it takes no --class"},
      {"missing reference", encoder + " --task similarity --reference /nonexistent.png --image " + img, "reference not found: /nonexistent.png"},
      {"embedding of the wrong length", encoder + " --task similarity --reference " + q(short_embedding) + " --image " + img,
       "the reference embedding has 7 values, the model's embedding 16"},
      {"zero embedding", encoder + " --task similarity --reference " + q(zero_embedding) + " --image " + img, "the reference embedding is all zero"},
      {"corrupt image", kModel + " --image " + q(fixture("truncated.png")), "is truncated"},
      {"non-image file", kModel + " --image " + q(fixture("not_an_image.png")), "not_an_image.png"},
      {"huge image", kModel + " --image " + q(huge), "over lumen's limit"},
      {"not TorchScript", "--model " + q(fixture("not_a_model.pt")) + " --layer x --image " + img, "is not a valid TorchScript archive"},
      {"missing model", "--model /nonexistent.pt --layer x --image " + img, "model file not found"},
      {"unknown layer", kModel + " --layer features.81 --image " + img, "features.18, "},
      {"class out of range", kModel + " --class 1000 --image " + img, "class index 1000 out of range"},
      {"negative class", kModel + " --class -3 --image " + img, "class index -3 out of range"},
      {"layer neither map nor tokens", kModel + " --layer classifier --image " + img, "[1,1000] is neither a [N,C,h,w] or [N,h,w,C] map"},
      {"unknown method", kModel + " --method gradcam9 --image " + img, "unknown method 'gradcam9'"},
      {"missing output key", "--model " + q(fixture("two_heads.pt")) + " --card " + q(fixture("small_card.json")) +
                                 " --layer conv2 --output nope --image " + img, "has no key 'nope' (keys: heads, feature)"},
      {"token out of range", "--model " + q(fixture("tiny_captioner.pt")) + " --card " + q(fixture("small_card.json")) +
                                 " --layer conv2 --token 9 --class 1 --image " + img, "token position 9 out of range"},
      {"eigen-smooth without a CAM", kModel + " --method saliency --eigen-smooth --image " + img, "--eigen-smooth is a setting of"},
      {"fullgrad without biases", "--model " + q(fixture("no_bias_net.pt")) + " --card " + q(fixture("small_card.json")) +
                                     " --method fullgrad --image " + img, "fullgrad needs layers with biases"},
      {"unwritable output", kModel + " --image " + img + " --out " + q(file + "/out"), "cannot create output directory"},
      {"bad card", "--model " + q(shared("models/mobilenet_v2_imagenet.pt")) + " --card " + q(fixture("not_a_model.pt")) +
                       " --image " + img,
       "not valid JSON"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string out = temp_dir("bad");
    auto r = run_cli("explain " + c.args + " --out " + q(out + "/o"));
    if (c.name == "unwritable output") r = run_cli("explain " + c.args);
    expect_clean_failure(r, c.needle, out);
  }
}

// A bad method setting is refused before anything is loaded or run: the model path below does not
// exist, so an error about the setting (not the model) shows the check came first. One case per family.
TEST(Cli, BadSettingsAreRefusedBeforeAnythingRuns) {
  const std::string img = q(shared("images/cat.png"));
  const std::vector<BadCase> cases{
      {"IG steps", "--method integrated-gradients --steps 0", "--steps must be an integer from 1"},
      {"IG trapezoid", "--method integrated-gradients --integration trapezoid --steps 1", "--steps of at least 2"},
      {"IG baseline", "--method integrated-gradients --baseline /nonexistent.png", "--baseline '/nonexistent.png'"},
      {"occlusion patch", "--method occlusion --patch 0", "--patch must be an integer from 1"},
      {"occlusion fill", "--method occlusion --fill 300", "--fill must be a pixel value from 0 to 255"},
      {"RISE keep", "--method rise --keep 1.5", "--keep must be a number from 0 (exclusive) to 1"},
      {"RISE keep NaN", "--method rise --keep nan", "--keep must be a finite number"},
      {"SmoothGrad noise", "--method smoothgrad --noise -1", "--noise must be a number from 0 to 10"},
      {"SmoothGrad base", "--method smoothgrad --smooth-base gradcam", "--smooth-base 'gradcam' is not a method with an input attribution"},
      {"SmoothGrad type", "--method smoothgrad --smooth-type median", "--smooth-type must be one of smoothgrad, smoothgrad-sq, vargrad"},
      {"CAM eigen-smooth", "--method saliency --eigen-smooth", "--eigen-smooth is a setting of"},
      {"FEM k", "--method fem --fem-k -2", "--fem-k must be a number from 0 to 10"},
      {"FinerCAM base", "--method finercam --finer-base scorecam", "--finer-base 'scorecam' is not a gradient CAM without extra passes"},
      {"FinerCAM alpha NaN", "--method finercam --finer-alpha nan", "--finer-alpha must be a finite number"},
      {"segmentation class", "--task segmentation", "--task segmentation needs --class: the classes whose pixels are explained"},
      {"segmentation region", "--task segmentation --class 1 --region 5,5,2,2", "--region must be x0,y0,x1,y1 with x0 < x1"},
      {"segmentation mask", "--task segmentation --class 1 --mask /nonexistent.png", "mask not found: /nonexistent.png"},
      {"region without segmentation", "--region 1,1,5,5", "--region belongs to --task segmentation"},
      {"setting of another method", "--method gradcam --steps 8", "--steps is a setting of internal-influence, layer-conductance, integrated-gradients; none of"},
      {"not a number", "--method rise --masks many", "--masks must be an integer"},
      {"rows per pass", "--method rise --rows-per-pass -1", "--rows-per-pass must be from 0"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string out = temp_dir("bad-setting");
    auto r = run_cli("explain --model /nonexistent.pt --image " + img + " " + c.args + " --out " + q(out + "/o"));
    EXPECT_EQ(r.code, 2);
    expect_clean_failure(r, c.needle, out);
  }
}

// The same check in the library: a bad setting costs no forward pass.
TEST(Cli, LibraryRefusesBadSettingsBeforeTheForward) {
  Model model = Model::load(shared("models/mobilenet_v2_imagenet.pt"));
  Explainer ex(model, load_card(shared("models/mobilenet_v2_imagenet.json")).preprocess);
  ExplainOptions opt;
  opt.methods = {"integrated-gradients"};
  opt.settings.set("steps", 0);
  const int64_t before = model.passes();
  try {
    ex.explain({read_image(shared("images/cat.png"))}, opt);
    ADD_FAILURE() << "--steps 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--steps"), std::string::npos) << e.what();
  }
  opt.settings = Settings();
  opt.settings.set("stpes", 8);
  EXPECT_THROW(ex.explain({read_image(shared("images/cat.png"))}, opt), Error);  // an unknown name
  EXPECT_EQ(model.passes(), before);
}

TEST(Cli, ZeroGradientIsReportedNotHidden) {
  std::string out = temp_dir("zero");
  auto r = run_cli("explain --model " + q(fixture("zero_head.pt")) + " --card " + q(fixture("small_card.json")) +
                   " --layer conv --class 0 --image " + q(shared("images/cat.png")) + " --out " + q(out));
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(r.err.find("empty"), std::string::npos) << r.err;
  auto m = read_json(out + "/run.json")["images"][0]["maps"][0];
  EXPECT_EQ(m["empty"], true);
  EXPECT_TRUE(m["box"].is_null());
  cv::Mat map = read_npy(out + "/" + m["files"]["map"].get<std::string>());
  EXPECT_TRUE(cv::checkRange(map)) << "NaN written to disk";
  auto ok = run_cli("explain --model " + q(fixture("zero_head.pt")) + " --card " + q(fixture("small_card.json")) +
                    " --layer conv --class 0 --allow-empty --image " + q(shared("images/cat.png")) + " --out " + q(out));
  EXPECT_EQ(ok.code, 0) << ok.err;
}

TEST(Cli, DemoTrainsExplainsAndScores) {
  std::string out = temp_dir("demo");
  auto r = run_cli("demo --steps 120 --scenes 40 --show 4 --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out + "/shapes_cnn.pt"));
  EXPECT_TRUE(fs::exists(out + "/index.html"));
  EXPECT_TRUE(fs::exists(out + "/scene3.overlay.png"));
  EXPECT_NE(r.out.find("Grad-CAM box hits the object"), std::string::npos) << r.out;
  // The saved model is an ordinary TorchScript file for every other command.
  auto layers = run_cli("layers --card " + q(out + "/card.json") + " " + q(out + "/shapes_cnn.pt"));
  ASSERT_EQ(layers.code, 0) << layers.err;
  EXPECT_NE(layers.out.find("features.block4"), std::string::npos);
  EXPECT_NE(layers.out.find("1x64x16x16"), std::string::npos);
}

TEST(Cli, DemoVitExplainsWithAttentionMethodsAndItsLayersShowTokens) {
  std::string out = temp_dir("demo_vit");
  auto r = run_cli("demo --vit --steps 40 --scenes 6 --show 2 --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* m : {"attention-rollout", "transformer-attribution", "Grad-CAM"})
    EXPECT_NE(r.out.find(std::string("demo: ") + m + " box hits"), std::string::npos) << r.out;
  for (const char* m : {"attention-rollout", "transformer-attribution", "gradcam"}) {
    EXPECT_TRUE(fs::exists(out + "/scene1." + m + ".overlay.png")) << m;
    EXPECT_NE(r.out.find(std::string("two-object scenes: ") + m + "'s maps"), std::string::npos) << r.out;
  }
  auto layers = run_cli("layers --card " + q(out + "/card_vit.json") + " " + q(out + "/shapes_vit.pt"));
  ASSERT_EQ(layers.code, 0) << layers.err;
  EXPECT_NE(layers.out.find("1 prefix token + 8x8 grid of tokens"), std::string::npos) << layers.out;
}

TEST(Cli, BenchPrintsRatiosToTheForwardAndWritesJson) {
  const std::string dir = temp_dir("bench");
  auto r = run_cli("bench --model " + fixture("resnet18_traced.pt") +
                   " --layer layer4 --methods gradcam,saliency --together --batch 1,2 --min-time 0.05 --input-size 64 64 --json " +
                   dir + "/bench.json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("2 methods together"), std::string::npos) << r.out;
  auto j = read_json(dir + "/bench.json");
  // Per batch: the user's forward, lumen's forward (in the mode it chose), gradcam, saliency, both.
  ASSERT_EQ(j["rows"].size(), 10u);
  EXPECT_EQ(j["rows"][1]["forward_mode"]["chosen_by"].get<std::string>().find("probe") != std::string::npos, true) << j["rows"][1].dump();
  for (const auto& row : j["rows"]) {
    EXPECT_GT(row["seconds"].get<double>(), 0.0);
    EXPECT_GT(row["peak_rss_mib"].get<double>(), 0.0);
    if (row["what"] == "forward") continue;
    EXPECT_GT(row["ratio_to_forward"].get<double>(), 0.0);
    EXPECT_GT(row["forward_share"].get<double>(), 0.0);
    EXPECT_LE(row["forward_share"].get<double>(), 1.0);
    // Only the combined request is also set against its first method alone, timed beside it.
    EXPECT_EQ(row.contains("ratio_to_first_method"), row["what"] == "2 methods together") << row.dump();
    if (row.contains("ratio_to_first_method")) {
      EXPECT_GT(row["ratio_to_first_method"].get<double>(), 0.0);
    }
  }
  EXPECT_NE(r.out.find("/ gradcam alone"), std::string::npos) << r.out;
  r = run_cli("bench --model " + fixture("resnet18_traced.pt") + " --layer layer4 --methods gradkam --batch 1 --min-time 0.05");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("gradkam"), std::string::npos) << r.err;
}

}  // namespace lumen::test::cli_tests
