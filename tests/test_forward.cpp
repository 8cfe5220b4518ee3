// Forward modes (issue 21): lumen's copy of the graph run with channels-last weights and inputs gives
// every method's map of the plain run, to float rounding; the planner measures and remembers.
#include "common.h"

#include <filesystem>
#include <fstream>
#include <set>

namespace lumen::test::forward_tests {

namespace fs = std::filesystem;

// Channels-last changes the order of float sums in the convolutions, so a forward moves by about 1e-6.
// A map moves as much, except where a ReLU6 sits at a near-tie: there the gate of an input-gradient
// map can flip at a few pixels, exactly as between 1 and 2 threads (Model.MapsAreTheSameWithOneAndTwo
// Threads; lumen::set_deterministic explains). Grad-CAM++ divides by sums of squared and cubed
// gradients, which magnify rounding (2e-3 between thread counts too).
double bound(const std::string& method) {
  static const std::set<std::string> gated{"saliency", "integrated-gradients", "smoothgrad", "input-x-gradient"};
  return gated.count(method) ? 1e-2 : method == "gradcam++" ? 2e-3 : 1e-4;
}

// Each map of `a` against the same map of `b`: the largest difference against the bound (a fraction of
// the map's range) and r >= 0.9999. Returns how many maps were compared.
size_t compare_runs(const std::vector<ImageExplanation>& a, const std::vector<ImageExplanation>& b) {
  size_t compared = 0;
  EXPECT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    EXPECT_EQ(a[i].maps.size(), b[i].maps.size());
    EXPECT_EQ(a[i].top.at(0).cls, b[i].top.at(0).cls);
    for (size_t k = 0; k < a[i].maps.size() && k < b[i].maps.size(); ++k) {
      const Map& p = a[i].maps[k];
      const Map& c = b[i].maps[k];
      SCOPED_TRACE(p.method + " " + p.layer + " " + p.target);
      EXPECT_EQ(p.method, c.method);
      if (p.raw.size() != c.raw.size()) {
        ADD_FAILURE() << "map sizes differ";
        continue;
      }
      double lo, hi;
      cv::minMaxLoc(p.raw, &lo, &hi);
      EXPECT_LE(max_abs_diff(p.raw, c.raw), bound(p.method) * (hi - lo) + 1e-12);
      if (hi > lo) {
        EXPECT_GE(pearson(p.raw, c.raw), 0.9999);
      }
      ++compared;
    }
  }
  return compared;
}

// Every method that runs on a CNN, on a resnet (random weights) small enough to run them all quickly.
TEST(ForwardMode, EveryMethodGivesThePlainMapsInChannelsLast) {
  const Model plain = Model::load(fixture("resnet18_traced.pt"));
  const Model last = plain.with_forward_mode(ForwardMode::ChannelsLast);
  EXPECT_EQ(plain.forward_mode(), ForwardMode::Plain);
  EXPECT_EQ(last.forward_mode(), ForwardMode::ChannelsLast);
  EXPECT_EQ(last.fingerprint(), plain.fingerprint());
  EXPECT_FALSE(plain.fingerprint().empty());
  Preprocess pre;
  pre.width = pre.height = 128;
  ExplainOptions opt;
  opt.methods.clear();
  for (const auto& m : method_catalog())
    if (m.family != "attention" && m.name != "cam") opt.methods.push_back(m.name);
  // layer2 (128 channels): Score-CAM and Ablation-CAM run one pass per channel, twice per mode. CAM
  // needs the layer before the pooled linear head.
  opt.layers = {"layer2"};
  opt.top_k = 2;
  opt.settings.set("masks", 200).set("stride", 32).set("samples", 4).set("steps", 8);
  const std::vector<cv::Mat> images{read_image(shared("images/pets.jpg"))};
  const auto a = Explainer(plain, pre).explain(images, opt);
  const auto b = Explainer(last, pre).explain(images, opt);
  ExplainOptions cam = opt;
  cam.methods = {"cam"};
  cam.layers = {"layer4"};
  cam.settings = Settings();
  EXPECT_GE(compare_runs(a, b) + compare_runs(Explainer(plain, pre).explain(images, cam), Explainer(last, pre).explain(images, cam)), 2u * 20u);
}

// The shared MobileNetV2 (depthwise convolutions, where channels-last gains most), the common methods.
TEST(ForwardMode, SharedModelGivesThePlainMapsInChannelsLast) {
  const ModelCard card = load_card(shared("models/mobilenet_v2_imagenet.json"));
  const Model plain = Model::load(shared("models/mobilenet_v2_imagenet.pt"));
  ExplainOptions opt;
  opt.methods = {"gradcam", "gradcam++", "layercam", "eigencam", "saliency", "guided-backprop", "integrated-gradients"};
  opt.layers = {"features.18", "features.14"};
  opt.settings.set("steps", 8);
  const std::vector<cv::Mat> images{read_image(shared("images/pets.jpg")), read_image(shared("images/owl.jpg"))};
  const auto a = Explainer(plain, card.preprocess).explain(images, opt);
  const auto b = Explainer(plain.with_forward_mode(ForwardMode::ChannelsLast), card.preprocess).explain(images, opt);
  EXPECT_EQ(compare_runs(a, b), 2u * (4 * 2 + 3));
}

// Channels-last folds each batch norm into the convolution before it. On a resnet whose batch norms
// have non-trivial statistics and biases, the maps of a block's output come from the folded copy; a
// tap on a folded convolution (whose own output the copy no longer computes) or batch norm, and LRP
// (a batch norm is a layer of its own there), from the unfolded one: all equal the plain run's.
TEST(ForwardMode, FoldedBatchNormsGiveThePlainMaps) {
  const Model plain = Model::load(fixture("resnet18_bn_scripted.pt"));
  const Model last = plain.with_forward_mode(ForwardMode::ChannelsLast);
  EXPECT_EQ(plain.folded_batch_norms(), 0);
  EXPECT_EQ(last.folded_batch_norms(), 20);  // every BatchNorm2d of resnet18 (the downsample ones too)
  const ModelCard card = load_card(fixture("imagenet_card.json"));
  const std::vector<cv::Mat> images{read_image(shared("images/pets.jpg")), read_image(shared("images/cat.png"))};
  size_t compared = 0;
  for (const auto& layers : std::vector<std::vector<std::string>>{{"layer4", "layer3"}, {"layer4.1.conv2"}, {"layer4.1.bn2", "layer4"}}) {
    ExplainOptions opt;
    opt.methods = {"gradcam", "layercam", "guided-backprop", "lrp"};
    opt.layers = layers;
    compared += compare_runs(Explainer(plain, card.preprocess).explain(images, opt), Explainer(last, card.preprocess).explain(images, opt));
  }
  EXPECT_EQ(compared, 2u * (2 * 2 + 2 + 2 * 1 + 2 + 2 * 2 + 2));
  // The folded copy's logits are the file's.
  const auto x = to_batch(images, card.preprocess);
  torch::NoGradGuard no_grad;
  const auto a = plain.forward(x).output.toTensor(), b = last.forward(x).output.toTensor();
  EXPECT_LE((a - b).abs().max().item<double>(), 1e-4 * a.abs().max().item<double>());
}

TEST(ForwardMode, PlannerMeasuresOnceAndRemembers) {
  const std::string cache = temp_dir("forward-cache") + "/plans.json";
  const Model model = Model::load(fixture("resnet18_traced.pt"));
  const auto first = plan_forward(model, {1, 3, 64, 64}, cache);
  EXPECT_FALSE(first.cached);
  EXPECT_GT(first.plain_ms, 0);
  EXPECT_GT(first.channels_last_ms, 0);
  EXPECT_EQ(first.mode, first.channels_last_ms < 0.97 * first.plain_ms ? ForwardMode::ChannelsLast : ForwardMode::Plain);
  const auto again = plan_forward(model, {1, 3, 64, 64}, cache);
  EXPECT_TRUE(again.cached);
  EXPECT_EQ(again.mode, first.mode);
  EXPECT_EQ(again.plain_ms, first.plain_ms);
  EXPECT_FALSE(plan_forward(model, {2, 3, 64, 64}, cache).cached) << "another input shape is probed";
  // A damaged cache is probed over and rewritten, never an error.
  std::ofstream(cache) << "{not json";
  EXPECT_FALSE(plan_forward(model, {1, 3, 64, 64}, cache).cached);
  EXPECT_TRUE(plan_forward(model, {1, 3, 64, 64}, cache).cached);
  EXPECT_EQ(parse_forward_mode("channels-last"), ForwardMode::ChannelsLast);
  EXPECT_THROW(parse_forward_mode("nhwc"), Error);
}

}  // namespace lumen::test::forward_tests
