// 3-D networks: the CAM family on volumes and clips ([N,C,D,H,W]) against references written over all
// d*h*w positions (scripts/fixtures/volumes.py), on torchvision's r3d_18 and mc3_18 and on a small 3-D
// CNN trained on procedural volumes whose objects' boxes are known.
#include "common.h"

#include <lumen/output.h>

#include <opencv2/imgcodecs.hpp>

#include <cstring>
#include <map>

using namespace lumen;
using namespace lumen::test;

namespace {

// A (D, H, W) .npy as the slices stacked, as Map keeps them.
cv::Mat stacked_npy(const std::string& path, int* depth = nullptr) {
  const NpyArray a = decode_npy_array(read_npy_bytes(path));
  EXPECT_EQ(a.shape.size(), 3u) << path;
  if (a.shape.size() != 3) return {};
  cv::Mat m(static_cast<int>(a.shape[0] * a.shape[1]), static_cast<int>(a.shape[2]), CV_32F);
  std::memcpy(m.data, a.data.data(), a.data.size() * sizeof(float));
  if (depth) *depth = static_cast<int>(a.shape[0]);
  return m;
}

std::vector<ImageExplanation> explain_volumes(const std::string& model, const std::vector<std::string>& volumes, const ExplainOptions& opt) {
  Explainer ex(Model::load(model), Preprocess{}, {});
  std::vector<torch::Tensor> rows;
  for (const auto& v : volumes) rows.push_back(read_volume(fixture(v)));
  return ex.explain_tensor(torch::stack(rows), opt);
}

const nlohmann::json& procedural() {
  static const nlohmann::json m = read_json(fixture("manifest_volumes.json"))["procedural"];
  return m;
}

}  // namespace

TEST(Volumes, CamFamilyMatchesReferencesOnVideoNetworks) {
  const auto video = read_json(fixture("manifest_volumes.json"))["video"];
  ASSERT_GE(video.size(), 30u);
  // One explanation per (model, layer) with every method the references cover there.
  std::map<std::pair<std::string, std::string>, std::vector<nlohmann::json>> groups;
  for (const auto& e : video) groups[{e["model"].get<std::string>(), e["layer"].get<std::string>()}].push_back(e);
  double worst_rel = 0, worst_map = 0;
  for (const auto& [key, entries] : groups) {
    ExplainOptions opt;
    opt.layers = {key.second};
    opt.methods.clear();
    for (const auto& e : entries) opt.methods.push_back(e["method"]);
    opt.classes = {entries.front()["class"].get<int64_t>()};
    const auto result = explain_volumes(key.first, {"volumes_clip.npy"}, opt);
    ASSERT_EQ(result.size(), 1u);
    EXPECT_EQ(result[0].depth, 8);
    ASSERT_EQ(result[0].maps.size(), entries.size());
    for (size_t k = 0; k < entries.size(); ++k) {
      const auto& e = entries[k];
      const Map& m = result[0].maps[k];
      SCOPED_TRACE(e["arch"].get<std::string>() + " " + key.second + " " + m.method);
      int raw_depth = 0, depth = 0;
      const cv::Mat raw = stacked_npy(fixture(e["raw"]), &raw_depth), map = stacked_npy(fixture(e["map"]), &depth);
      EXPECT_EQ(m.raw_depth, raw_depth);
      EXPECT_EQ(m.depth, depth);
      ASSERT_EQ(m.raw.size(), raw.size());
      ASSERT_EQ(m.normalized.size(), map.size());
      const double rel = max_abs_diff(m.raw, raw) / std::max(1e-12, cv::norm(raw, cv::NORM_INF));
      EXPECT_GE(pearson(m.raw, raw), 0.999);
      EXPECT_LE(rel, 1e-3);
      EXPECT_LE(max_abs_diff(m.normalized, map), 2e-3);
      worst_rel = std::max(worst_rel, rel);
      worst_map = std::max(worst_map, max_abs_diff(m.normalized, map));
      if (e["box"].is_null()) {
        EXPECT_FALSE(m.box.valid);
      } else {
        ASSERT_TRUE(m.box.valid);
        const std::vector<int> got{m.box.x0, m.box.y0, m.box.z0, m.box.x1, m.box.y1, m.box.z1};
        const auto want = e["box"].get<std::vector<int>>();
        for (size_t c = 0; c < 6; ++c) EXPECT_NEAR(got[c], want[c], 1) << "box coordinate " << c;
      }
    }
  }
  std::printf("volumes parity: %zu maps, max |raw diff|/max %.2e, max |map diff| %.2e\n", video.size(), worst_rel, worst_map);
}

// The small 3-D CNN: its predictions are the fixture's, and the maps point at the object (the peak of
// the upsampled map inside the object's true box, widened by half a cell of the 4x8x8 layer).
TEST(Volumes, MapsPointAtTheObjectInProceduralVolumes) {
  const auto& p = procedural();
  ASSERT_GE(p["accuracy"].get<double>(), 0.9) << "the fixture's network did not learn its task";
  std::vector<std::string> volumes;
  for (const auto& s : p["scenes"]) volumes.push_back(s["volume"]);
  ExplainOptions opt;
  opt.layers = {p["layer"].get<std::string>()};
  opt.methods = {"gradcam", "layercam", "hirescam"};
  const auto result = explain_volumes(p["model"], volumes, opt);
  ASSERT_EQ(result.size(), volumes.size());
  std::map<std::string, int> hits;
  for (size_t i = 0; i < result.size(); ++i) {
    const auto& s = p["scenes"][i];
    EXPECT_EQ(result[i].top.at(0).cls, s["predicted"].get<int64_t>());
    const auto box = s["box"].get<std::vector<int>>();
    constexpr int kSlack = 2;
    for (const Map& m : result[i].maps) {
      EXPECT_EQ(m.depth, 16);
      EXPECT_EQ(m.normalized.size(), cv::Size(32, 16 * 32));
      const bool inside = m.stats.peak_x >= box[0] - kSlack && m.stats.peak_x < box[3] + kSlack && m.stats.peak_y >= box[1] - kSlack &&
                          m.stats.peak_y < box[4] + kSlack && m.stats.peak_z >= box[2] - kSlack && m.stats.peak_z < box[5] + kSlack;
      hits[m.method] += inside && !m.empty;
    }
  }
  for (const auto& [method, n] : hits) {
    std::printf("volumes pointing game %-10s %d/%zu\n", method.c_str(), n, result.size());
    EXPECT_GE(n, 10) << method;
  }
}

TEST(Volumes, ScoreCamMasksTheWholeVolume) {
  const auto& p = procedural();
  int checked = 0;
  for (const auto& s : p["scenes"]) {
    if (!s.contains("scorecam_raw")) continue;
    ExplainOptions opt;
    opt.layers = {p["layer"].get<std::string>()};
    opt.methods = {"scorecam"};
    opt.classes = {s["predicted"].get<int64_t>()};
    const auto result = explain_volumes(p["model"], {s["volume"]}, opt);
    const cv::Mat ref = stacked_npy(fixture(s["scorecam_raw"]));
    const cv::Mat& got = result.at(0).maps.at(0).raw;
    ASSERT_EQ(got.size(), ref.size());
    EXPECT_LE(max_abs_diff(got, ref), 1e-4 * std::max(1.0, cv::norm(ref, cv::NORM_INF)));
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

TEST(Volumes, RefusesWhatVolumesDoNotDefine) {
  const auto& p = procedural();
  const std::string vol = p["scenes"][0]["volume"];
  auto refused = [&](ExplainOptions opt, const std::string& says) {
    opt.layers = opt.layers.empty() ? std::vector<std::string>{"conv3"} : opt.layers;
    try {
      explain_volumes(p["model"], {vol}, opt);
      ADD_FAILURE() << "not refused: " << says;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  ExplainOptions pixel;
  pixel.methods = {"saliency"};
  refused(pixel, "does not take a 3-D network's");
  ExplainOptions aggregate;
  aggregate.layers = {"conv2", "conv3"};
  aggregate.aggregate = "mean";
  refused(aggregate, "--aggregate is not defined for volumes");
  ExplainOptions aug;
  aug.shared.aug_smooth = true;
  refused(aug, "--aug-smooth");
  ExplainOptions compat;
  compat.shared.compat = Compat::PytorchGradCam;
  refused(compat, "--compat");

  // Files that are no volume.
  const std::string dir = temp_dir("volumes");
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
    return dir + "/" + name;
  };
  cv::Mat flat(4, 5, CV_32F, cv::Scalar(1));
  EXPECT_THROW(read_volume(write("flat.npy", encode_npy(flat))), Error);
  cv::Mat nan(8, 5, CV_32F, cv::Scalar(1));
  nan.at<float>(3, 3) = std::nanf("");
  try {
    read_volume(write("nan.npy", encode_npy(nan, 2)));
    ADD_FAILURE() << "a NaN voxel was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_volume(write("ok.npy", encode_npy(flat.reshape(1, 4), 2))).sizes(), (std::vector<int64_t>{1, 2, 2, 5}));
  EXPECT_THROW(read_volume(write("garbage.npy", "\x93NUMPY garbage")), Error);

  // The CLI: images and volumes are not mixed; what is refused leaves nothing behind.
  const std::string out = dir + "/out";
  auto r = run_cli("explain --model " + p["model"].get<std::string>() + " --image " + fixture(vol) + " --image " + shared("images/cat.png") +
                   " --layer conv3 --out " + out);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("lumen: error: give images or .npy volumes, not both"), std::string::npos) << r.err;
  r = run_cli("explain --model " + p["model"].get<std::string>() + " --image " + dir + "/nan.npy --layer conv3 --out " + out);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("NaN"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

// The CLI on volumes: (D, H, W) maps equal to the API's, run.json's 3-D box and peak, and the slices
// picture with one enlarged tile per slice.
TEST(Volumes, CliWritesVolumeMapsAndSlicePictures) {
  const auto& p = procedural();
  const std::string vol = fixture(p["scenes"][0]["volume"]), out = temp_dir("volumes-cli");
  // The plain forward, as the API's model below runs (left to its probe, the CLI may pick channels-last).
  const auto r = run_cli("explain -q --model " + p["model"].get<std::string>() + " --image " + vol +
                         " --layer conv3 --method gradcam --forward-mode plain --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto run = read_json(out + "/run.json");
  const auto& image = run["images"][0];
  EXPECT_EQ(image["depth"], 16);
  const auto& m = image["maps"][0];
  EXPECT_EQ(m["raw_shape"], nlohmann::json({4, 8, 8}));
  ASSERT_EQ(m["box"].size(), 6u);
  ASSERT_EQ(m["stats"]["peak"].size(), 3u);
  // The contract in docs/ holds for volumes too (an independent validator).
  const std::string validate = std::string(LUMEN_PYTHON) +
                               " -c \"import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))\" " +
                               out + "/run.json " LUMEN_SOURCE_DIR "/docs/explain.schema.json";
  EXPECT_EQ(std::system(validate.c_str()), 0) << "run.json does not validate against docs/explain.schema.json";

  ExplainOptions opt;
  opt.layers = {"conv3"};
  const auto api = explain_volumes(p["model"], {p["scenes"][0]["volume"]}, opt);
  int depth = 0;
  const cv::Mat written = stacked_npy(out + "/" + m["files"]["map"].get<std::string>(), &depth);
  EXPECT_EQ(depth, 16);
  // Float rounding apart: on an AVX-512 machine the 3-D convolutions sum in another order with one
  // thread than with two (the CLI's map moved by 1.8e-7 between --threads 1 and 2); a slice or axis
  // written in the wrong place would differ by far more.
  EXPECT_LE(max_abs_diff(written, api[0].maps[0].normalized), 1e-6);
  const Box& b = api[0].maps[0].box;
  EXPECT_EQ(m["box"], nlohmann::json({b.x0, b.y0, b.z0, b.x1, b.y1, b.z1}));
  EXPECT_EQ(m["stats"]["peak"], nlohmann::json({api[0].maps[0].stats.peak_x, api[0].maps[0].stats.peak_y, api[0].maps[0].stats.peak_z}));

  // `lumen layers` on a 3-D network, with its input's shape: each layer's volume, as explain reads it.
  const auto layers = run_cli("layers " + p["model"].get<std::string>() + " --input-shape 1,16,32,32");
  ASSERT_EQ(layers.code, 0) << layers.err;
  EXPECT_NE(layers.out.find("[N,C,d,h,w] volume, 4x8x8"), std::string::npos) << layers.out;
  EXPECT_NE(layers.out.find("input 1x1x16x32x32"), std::string::npos) << layers.out;

  // 8 of the 16 slices, each 32x32 enlarged 4 times, side by side above the caption.
  const cv::Mat overlay = cv::imread(out + "/" + m["files"]["overlay"].get<std::string>());
  ASSERT_FALSE(overlay.empty());
  EXPECT_GE(overlay.cols, 8 * 128);
  EXPECT_GT(overlay.rows, 128 + 60);
  // The peak's slice is among them and is coloured: its tile is not the grey of the input alone.
  const cv::Mat heat = cv::imread(out + "/" + m["files"]["heat"].get<std::string>());
  ASSERT_FALSE(heat.empty());
  EXPECT_EQ(heat.cols, overlay.cols);
}

// The layout: [N,C,d,h,w] is a volume whose slices the methods see stacked, and back.
TEST(Volumes, LayoutStacksSlicesAndRestoresThem) {
  const auto layout = infer_layout({2, 8, 3, 4, 5}, 32, 40);
  EXPECT_EQ(layout.kind, TokenLayout::Kind::Volume);
  EXPECT_EQ(layout.grid_d, 3);
  EXPECT_EQ(layout.describe(), "[N,C,d,h,w] volume, 3x4x5");
  const auto t = torch::randn({2, 8, 3, 4, 5});
  const auto s = to_spatial(t, layout);
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{2, 8, 12, 5}));
  EXPECT_TRUE(torch::equal(s[1][2].slice(0, 4, 8), t[1][2][1]));  // slice 1 is rows 4-7
  EXPECT_TRUE(torch::equal(from_spatial(s, layout, t), t));
  EXPECT_THROW(infer_layout({2, 8, 3, 4, 5}, 32, 40, 0, parse_tokens("grid=4x5")), Error);
  // The 3-D box: two blobs, the larger one's extent in x, y and z.
  cv::Mat v = cv::Mat::zeros(4 * 6, 7, CV_32F);  // 4 slices of 6 x 7
  v.at<float>(0 * 6 + 1, 1) = 1;                 // a single voxel
  for (int z = 1; z < 4; ++z)
    for (int y = 2; y < 5; ++y) v.at<float>(z * 6 + y, 4 + (z == 3)) = 0.5f;  // a bent rod, 26-connected
  const Box b = threshold_box_3d(v, 4, 0.15f);
  ASSERT_TRUE(b.valid);
  EXPECT_EQ((std::vector<int>{b.x0, b.y0, b.z0, b.x1, b.y1, b.z1}), (std::vector<int>{4, 2, 1, 6, 5, 4}));
  EXPECT_FALSE(threshold_box_3d(cv::Mat::zeros(8, 3, CV_32F), 2, 0.15f).valid);
}
