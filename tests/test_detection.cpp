// Object detection (--task detection): a scripted torchvision Faster R-CNN loaded with torchvision's
// operator library, raw YOLO-style outputs from TorchScript and ONNX, each box's map against a PyTorch
// reference of pytorch-grad-cam's box-score target; and a small detector trained on procedural scenes,
// whose maps must point at their own objects.
#include "common.h"

namespace lumen::test::detection_tests {

namespace fs = std::filesystem;

std::string q(const std::string& s) { return "'" + s + "'"; }
const std::string kModel = "--model " + q(LUMEN_SHARED_DIR "/models/mobilenet_v2_imagenet.pt") + " --card " +
                           q(LUMEN_SHARED_DIR "/models/mobilenet_v2_imagenet.json");

// A small Faster R-CNN scripted from torchvision's own classes (scripts/fixtures/detection.py), loaded
// with torchvision's operator library.
std::string detector_args(const nlohmann::json& m) {
  return "--model " + q(fixture(m["model"].get<std::string>())) + " --card " + q(fixture(m["card"].get<std::string>())) + " --ops-library " +
         q(m["ops_library"].get<std::string>()) + " --image " + q(m["image"].get<std::string>()) + " --layer " + m["layer"].get<std::string>();
}

// Every box the detector finds gets its map from one explain run: the boxes, labels and scores in
// run.json are the detector's (in image pixels), and each Grad-CAM map is the eager reference's for
// pytorch-grad-cam's box-score target of that box. The same detector exported to ONNX (one image in;
// boxes, labels and scores out; If nodes around its NMS) gives the same maps with no operator library.
TEST(Detection, EveryBoxMatchesTheBoxScoreReference) {
  const auto m = read_json(fixture("manifest_detection.json"));
  for (const bool onnx : {false, true}) {
  SCOPED_TRACE(onnx ? "ONNX" : "TorchScript");
  const std::string out = temp_dir(onnx ? "detection-onnx" : "detection");
  std::string args = detector_args(m);
  if (onnx)
    args = "--model " + q(fixture(m["onnx_model"].get<std::string>())) + " --card " + q(fixture(m["card"].get<std::string>())) + " --image " +
           q(m["image"].get<std::string>()) + " --layer " + m["layer"].get<std::string>();
  auto r = run_cli("explain " + args + " --task detection --score-threshold 0 --method gradcam --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto run = read_json(out + "/run.json");
  const auto& maps = run["images"][0]["maps"];
  ASSERT_EQ(maps.size(), m["boxes"].size());
  for (size_t k = 0; k < maps.size(); ++k) {
    const auto& ref = m["boxes"][k];
    const auto& got = maps[k];
    EXPECT_EQ(got["target"], "box-" + std::to_string(k + 1));
    ASSERT_EQ(got["detections"].size(), 1u);
    const auto& d = got["detections"][0];
    EXPECT_EQ(d["class"], ref["class"]);
    EXPECT_EQ(d["label"], "triangle");
    EXPECT_NEAR(d["score"].get<double>(), ref["score"].get<double>(), 2e-3);
    for (int c = 0; c < 4; ++c) EXPECT_NEAR(d["box"][c].get<double>(), ref["box"][c].get<double>(), 1.5) << "box " << k << " edge " << c;
    EXPECT_NEAR(got["target_value"].get<double>(), ref["target_value"].get<double>(), 2e-3);
    const cv::Mat raw = read_npy(out + "/" + got["files"]["raw"].get<std::string>());
    const cv::Mat want = read_npy(fixture(m["gradcam"][k].get<std::string>()));
    ASSERT_EQ(raw.size(), want.size());
    double hi = 0;
    cv::minMaxLoc(want, nullptr, &hi);
    EXPECT_GT(pearson(raw, want), 0.999) << "box " << k;
    EXPECT_LT(max_abs_diff(raw, want), 1e-2 * hi) << "box " << k;
    EXPECT_TRUE(fs::exists(out + "/" + got["files"]["overlay"].get<std::string>()));
  }
  EXPECT_EQ(run["target"]["task"], "detection");
  EXPECT_EQ(run["target"]["detection"]["output"], "torchvision");
  const std::string validate = std::string(LUMEN_PYTHON) +
                               " -c \"import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))\" " +
                               q(out + "/run.json") + " " + q(LUMEN_SOURCE_DIR "/docs/explain.schema.json");
  EXPECT_EQ(std::system(validate.c_str()), 0) << "run.json does not validate against docs/explain.schema.json";
  EXPECT_NE(r.out.find("box-1 triangle"), std::string::npos) << r.out;
  // The maps differ from box to box: each follows its own box's score.
  EXPECT_LT(pearson(read_npy(out + "/" + maps[0]["files"]["raw"].get<std::string>()),
                    read_npy(out + "/" + maps[1]["files"]["raw"].get<std::string>())), 0.999);
  }
}

// A YOLO-style raw output ([N, B, 5 + C] and [N, 4 + C, B]), from TorchScript and from ONNX: decoded,
// NMS'd, and each kept box's Grad-CAM for the box-score target over every candidate, against PyTorch.
// And the same network exported with its NMS inside (ONNX NonMaxSuppression, rows of [N, K, 6]).
TEST(Detection, RawYoloOutputsMatchTheReference) {
  const auto m = read_json(fixture("manifest_detection.json"))["yolo"];
  ASSERT_EQ(m["cases"].size(), 3u);
  for (const auto& c : m["cases"])
    for (const std::string ext : c["files"]) {
      const std::string name = c["model"].get<std::string>() + ext, out = temp_dir("yolo-" + name);
      auto r = run_cli("explain --model " + q(fixture(name)) + " --card " + q(fixture(m["card"].get<std::string>())) + " --image " +
                       q(m["image"].get<std::string>()) + " --layer " + m["layer"].get<std::string>() + " --task detection --detection-output " +
                       c["format"].get<std::string>() + " --score-threshold 0 --max-boxes " + std::to_string(m["max_boxes"].get<int>()) +
                       " --out " + q(out));
      ASSERT_EQ(r.code, 0) << name << ": " << r.err;
      const auto maps = read_json(out + "/run.json")["images"][0]["maps"];
      ASSERT_EQ(maps.size(), c["boxes"].size()) << name;
      for (size_t k = 0; k < maps.size(); ++k) {
        const auto& ref = c["boxes"][k];
        const auto& d = maps[k]["detections"][0];
        EXPECT_EQ(d["class"], ref["class"]) << name << " box " << k;
        EXPECT_NEAR(d["score"].get<double>(), ref["score"].get<double>(), 1e-4) << name << " box " << k;
        for (int e = 0; e < 4; ++e) EXPECT_NEAR(d["box"][e].get<double>(), ref["box"][e].get<double>(), 0.5) << name << " box " << k;
        EXPECT_NEAR(maps[k]["target_value"].get<double>(), ref["target_value"].get<double>(), 1e-4) << name << " box " << k;
        const cv::Mat raw = read_npy(out + "/" + maps[k]["files"]["raw"].get<std::string>());
        const cv::Mat want = read_npy(fixture(c["gradcam"][k].get<std::string>()));
        EXPECT_GT(pearson(raw, want), 0.999) << name << " box " << k;
      }
    }
  const std::string out = temp_dir("yolo-bad");
  auto r = run_cli("explain " + kModel + " --image " + q(shared("images/cat.png")) + " --task detection --detection-output yolov5 --out " + q(out));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("needs a [N, B, 5 + C] tensor; this model returns a tensor of shape [1, 1000]"), std::string::npos) << r.err;
}

// All boxes' maps come from one forward pass (one backward each), as top-k classes do.
TEST(Detection, OneForwardForAllBoxes) {
  const auto m = read_json(fixture("manifest_detection.json"));
  load_ops_library(m["ops_library"].get<std::string>());
  const Model model = Model::load(fixture(m["model"].get<std::string>()));
  const Explainer ex(model, load_card(fixture(m["card"].get<std::string>())).preprocess);
  ExplainOptions opt;
  opt.layers = {m["layer"].get<std::string>()};
  opt.methods = {"gradcam", "hirescam"};
  opt.targets_from_output = [](const torch::IValue& out, int64_t) {
    DetectionSettings all;
    all.score_threshold = 0;
    return detection_targets(out, all);
  };
  const int64_t before = model.passes();
  const auto e = ex.explain({read_image(m["image"].get<std::string>())}, opt);
  EXPECT_EQ(model.passes() - before, 1);
  EXPECT_EQ(e[0].maps.size(), 2 * m["boxes"].size());
  // A given box scores the detection it overlaps most: IoU + that detection's score (a closed form), and
  // the box itself gives that detection's own map.
  const auto image = read_image(m["image"].get<std::string>());
  const auto found = read_detections(model.forward(to_batch({image}, ex.preprocess())).output, 0);
  ASSERT_GE(found.size(), 2u);
  Detection shifted = found[1];
  shifted.x0 += 2, shifted.x1 += 2;
  opt.methods = {"gradcam"};
  opt.targets_from_output = {};
  opt.targets = {detection_target({shifted}), detection_target({found[1]})};
  const auto given = ex.explain({image}, opt);
  ASSERT_EQ(given[0].maps.size(), 2u);
  EXPECT_NEAR(given[0].maps[0].target_value, box_iou(shifted, found[1]) + found[1].score, 1e-4);
  EXPECT_LT(box_iou(shifted, found[1]), 0.99f);
  EXPECT_GT(pearson(given[0].maps[1].raw, e[0].maps[2].raw), 0.9999);
}

// torchvision's ONNX export takes one image [3, H, W]: a batch of images is explained in turn, one forward
// each, and a target holding each image's own box is bound to that image (as if explained alone).
TEST(Detection, AnOnnxDetectorTakingOneImageExplainsABatchInTurn) {
  const auto m = read_json(fixture("manifest_detection.json"));
  const Model model = Model::load(fixture(m["onnx_model"].get<std::string>()));
  EXPECT_EQ(model.images_per_forward(), 1);
  const Explainer ex(model, load_card(fixture(m["card"].get<std::string>())).preprocess);
  const std::vector<cv::Mat> images = {read_image(m["image"].get<std::string>()), read_image(shared("images/cat.png"))};
  std::vector<std::vector<Detection>> boxes;
  for (const auto& image : images) {
    const auto found = read_detections(model.forward(to_batch({image}, ex.preprocess())).output, 0);
    ASSERT_GE(found.size(), 2u);
    boxes.push_back({found[boxes.empty() ? 0 : 1]});
  }
  try {
    model.forward(to_batch(images, ex.preprocess()));
    ADD_FAILURE() << "a batch of two went through a one-image model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("takes one image per forward"), std::string::npos) << e.what();
  }
  ExplainOptions opt;
  opt.layers = {m["layer"].get<std::string>()};
  opt.targets = {detection_target(boxes)};
  const int64_t before = model.passes();
  const auto both = ex.explain(images, opt, {"a", "b"});
  EXPECT_EQ(model.passes() - before, 2);
  ASSERT_EQ(both.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(both[i].source, i ? "b" : "a");
    opt.targets = {detection_target(boxes[i])};
    const auto alone = ex.explain({images[i]}, opt);
    ASSERT_EQ(both[i].maps.size(), 1u);
    EXPECT_NEAR(both[i].maps[0].target_value, alone[0].maps[0].target_value, 1e-6);
    EXPECT_GT(both[i].maps[0].target_value, 1.0);  // matched: IoU 1 + its score
    EXPECT_LT(max_abs_diff(both[i].maps[0].raw, alone[0].maps[0].raw), 1e-6);
  }
}

// A target that explains only some images of a batch (the k-th box, where only one image has k boxes)
// runs no extra passes for the others: occlusion scores the patches of the image with the box alone,
// and that image's map is the one it gets explained by itself.
TEST(Detection, ExtraPassesSkipImagesTheTargetDoesNotExplain) {
  const auto m = read_json(fixture("manifest_detection.json"));
  load_ops_library(m["ops_library"].get<std::string>());
  const Model model = Model::load(fixture(m["model"].get<std::string>()));
  const Explainer ex(model, load_card(fixture(m["card"].get<std::string>())).preprocess);
  const std::vector<cv::Mat> images = {read_image(m["image"].get<std::string>()), read_image(shared("images/cat.png"))};
  const auto found = read_detections(model.forward(to_batch(images, ex.preprocess())).output, 0);
  ASSERT_FALSE(found.empty());
  ExplainOptions opt;
  opt.methods = {"occlusion"};
  opt.settings.set("patch", 32).set("stride", 32);  // 16 positions of the 128-pixel input
  auto passes = [&](const std::vector<std::vector<Detection>>& boxes, std::vector<ImageExplanation>& out) {
    opt.targets = {detection_target(boxes)};
    const int64_t before = model.passes();
    out = ex.explain(images, opt);
    return model.passes() - before;
  };
  std::vector<ImageExplanation> first_only, both, alone;
  passes({{found[0]}, {found[0]}}, both);  // the plan's one-time probe of the layer sizes (a forward, cached) behind us
  const int64_t all = passes({{found[0]}, {found[0]}}, both), skipping = passes({{found[0]}, {}}, first_only);
  EXPECT_EQ(all - 1, 2 * (skipping - 1)) << "one forward, then the patches of " << (all > skipping ? "both images" : "?");
  ASSERT_EQ(first_only[0].maps.size(), 1u);
  EXPECT_TRUE(first_only[1].maps.empty());
  opt.targets = {detection_target({found[0]})};
  alone = ex.explain({images[0]}, opt);
  EXPECT_LT(max_abs_diff(first_only[0].maps[0].raw, alone[0].maps[0].raw), 1e-5);
}

// torchvision's detectors pad their own canvas to a multiple of 32: on a 100 x 128 input the layers
// cover 128 rows, and a map stretched over the photo whole would put the evidence too high. The map is
// laid over the padded canvas and the image's part cut out, as the PyTorch reference does: read from
// the scripted model's transform, and from the ONNX export's own Resize and Pad (measured at the input
// size, without counting as a pass).
void padded_canvas_case(const Model& model) {
  const auto m = read_json(fixture("manifest_detection.json"));
  const auto& p = m["padded"];
  const int64_t passes = model.passes();
  const auto [rows, cols] = model.content_fraction(100, 128);
  EXPECT_DOUBLE_EQ(rows, 100.0 / 128);
  EXPECT_DOUBLE_EQ(cols, 1.0);
  EXPECT_EQ(model.passes(), passes);
  const Explainer ex(model, load_card(fixture(p["card"].get<std::string>())).preprocess);
  const auto image = read_image(m["image"].get<std::string>());
  ExplainOptions opt;
  opt.layers = {m["layer"].get<std::string>()};
  opt.targets_from_output = [](const torch::IValue& out, int64_t) {
    DetectionSettings first;
    first.score_threshold = 0;
    first.max_boxes = 1;
    return detection_targets(out, first);
  };
  const auto e = ex.explain({image}, opt);
  ASSERT_EQ(e[0].maps.size(), 1u);
  const cv::Mat& got = e[0].maps[0].normalized;
  const cv::Mat want = read_npy(fixture(p["expected"].get<std::string>())), uncropped = read_npy(fixture(p["uncropped"].get<std::string>()));
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LT(max_abs_diff(got, want), 1e-3);
  EXPECT_GT(max_abs_diff(got, uncropped), 0.05);  // the stretch over the whole canvas is told apart
  // Input-space maps cover the input itself: no cut.
  opt.methods = {"saliency"};
  const auto s = ex.explain({image}, opt);
  EXPECT_EQ(s[0].maps[0].raw.size(), cv::Size(128, 100));
}

TEST(Detection, MapsOfAPaddedCanvasCoverTheImageOnly) {
  const auto m = read_json(fixture("manifest_detection.json"));
  load_ops_library(m["ops_library"].get<std::string>());
  const Model scripted = Model::load(fixture(m["model"].get<std::string>()));
  EXPECT_EQ(scripted.content_fraction(128, 128), std::make_pair(1.0, 1.0));
  {
    SCOPED_TRACE("TorchScript");
    padded_canvas_case(scripted);
  }
  const Model onnx = Model::load(fixture(m["padded"]["onnx_model"].get<std::string>()));
  SCOPED_TRACE("ONNX");
  padded_canvas_case(onnx);
  // An export whose canvas is its input (128 x 128, a multiple of 32) has nothing to cut.
  EXPECT_EQ(Model::load(fixture(m["onnx_model"].get<std::string>())).content_fraction(128, 128), std::make_pair(1.0, 1.0));
}

// A given box is checked against the candidate the target will score: written out by hand in YOLOv5's
// layout (cx, cy, w, h, objectness, class scores), whose IoUs are known in closed form.
TEST(Detection, AGivenBoxMatchesTheCandidateTheTargetScores) {
  // Candidates: A = [0,0,10,10] class 0 score 0.9; B = [0,0,10,20] class 1 score 0.8; C = [20,20,30,30] class 0 score 0.3.
  const auto rows = torch::tensor({5.f, 5.f, 10.f, 10.f, 1.f, 0.9f, 0.1f,   //
                                   5.f, 10.f, 10.f, 20.f, 1.f, 0.2f, 0.8f,  //
                                   25.f, 25.f, 10.f, 10.f, 1.f, 0.3f, 0.1f})
                        .reshape({1, 3, 7});
  DetectionSettings s;
  s.format = DetectionFormat::YoloV5;
  const torch::IValue out(rows);
  // [0,0,10,12]: IoU 100/120 with A, 120/200 with B: A, of class 0.
  const auto a = matched_detection(out, 0, {0, 0, 10, 12, 0, 1, {}}, s);
  ASSERT_TRUE(a.has_value());
  EXPECT_FLOAT_EQ(a->y1, 10);
  EXPECT_EQ(a->cls, 0);
  EXPECT_NEAR(a->score, 0.9, 1e-6);
  // The same box as class 1: its best candidate is A, of another label, so nothing matches (not B).
  EXPECT_FALSE(matched_detection(out, 0, {0, 0, 10, 12, 1, 1, {}}, s).has_value());
  // [0,0,10,19]: B (IoU 190/200) of class 1.
  const auto b = matched_detection(out, 0, {0, 0, 10, 19, 1, 1, {}}, s);
  ASSERT_TRUE(b.has_value());
  EXPECT_FLOAT_EQ(b->y1, 20);
  EXPECT_NEAR(b->score, 0.8, 1e-6);
  // C's score (0.3) is under the threshold, but the target searches every candidate: [21,21,30,30], IoU 0.81.
  EXPECT_NEAR(matched_detection(out, 0, {21, 21, 30, 30, 0, 1, {}}, s)->score, 0.3, 1e-6);
  // An IoU of 1/2 is not over the threshold of 1/2.
  EXPECT_FALSE(matched_detection(out, 0, {20, 20, 30, 40, 0, 1, {}}, s).has_value());
  // The target's value agrees: IoU + score of the matched candidate.
  const auto y = detection_target({{0, 0, 10, 12, 0, 1, {}}}, s).fn(out);
  EXPECT_NEAR(y.item<double>(), 100.0 / 120 + 0.9, 1e-5);
}

TEST(Detection, BadRequestsAreRefused) {
  const auto m = read_json(fixture("manifest_detection.json"));
  const std::string out = temp_dir("detection-bad");
  const std::string det = detector_args(m);
  struct Case {
    std::string name, args, says;
  };
  const std::vector<Case> cases = {
      {"classifier", "explain " + kModel + " --image " + q(shared("images/cat.png")) + " --task detection --out " + q(out),
       "needs a detector's output"},
      {"box without class", "explain " + det + " --task detection --box 1,1,50,50 --out " + q(out), "--box needs one --class"},
      {"box reversed", "explain " + det + " --task detection --box 50,1,10,50 --class 3 --out " + q(out), "--box must be x0,y0,x1,y1"},
      {"box matches nothing", "explain " + det + " --task detection --box 500,400,510,420 --class 3 --out " + q(out),
       "no detection of class 3 overlaps the box"},
      {"threshold without detection", "explain " + kModel + " --image " + q(shared("images/cat.png")) + " --score-threshold 0.2 --out " + q(out),
       "--score-threshold belongs to --task detection"},
      {"top-k", "explain " + det + " --task detection --top-k 2 --out " + q(out), "--task detection explains each box's score"},
      {"ops library missing", "explain " + det + " --ops-library /nonexistent.so --task detection --out " + q(out),
       "ops library not found: /nonexistent.so"},
      {"ops library not a library", "explain " + det + " --ops-library " + q(fixture(m["card"].get<std::string>())) + " --task detection --out " + q(out),
       "cannot load ops library"},
      {"operators not loaded", "explain --model " + q(fixture(m["model"].get<std::string>())) + " --image " + q(shared("images/cat.png")) +
       " --task detection --out " + q(out), "--ops-library"},
  };
  for (const auto& c : cases) {
    auto r = run_cli(c.args);
    EXPECT_EQ(r.code, 2) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find("lumen: error: "), std::string::npos) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.name << ": " << r.err;
  }
  // No box above the threshold: said, exit 0, nothing to explain.
  auto r = run_cli("explain " + det + " --task detection --score-threshold 0.99 --out " + q(out));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("no detection scored 0.99 or more"), std::string::npos) << r.err;
  EXPECT_TRUE(read_json(out + "/run.json")["images"][0]["maps"].empty());
}

}  // namespace lumen::test::detection_tests

namespace lumen::test::detection_tests {

// A YOLO-style detector trained on procedural scenes of known boxes (scripts/fixtures/trained_detector.py):
// on held-out scenes, each detection that finds a real object (IoU > 0.5, right class) gets a map whose
// peak should lie on that object. Grad-CAM's channel weights average the gradient over the whole map,
// where the other objects also sit; LayerCAM keeps it per position. All rates are printed; LayerCAM's
// is asserted.
TEST(TrainedDetector, MapsPointAtTheirOwnObjects) {
  const auto m = read_json(fixture("manifest_trained_detector.json"));
  std::map<std::string, std::pair<int, int>> peaks, boxes;  // method -> (on own object, matched detections)
  int objects = 0, detections = 0;
  // All scenes in one run: batches of 8 images, each image's boxes its own.
  std::string images;
  for (const auto& s : m["scenes"]) images += " " + q(fixture(s["image"].get<std::string>()));
  const std::string out = temp_dir("trained-detector");
  auto r = run_cli("explain --model " + q(fixture(m["model"].get<std::string>())) + " --card " + q(fixture(m["card"].get<std::string>())) +
                   " --image" + images + " --task detection --detection-output yolov5 --layer conv2 --method gradcam,layercam,eigencam --allow-empty -q --out " +
                   q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto run = read_json(out + "/run.json");
  ASSERT_EQ(run["images"].size(), m["scenes"].size());
  for (size_t i = 0; i < m["scenes"].size(); ++i) {
    const auto& s = m["scenes"][i];
    objects += static_cast<int>(s["objects"].size());
    for (const auto& map : run["images"][i]["maps"]) {
      const auto& d = map["detections"][0];
      const Detection found{d["box"][0].get<float>(), d["box"][1].get<float>(), d["box"][2].get<float>(), d["box"][3].get<float>(), d["class"].get<int64_t>(), 0, {}};
      const nlohmann::json* own = nullptr;
      for (const auto& o : s["objects"])
        if (o[4].get<int64_t>() == found.cls && box_iou(found, {o[0].get<float>(), o[1].get<float>(), o[2].get<float>(), o[3].get<float>(), 0, 0, {}}) > 0.5f) own = &o;
      if (map["method"] == "gradcam") ++detections;
      if (!own) continue;
      const auto& o = *own;
      const int px = map["stats"]["peak"][0], py = map["stats"]["peak"][1];
      auto& p = peaks[map["method"]];
      p.first += px >= o[0].get<int>() && px < o[2].get<int>() && py >= o[1].get<int>() && py < o[3].get<int>();
      ++p.second;
      // The paper's box hits the object when they overlap by IoU > 0.5 (the localisation criterion).
      auto& b = boxes[map["method"]];
      if (!map["box"].is_null())
        b.first += box_iou({map["box"][0].get<float>(), map["box"][1].get<float>(), map["box"][2].get<float>(), map["box"][3].get<float>(), 0, 0, {}},
                           {o[0].get<float>(), o[1].get<float>(), o[2].get<float>(), o[3].get<float>(), 0, 0, {}}) > 0.5f;
      ++b.second;
    }
  }
  std::printf("trained detector: %d objects in %zu scenes, %d detections, %d on a real object\n", objects, m["scenes"].size(), detections,
              peaks["gradcam"].second);
  for (const auto& [method, p] : peaks)
    std::printf("  %-9s peak on its own object %d of %d, box IoU > 0.5 with it %d of %d\n", method.c_str(), p.first, p.second,
                boxes[method].first, boxes[method].second);
  ASSERT_GE(peaks["layercam"].second, 8) << "the detector found too few objects to judge";
  EXPECT_GE(peaks["layercam"].first, 0.75 * peaks["layercam"].second);
}

// A batch of images shares one forward, and each image keeps its own boxes: the k-th box's target exists
// only in the images that have k boxes. Every image's maps, gradient and perturbation alike, equal those
// of the image explained alone (scenes with different numbers of objects).
TEST(TrainedDetector, ABatchGivesEachImageItsOwnBoxesFromOneForward) {
  const auto m = read_json(fixture("manifest_trained_detector.json"));
  const Model model = Model::load(fixture(m["model"].get<std::string>()));
  const Explainer ex(model, load_card(fixture(m["card"].get<std::string>())).preprocess);
  ExplainOptions opt;
  opt.layers = {"conv2"};
  opt.methods = {"gradcam", "scorecam"};
  opt.targets_from_output = [](const torch::IValue& out, int64_t) {
    DetectionSettings s;
    s.format = DetectionFormat::YoloV5;
    s.score_threshold = 0.3f;
    return detection_targets(out, s);
  };
  std::vector<cv::Mat> images;
  for (size_t i = 0; i < 4; ++i) images.push_back(read_image(fixture(m["scenes"][i]["image"].get<std::string>())));
  ExplainOptions gradcam = opt;
  gradcam.methods = {"gradcam"};
  const int64_t before = model.passes();
  ex.explain(images, gradcam);
  EXPECT_EQ(model.passes() - before, 1);
  const auto batch = ex.explain(images, opt);
  std::set<size_t> counts;
  for (size_t i = 0; i < images.size(); ++i) {
    const auto alone = ex.explain({images[i]}, opt);
    ASSERT_EQ(batch[i].maps.size(), alone[0].maps.size()) << "image " << i;
    counts.insert(alone[0].maps.size());
    for (size_t k = 0; k < alone[0].maps.size(); ++k) {
      const Map& a = alone[0].maps[k];
      const Map& b = batch[i].maps[k];
      EXPECT_EQ(b.method, a.method);
      EXPECT_EQ(b.target, a.target);
      ASSERT_EQ(b.detections.size(), 1u);
      EXPECT_EQ(b.detections[0].cls, a.detections[0].cls);
      EXPECT_NEAR(b.detections[0].x0, a.detections[0].x0, 1e-3);
      EXPECT_NEAR(b.target_value, a.target_value, 1e-4);
      EXPECT_LT(cv::norm(b.raw, a.raw, cv::NORM_INF), 1e-4 * std::max(1.0, cv::norm(a.raw, cv::NORM_INF))) << b.method << " " << b.target << " image " << i;
    }
  }
  EXPECT_GE(counts.size(), 2u) << "the scenes should have different numbers of boxes";
}

}  // namespace lumen::test::detection_tests
