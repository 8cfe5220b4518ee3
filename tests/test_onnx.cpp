// ONNX models: the torchvision zoo exported by the fixture script runs like eager PyTorch and explains
// like its TorchScript trace; broken and hostile files give one clear error each.
#include "common.h"

#include <torch/csrc/autograd/autograd.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <random>

namespace lumen::test::onnx_tests {

nlohmann::json onnx_manifest() { return read_json(fixture("manifest_onnx.json")); }

torch::Tensor npy_tensor(const std::string& file) {
  cv::Mat m = read_npy(fixture(file));
  return torch::from_blob(m.ptr<float>(), {m.rows, m.cols}, torch::kFloat).clone();
}

std::string expect_error(const std::string& path) {
  try {
    Model::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << path << " loaded without an error";
  return "";
}

// One map per (method, image) from the ONNX model and its TorchScript trace, same options.
// Returns the lowest correlation seen.
double compare_maps(const Explainer& onnx, const Explainer& script, const std::vector<cv::Mat>& images, ExplainOptions opt,
                    const std::string& what) {
  double lowest = 1.0;
  auto a = onnx.explain(images, opt);
  auto b = script.explain(images, opt);
  for (size_t i = 0; i < images.size(); ++i) {
    EXPECT_EQ(a[i].maps.size(), b[i].maps.size());
    for (size_t k = 0; k < a[i].maps.size() && k < b[i].maps.size(); ++k) {
      SCOPED_TRACE(what + " " + a[i].maps[k].method + " image " + std::to_string(i));
      EXPECT_EQ(a[i].maps[k].cls, b[i].maps[k].cls);
      EXPECT_EQ(a[i].maps[k].raw.size(), b[i].maps[k].raw.size());
      if (a[i].maps[k].raw.size() != b[i].maps[k].raw.size()) return 0.0;
      const double r = pearson(a[i].maps[k].raw, b[i].maps[k].raw);
      EXPECT_GE(r, 0.999);
      lowest = std::min(lowest, r);
    }
  }
  return lowest;
}

TEST(Onnx, ZooForwardMatchesEagerAndMapsMatchTorchScript) {
  auto zoo = onnx_manifest()["zoo"];
  ASSERT_EQ(zoo.size(), 12u);
  ModelCard card = load_card(fixture("imagenet_card.json"));
  for (const auto& z : zoo) {
    const std::string arch = z["arch"];
    SCOPED_TRACE(arch + " opset " + std::to_string(z["opset"].get<int>()));
    Model onnx = Model::load(fixture("zoo_" + arch + ".onnx"));
    Model script = Model::load(fixture("zoo_" + arch + ".pt"));
    std::vector<cv::Mat> images;
    for (const auto& p : z["images"]) images.push_back(read_image(p));
    auto x = to_batch(images, card.preprocess);
    torch::Tensor logits;
    {
      torch::NoGradGuard no_grad;
      logits = default_logits(onnx.forward(x).output);
    }
    auto ref = npy_tensor(z["logits"]);
    ASSERT_EQ(logits.sizes(), ref.sizes());
    const double rel = ((logits - ref).abs().max() / ref.abs().max()).item<double>();
    EXPECT_LE(rel, 1e-4) << "max |onnx - eager| / max |eager|";

    Explainer eo(onnx, card.preprocess), es(script, card.preprocess);
    ExplainOptions opt;
    opt.layers = {z["layer"].get<std::string>()};
    opt.methods = {"gradcam"};
    const double r_cam = compare_maps(eo, es, images, opt, arch);
    // Guided backprop: ReLU/ReLU6 follow the rule in both; SiLU, hardswish and GELU keep their
    // ordinary gradient in both (the exports write them as Sigmoid*x, HardSwish, Erf arithmetic).
    opt.methods = {"guided-backprop"};
    opt.shared.strict_nonlinearities = false;
    const double r_gbp = compare_maps(eo, es, {images[0]}, opt, arch);
    std::printf("%-20s opset %d: forward max rel diff %.1e, Grad-CAM r %.7f, guided backprop r %.7f\n", arch.c_str(),
                z["opset"].get<int>(), rel, r_cam, r_gbp);
  }
}

// Split, Slice (negative steps), Pad (three modes), Resize (nearest, two linear), Softmax, Elu, Erf, ...
// at opsets 11, 13 and 17: outputs and input gradients equal eager PyTorch's.
TEST(Onnx, RarerOperatorsMatchEagerForwardAndGradient) {
  auto ops = onnx_manifest()["ops"];
  auto shape = ops["input_shape"].get<std::vector<int64_t>>();
  auto x = npy_tensor("onnx_ops_input.npy").reshape(shape);
  for (const std::string net : ops["nets"]) {
  auto ref = npy_tensor("onnx_" + net + "_logits.npy");
  auto ref_grad = npy_tensor("onnx_" + net + "_grad.npy").reshape(shape);
  for (int opset : ops["opsets"].get<std::vector<int>>()) {
    SCOPED_TRACE(net + " opset " + std::to_string(opset));
    Model m = Model::load(fixture("onnx_" + net + "_" + std::to_string(opset) + ".onnx"));
    auto xg = x.clone().requires_grad_(true);
    auto out = default_logits(m.forward(xg).output);
    EXPECT_LE(((out - ref).abs().max() / ref.abs().max()).item<double>(), 1e-5);
    auto grad = torch::autograd::grad({out.select(1, ops["class"].get<int64_t>()).sum()}, {xg})[0];
    EXPECT_LE(((grad - ref_grad).abs().max() / ref_grad.abs().max()).item<double>(), 1e-5);
  }
  }
}

TEST(Onnx, SharedMobileNetTop5MatchesTorchScript) {
  Model onnx = Model::load(shared("models/mobilenet_v2_imagenet.onnx"));
  Model script = Model::load(shared("models/mobilenet_v2_imagenet.pt"));
  ModelCard card = load_card(shared("models/mobilenet_v2_imagenet.json"));
  int images = 0;
  for (const auto& entry : std::filesystem::directory_iterator(shared("images"))) {
    const auto ext = entry.path().extension().string();
    if (ext != ".png" && ext != ".jpg" && ext != ".jpeg") continue;
    SCOPED_TRACE(entry.path().filename().string());
    auto x = to_batch({read_image(entry.path().string())}, card.preprocess);
    torch::NoGradGuard no_grad;
    auto a = std::get<1>(default_logits(onnx.forward(x).output).topk(5));
    auto b = std::get<1>(default_logits(script.forward(x).output).topk(5));
    EXPECT_TRUE(torch::equal(a, b)) << a << " vs " << b;
    ++images;
  }
  EXPECT_GE(images, 3);
}

TEST(Onnx, LayersAnswerToNodeNamesOutputNamesAndModulePaths) {
  Model m = Model::load(fixture("zoo_resnet18.onnx"));
  auto layers = m.layers({1, 3, 224, 224});
  const LayerInfo* relu = nullptr;
  for (const auto& l : layers)
    if (l.path == "layer4_layer4_1_relu_1_Relu") relu = &l;
  ASSERT_NE(relu, nullptr);
  EXPECT_EQ(relu->type, "Relu");
  EXPECT_EQ(relu->shape, (std::vector<int64_t>{1, 512, 7, 7}));
  ASSERT_FALSE(relu->outputs.empty());
  auto x = torch::randn({1, 3, 224, 224});
  torch::NoGradGuard no_grad;
  auto by_path = m.forward(x, {"layer4_layer4_1_relu_1_Relu"}).layers[0];
  for (const std::string& name : {std::string("/layer4/layer4.1/relu_1/Relu"), relu->outputs, std::string("layer4")}) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(torch::equal(m.forward(x, {name}).layers[0], by_path));
  }
  try {
    m.check_layer("layer44");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("closest: layer4"), std::string::npos) << e.what();
  }
}

TEST(Onnx, TinyModelMatchesEagerWithExternalDataInsideItsFolder) {
  auto x = npy_tensor("onnx_tiny_input.npy").reshape({2, 3, 16, 16});
  auto ref = npy_tensor("onnx_tiny_logits.npy");
  for (const char* file : {"onnx_tiny.onnx", "onnx_bad/inner/external_ok.onnx"}) {
    SCOPED_TRACE(file);
    Model m = Model::load(fixture(file));
    torch::NoGradGuard no_grad;
    auto out = default_logits(m.forward(x).output);  // batch 2 through a batch-1 export: dynamic batch
    EXPECT_LE((out - ref).abs().max().item<double>(), 1e-5);
  }
}

// NonMaxSuppression (a detector exported with its NMS inside): centre boxes with a per-class limit and
// a score threshold, and corner boxes in (y0, x0, y1, x1) order, against torchvision's nms per class.
TEST(Onnx, NonMaxSuppressionMatchesTorchvision) {
  for (const std::string tag : {"centre", "corners"}) {
    SCOPED_TRACE(tag);
    const Model model = Model::load(fixture("onnx_nms_" + tag + ".onnx"));
    const cv::Mat boxes = read_npy(fixture("onnx_nms_" + tag + "_boxes.npy"));
    const cv::Mat want = read_npy(fixture("onnx_nms_" + tag + "_selected.npy"));
    const auto x = torch::from_blob(boxes.data, {1, boxes.rows, 4}, torch::kFloat32).clone();
    const auto got = model.forward(x).output.toTensor();
    ASSERT_EQ(got.scalar_type(), torch::kInt64);
    ASSERT_EQ(got.size(0), want.rows);
    ASSERT_GT(want.rows, 2);
    for (int r = 0; r < want.rows; ++r)
      for (int c = 0; c < 3; ++c) EXPECT_EQ(got[r][c].item<int64_t>(), static_cast<int64_t>(want.at<float>(r, c))) << r << "," << c;
  }
}

// RoiAlign (a two-stage detector's region pooling) against torchvision's roi_align, output and the
// features' gradient, in both coordinate modes, with a fixed and the adaptive sampling ratio.
TEST(Onnx, RoiAlignMatchesTorchvision) {
  const auto m = onnx_manifest()["roi_align"];
  const std::vector<int64_t> input_shape = m["input_shape"];
  const cv::Mat input = read_npy(fixture("onnx_roi_input.npy"));
  for (const auto& c : m["cases"]) {
    const std::string tag = c["tag"];
    SCOPED_TRACE(tag);
    const std::vector<int64_t> shape = c["output_shape"];
    const auto tensor = [](const cv::Mat& a, const std::vector<int64_t>& sizes) {
      return torch::from_blob(const_cast<uchar*>(a.data), sizes, torch::kFloat32).clone();
    };
    const cv::Mat want = read_npy(fixture("onnx_roi_" + tag + "_output.npy")), weights = read_npy(fixture("onnx_roi_" + tag + "_weights.npy"));
    const cv::Mat gradient = read_npy(fixture("onnx_roi_" + tag + "_gradient.npy"));
    const auto x = tensor(input, input_shape).requires_grad_(true);
    const auto out = Model::load(fixture("onnx_roi_" + tag + ".onnx")).forward(x).output.toTensor();
    ASSERT_EQ(out.sizes(), torch::IntArrayRef(shape));
    EXPECT_LE((out - tensor(want, shape)).abs().max().item<double>(), 1e-5);
    (out * tensor(weights, shape)).sum().backward();
    ASSERT_TRUE(x.grad().defined());
    EXPECT_LE((x.grad() - tensor(gradient, input_shape)).abs().max().item<double>(), 1e-5);
    EXPECT_GT(x.grad().abs().sum().item<double>(), 0);
  }
  // A broken model's boxes (NaN, or larger than any map with the adaptive grid) are refused, not
  // sampled without end.
  const auto pool = c10::Dispatcher::singleton()
                        .findSchemaOrThrow("lumen::roi_align", "")
                        .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, int64_t, int64_t, int64_t, bool)>();
  const auto x = torch::rand({1, 2, 8, 8});
  const auto index = torch::zeros({1}, torch::kLong);
  for (const float bad : {std::nanf(""), 1e9f}) {
    try {
      pool.call(x, torch::tensor({{0.0f, 0.0f, bad, 4.0f}}), index, 1.0, 2, 2, 0, true);
      ADD_FAILURE() << "a box of " << bad << " was pooled";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("not finite or beyond any feature map"), std::string::npos) << e.what();
    }
  }
}

// If: a run-time condition picks one of two branches per forward (both are taken here, one input
// each), forward and input gradient equal to eager PyTorch's; a load-time condition is taken in line.
TEST(Onnx, IfBranchesMatchEagerForwardAndGradient) {
  const auto m = onnx_manifest()["if"];
  const std::vector<int64_t> shape = m["input_shape"];
  Model model = Model::load(fixture("onnx_if.onnx"));
  const auto weights = npy_tensor("onnx_if_weights.npy");
  for (const std::string tag : m["cases"]) {
    SCOPED_TRACE(tag);
    const auto x = npy_tensor("onnx_if_" + tag + "_input.npy").reshape(shape).requires_grad_(true);
    const auto want = npy_tensor("onnx_if_" + tag + "_output.npy"), gradient = npy_tensor("onnx_if_" + tag + "_gradient.npy").reshape(shape);
    const auto out = model.forward(x).output.toTensor();
    ASSERT_EQ(out.sizes(), want.sizes());
    EXPECT_LE((out - want).abs().max().item<double>(), 1e-5 * want.abs().max().item<double>());
    (out * weights).sum().backward();
    ASSERT_TRUE(x.grad().defined());
    EXPECT_GT(gradient.abs().max().item<double>(), 0);
    EXPECT_LE((x.grad() - gradient).abs().max().item<double>(), 1e-5 * gradient.abs().max().item<double>());
  }
  // A layer before the If is tapped like any other; one inside a branch is refused, saying why.
  const auto x = npy_tensor("onnx_if_high_input.npy").reshape(shape);
  EXPECT_EQ(model.forward(x, {"conv"}).layers.at(0).sizes(), torch::IntArrayRef({2, 4, 8, 8}));
  try {
    model.forward(x, {"then_sigmoid"});
    ADD_FAILURE() << "a layer inside a branch was tapped";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("then_sigmoid"), std::string::npos) << e.what();
  }
}

// TopK's two outputs (values and indices), largest and smallest, against numpy's sort.
TEST(Onnx, TopKMatchesNumpy) {
  const cv::Mat input = read_npy(fixture("onnx_topk_input.npy"));
  const auto x = torch::from_blob(input.data, {input.rows, input.cols}, torch::kFloat32).clone();
  for (const std::string tag : {"largest", "smallest"}) {
    SCOPED_TRACE(tag);
    const auto out = Model::load(fixture("onnx_topk_" + tag + ".onnx")).forward(x).output;
    ASSERT_TRUE(out.isTuple());
    const auto values = out.toTupleRef().elements()[0].toTensor(), indices = out.toTupleRef().elements()[1].toTensor();
    const cv::Mat want = read_npy(fixture("onnx_topk_" + tag + "_indices.npy"));
    ASSERT_EQ(indices.sizes(), (std::vector<int64_t>{want.rows, want.cols}));
    for (int r = 0; r < want.rows; ++r)
      for (int c = 0; c < want.cols; ++c) {
        const int64_t i = static_cast<int64_t>(want.at<float>(r, c));
        EXPECT_EQ(indices[r][c].item<int64_t>(), i) << r << "," << c;
        EXPECT_EQ(values[r][c].item<float>(), input.at<float>(r, static_cast<int>(i))) << r << "," << c;
      }
  }
}

TEST(Onnx, BadFilesGiveOneClearError) {
  const std::string dir = fixture("onnx_bad/");
  struct Case {
    std::string file;
    std::vector<std::string> says;
  };
  const std::vector<Case> cases{
      {"truncated.onnx", {"not an ONNX model", "truncated"}},
      {"not_onnx.onnx", {"not an ONNX model"}},
      {"empty.onnx", {"is empty"}},
      {"unsupported_ops.onnx", {"2 node(s) lumen cannot run", "MaxRoiPool at node 'roi_node' (MaxRoiPool, opset 13)", "LpPool at node 'pool_node'"}},
      {"opset9.onnx", {"opset 9", "opsets 11 to 17"}},
      {"absurd_shape.onnx", {"impossible shape", "1099511627776"}},
      {"inner/external_escape.onnx", {"'../secret.bin' lies outside the model's folder"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    const std::string message = expect_error(dir + c.file);
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    for (const auto& s : c.says) EXPECT_NE(message.find(s), std::string::npos) << message;
  }
  auto r = run_cli("layers " + dir + "unsupported_ops.onnx");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("MaxRoiPool"), std::string::npos) << r.err;
  // A file that loads but cannot run names the node that failed.
  r = run_cli("layers " + dir + "runtime_mismatch.onnx --input-size 16 16");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("in 'conv_Conv': RuntimeError: Given groups=1, weight of size [4, 6, 3, 3]"), std::string::npos) << r.err;
}

// Not a coverage-guided fuzzer (that is fuzz/, see docs/onnx.md), but the same property on every CI
// run: random corruptions of a valid file either load or fail with lumen::Error, never anything else.
TEST(Onnx, CorruptedFilesNeverCrash) {
  std::ifstream in(fixture("onnx_tiny.onnx"), std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), {});
  const std::string file = temp_dir("fuzz") + "/corrupt.onnx";
  std::mt19937 rng(12345);
  int loaded = 0, refused = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::string bytes = good;
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 3) {
        case 0: bytes[at] = static_cast<char>(rng()); break;
        case 1: bytes.erase(at, 1 + rng() % 16); break;
        default: bytes.insert(at, std::string(1 + rng() % 4, static_cast<char>(rng()))); break;
      }
      if (bytes.empty()) bytes = "x";
    }
    {
      std::ofstream out(file, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    try {
      Model m = Model::load(file);
      torch::NoGradGuard no_grad;
      m.forward(torch::randn({1, 3, 16, 16}));
      ++loaded;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_EQ(loaded + refused, 400);
  EXPECT_GT(refused, 0);
}

}  // namespace lumen::test::onnx_tests
