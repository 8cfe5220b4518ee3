// Pieces with answers known in closed form: boxes, IoU, .npy files, cards, preprocessing, output staging,
// scene generation.
#include "common.h"

#include <lumen/demo.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace lumen::test::units_tests {

// lumen's torch blur (IG/occlusion blur references, insertion's start image, visualize) against
// OpenCV's Gaussian blur with the same kernel size and the same reflect-101 border.
TEST(Image, GaussianBlurMatchesOpenCv) {
  cv::Mat img(37, 53, CV_32FC3);
  cv::randu(img, 0.0, 1.0);
  for (double sigma : {0.7, 2.0, 5.0}) {
    auto x = torch::from_blob(img.data, {img.rows, img.cols, 3}, torch::kFloat32).permute({2, 0, 1}).unsqueeze(0).clone();
    auto y = gaussian_blur(x, sigma)[0].permute({1, 2, 0}).contiguous();
    const int r = std::max(1, static_cast<int>(std::ceil(3 * sigma)));
    cv::Mat want;
    cv::GaussianBlur(img, want, cv::Size(2 * r + 1, 2 * r + 1), sigma, sigma, cv::BORDER_REFLECT_101);
    cv::Mat got(img.rows, img.cols, CV_32FC3, y.data_ptr<float>());
    EXPECT_LE(cv::norm(got, want, cv::NORM_INF), 1e-5) << "sigma " << sigma;
  }
}

TEST(Box, LargestRegionAboveThreshold) {
  cv::Mat map = cv::Mat::zeros(100, 120, CV_32F);
  map(cv::Rect(10, 20, 30, 40)).setTo(1.0f);   // 1200 px
  map(cv::Rect(80, 5, 10, 10)).setTo(0.9f);    // 100 px, above 15% too but smaller
  map(cv::Rect(60, 60, 50, 30)).setTo(0.1f);   // below 15% of the max
  Box b = threshold_box(map, 0.15f);
  ASSERT_TRUE(b.valid);
  EXPECT_EQ(b.x0, 10);
  EXPECT_EQ(b.y0, 20);
  EXPECT_EQ(b.x1, 40);
  EXPECT_EQ(b.y1, 60);
}

TEST(Box, GaussianBlobMatchesClosedForm) {
  // exp(-r^2 / 2s^2) >= 0.15  <=>  r <= s * sqrt(2 ln(1/0.15)).
  const double s = 12.0, cx = 70.0, cy = 50.0;
  cv::Mat map(100, 160, CV_32F);
  for (int y = 0; y < map.rows; ++y)
    for (int x = 0; x < map.cols; ++x)
      map.at<float>(y, x) = static_cast<float>(std::exp(-((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (2 * s * s)));
  Box b = threshold_box(map, 0.15f);
  double r = s * std::sqrt(2 * std::log(1 / 0.15));
  EXPECT_NEAR(b.x0, cx - r, 1.0);
  EXPECT_NEAR(b.x1 - 1, cx + r, 1.0);
  EXPECT_NEAR(b.y0, cy - r, 1.0);
  EXPECT_NEAR(b.y1 - 1, cy + r, 1.0);
}

TEST(Box, MatchesOpenCVsStatsOnUpsampledRandomMaps) {
  // threshold_box measures its regions itself; OpenCV's connectedComponentsWithStats is the reference.
  cv::RNG rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    cv::Mat small(7, 7, CV_32F), map;
    rng.fill(small, cv::RNG::UNIFORM, -1.0, 1.0);
    cv::resize(small, map, {224, 224}, 0, 0, cv::INTER_LINEAR);
    const float fraction = static_cast<float>(rng.uniform(0.05, 0.9));
    double mx;
    cv::minMaxLoc(map, nullptr, &mx);
    cv::Mat labels, stats, centroids;
    const int n = cv::connectedComponentsWithStats(map >= fraction * mx, labels, stats, centroids, 8, CV_32S);
    int best = 1;
    for (int i = 2; i < n; ++i)
      if (stats.at<int>(i, cv::CC_STAT_AREA) > stats.at<int>(best, cv::CC_STAT_AREA)) best = i;
    const Box b = threshold_box(map, fraction);
    ASSERT_EQ(b.valid, mx > 0) << trial;
    if (!b.valid) continue;
    EXPECT_EQ(b.x0, stats.at<int>(best, cv::CC_STAT_LEFT)) << trial;
    EXPECT_EQ(b.y0, stats.at<int>(best, cv::CC_STAT_TOP)) << trial;
    EXPECT_EQ(b.x1, b.x0 + stats.at<int>(best, cv::CC_STAT_WIDTH)) << trial;
    EXPECT_EQ(b.y1, b.y0 + stats.at<int>(best, cv::CC_STAT_HEIGHT)) << trial;
    const Box given_max = threshold_box(map, fraction, mx);  // the caller's maximum, as finish passes it
    EXPECT_TRUE(given_max.x0 == b.x0 && given_max.y0 == b.y0 && given_max.x1 == b.x1 && given_max.y1 == b.y1) << trial;
  }
}

// Speckle instead of smooth maps: many regions, joined through corners and U-turns that the labelling
// meets only rows later, against OpenCV's labelling where the largest region is unique; and a tie,
// which goes to the region whose first pixel comes first in raster order.
TEST(Box, MatchesOpenCVOnSpeckleAndBreaksTiesInRasterOrder) {
  cv::RNG rng(11);
  int compared = 0;
  for (int trial = 0; trial < 300; ++trial) {
    cv::Mat map(rng.uniform(1, 40), rng.uniform(1, 40), CV_32F);
    rng.fill(map, cv::RNG::UNIFORM, 0.0, 1.0);
    const float fraction = static_cast<float>(rng.uniform(0.3, 0.8));
    double mx;
    cv::minMaxLoc(map, nullptr, &mx);
    cv::Mat labels, stats, centroids;
    const int n = cv::connectedComponentsWithStats(map >= fraction * mx, labels, stats, centroids, 8, CV_32S);
    int best = 1, ties = 0;
    for (int i = 2; i < n; ++i) {
      const int a = stats.at<int>(i, cv::CC_STAT_AREA), b = stats.at<int>(best, cv::CC_STAT_AREA);
      if (a > b) best = i, ties = 0;
      else if (a == b) ++ties;
    }
    const Box b = threshold_box(map, fraction);
    ASSERT_EQ(b.valid, n > 1) << trial;
    if (!b.valid || ties) continue;
    ++compared;
    EXPECT_EQ(b.x0, stats.at<int>(best, cv::CC_STAT_LEFT)) << trial;
    EXPECT_EQ(b.y0, stats.at<int>(best, cv::CC_STAT_TOP)) << trial;
    EXPECT_EQ(b.x1, b.x0 + stats.at<int>(best, cv::CC_STAT_WIDTH)) << trial;
    EXPECT_EQ(b.y1, b.y0 + stats.at<int>(best, cv::CC_STAT_HEIGHT)) << trial;
  }
  EXPECT_GT(compared, 150);
  // A U whose arms meet only at the bottom row, and a diagonal chain: one region each.
  cv::Mat u = cv::Mat::zeros(6, 7, CV_32F);
  u.col(1).setTo(1.0f), u.col(5).setTo(1.0f), u.row(5).colRange(1, 6).setTo(1.0f);
  Box ub = threshold_box(u, 0.5f);
  EXPECT_TRUE(ub.valid && ub.x0 == 1 && ub.y0 == 0 && ub.x1 == 6 && ub.y1 == 6);
  cv::Mat diagonal = cv::Mat::zeros(8, 8, CV_32F);
  for (int i = 0; i < 6; ++i) diagonal.at<float>(i + 1, 6 - i) = 1.0f;
  diagonal.at<float>(0, 0) = 1.0f;
  Box db = threshold_box(diagonal, 0.5f);
  EXPECT_TRUE(db.valid && db.x0 == 1 && db.y0 == 1 && db.x1 == 7 && db.y1 == 7);
  // Two 3 x 3 squares: the one starting on the upper row wins, though it lies to the right.
  cv::Mat tie = cv::Mat::zeros(10, 12, CV_32F);
  tie(cv::Rect(8, 1, 3, 3)).setTo(1.0f);
  tie(cv::Rect(1, 2, 3, 3)).setTo(1.0f);
  Box tb = threshold_box(tie, 0.5f);
  EXPECT_TRUE(tb.valid && tb.x0 == 8 && tb.y0 == 1);
}

TEST(Box, ZeroMapHasNoBox) { EXPECT_FALSE(threshold_box(cv::Mat::zeros(10, 10, CV_32F), 0.15f).valid); }

TEST(Box, IoUOfKnownBoxes) {
  Box a{0, 0, 10, 10, true}, b{5, 0, 15, 10, true}, c{20, 20, 30, 30, true};
  EXPECT_DOUBLE_EQ(demo::iou(a, a), 1.0);
  EXPECT_DOUBLE_EQ(demo::iou(a, b), 50.0 / 150.0);
  EXPECT_DOUBLE_EQ(demo::iou(a, c), 0.0);
}

TEST(Npy, RoundTripAndNumpyCompatibleHeader) {
  cv::Mat m(3, 5, CV_32F);
  cv::randu(m, -1, 1);
  std::string bytes = encode_npy(m);
  EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
  size_t header = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + header) % 64, 0u) << "NumPy requires the data to start 64-byte aligned";
  EXPECT_NE(bytes.find("'shape': (3, 5)"), std::string::npos);
  cv::Mat back = decode_npy(bytes);
  EXPECT_EQ(cv::norm(m, back, cv::NORM_INF), 0.0);
  EXPECT_THROW(decode_npy("garbage"), Error);
  EXPECT_THROW(decode_npy(bytes.substr(0, bytes.size() - 4)), Error);
}

TEST(Npy, ReadsFilesWrittenByNumpy) {
  // The fixture script writes it with numpy.save: np.arange(35).reshape(7, 5) as float32.
  cv::Mat ref = read_npy(fixture("numpy_written.npy"));
  ASSERT_EQ(ref.rows, 7);
  ASSERT_EQ(ref.cols, 5);
  EXPECT_EQ(ref.at<float>(3, 4), 19.0f);
}

TEST(Card, ReadsTheSharedModelCard) {
  ModelCard card = load_card(shared("models/mobilenet_v2_imagenet.json"));
  EXPECT_EQ(card.preprocess.width, 224);
  EXPECT_EQ(card.preprocess.height, 224);
  EXPECT_FLOAT_EQ(card.preprocess.mean[1], 127.5f);
  EXPECT_FLOAT_EQ(card.preprocess.std[2], 127.5f);
  EXPECT_TRUE(card.preprocess.rgb);
  ASSERT_EQ(card.labels.size(), 1000u);
  EXPECT_EQ(card.labels[0], "tench, Tinca tinca");
  EXPECT_EQ(card.cam_layer, "features.18");
  EXPECT_THROW(load_card(fixture("not_a_model.pt")), Error);
  EXPECT_THROW(load_card("/nonexistent/card.json"), Error);
}

TEST(Preprocess, NormalisesAndOrdersChannels) {
  cv::Mat img(40, 60, CV_8UC3, cv::Scalar(10, 20, 30));  // B, G, R
  Preprocess p;
  p.width = 30;
  p.height = 20;
  p.mean = {1, 2, 3};
  p.std = {2, 4, 8};
  auto x = to_input(img, p);
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{3, 20, 30}));
  EXPECT_NEAR(x[0][5][5].item<float>(), (30 - 1) / 2.0, 1e-4);  // R first for an RGB model
  EXPECT_NEAR(x[1][5][5].item<float>(), (20 - 2) / 4.0, 1e-4);
  EXPECT_NEAR(x[2][5][5].item<float>(), (10 - 3) / 8.0, 1e-4);
  p.rgb = false;
  EXPECT_NEAR(to_input(img, p)[0][0][0].item<float>(), (10 - 1) / 2.0, 1e-4);
}

TEST(Images, BadFilesAreClearErrors) {
  EXPECT_THROW(read_image("/nonexistent.png"), Error);
  EXPECT_THROW(read_image(fixture("not_an_image.png")), Error);
  EXPECT_THROW(read_image(fixture("truncated.png")), Error);
  try {
    read_image(fixture("truncated.png"));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated.png"), std::string::npos);
  }
  // Formats OpenCV could decode but lumen cannot measure first never reach a decoder: TIFF, JPEG 2000
  // (codestream and JP2), PNM, Radiance HDR.
  const cv::Mat small(4, 4, CV_8UC3, cv::Scalar(1, 2, 3));
  std::vector<uchar> tiff;
  ASSERT_TRUE(cv::imencode(".tiff", small, tiff));
  for (const std::string& bytes : {std::string(tiff.begin(), tiff.end()), std::string("\xFF\x4F\xFF\x51\x00\x2F", 6),
                                   std::string("\x00\x00\x00\x0C\x6A\x50\x20\x20\x0D\x0A", 10), std::string("P6\n4 4\n255\n") + std::string(48, 'x'),
                                   std::string("#?RADIANCE\n")}) {
    try {
      decode_image(bytes, "odd.img");
      ADD_FAILURE() << "decoded " << bytes.substr(0, 4);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("odd.img is not a PNG, JPEG, BMP or WebP file"), std::string::npos) << e.what();
    }
  }
  std::vector<uchar> png;
  ASSERT_TRUE(cv::imencode(".png", small, png));
  EXPECT_EQ(decode_image(std::string(png.begin(), png.end()), "ok.png").size(), small.size());
}

TEST(Output, StagedFilesAppearOnlyOnCommit) {
  std::string dir = temp_dir("staging");
  {
    OutputDir out(dir);
    out.write("a.txt", "hello");
    EXPECT_FALSE(std::filesystem::exists(dir + "/a.txt"));
  }  // not committed: nothing left behind
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  {
    OutputDir out(dir);
    out.write("a.txt", "hello");
    out.commit();
  }
  EXPECT_TRUE(std::filesystem::exists(dir + "/a.txt"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);
  std::ofstream(dir + "/file") << "x";
  EXPECT_THROW(OutputDir(dir + "/file/sub"), Error);
}

// A new output folder exists only once its run commits, however the run ends (it is staged beside).
TEST(Output, NewFolderAppearsOnlyOnCommit) {
  const std::string parent = temp_dir("new-folder");
  const std::string dir = parent + "/a/b/out/";
  {
    OutputDir out(dir);
    out.write("x/y.txt", "hello");
    EXPECT_FALSE(std::filesystem::exists(parent + "/a"));
  }
  EXPECT_TRUE(std::filesystem::is_empty(parent)) << "a failed run leaves nothing, not even its staging folder";
  {
    OutputDir out(dir);
    out.write("x/y.txt", "hello");
    EXPECT_FALSE(std::filesystem::exists(parent + "/a"));
    out.commit();
  }
  EXPECT_TRUE(std::filesystem::exists(dir + "x/y.txt"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(parent), {}), 1);
}

// Signed maps: the diverging colour map is centred on zero, and the overlay's opacity follows |value|,
// so where the map is zero the photo shows unchanged; each sign mode draws only its part.
TEST(Picture, SignedMapsAreCentredOnZero) {
  cv::Mat image(20, 30, CV_8UC3, cv::Scalar(30, 140, 200));
  cv::Mat values = cv::Mat::zeros(20, 30, CV_32F);
  values(cv::Rect(0, 0, 10, 20)).setTo(2.0f);    // positive on the left
  values(cv::Rect(20, 0, 10, 20)).setTo(-2.0f);  // negative on the right
  const cv::Vec3b photo = image.at<cv::Vec3b>(5, 15);
  // All: zero shows the photo, positive red, negative blue; the heat map's zero is the map's centre.
  const cv::Mat all = signed_overlay(image, values, Sign::All, Colormap::Jet, 2.0f, 0.8f);
  EXPECT_EQ(all.at<cv::Vec3b>(5, 15), photo);
  const cv::Vec3b pos = all.at<cv::Vec3b>(5, 2), neg = all.at<cv::Vec3b>(5, 25);
  EXPECT_GT(pos[2], pos[0] + 30) << "positive is red";
  EXPECT_GT(neg[0], neg[2] + 30) << "negative is blue";
  const cv::Mat heat = diverging_heatmap(values, 2.0f);
  EXPECT_EQ(heat.at<cv::Vec3b>(5, 15), diverging_centre());
  EXPECT_EQ(diverging_centre(), cv::Vec3b(247, 247, 247));
  EXPECT_EQ(heat.at<cv::Vec3b>(5, 2), diverging_lut().at<cv::Vec3b>(0, 255));
  EXPECT_EQ(heat.at<cv::Vec3b>(5, 25), diverging_lut().at<cv::Vec3b>(0, 0));
  // Half the scale is half the opacity: the colour moves half as far from the photo.
  cv::Mat half = values * 0.5;
  const cv::Vec3b p_half = signed_overlay(image, half, Sign::All, Colormap::Jet, 2.0f, 0.8f).at<cv::Vec3b>(5, 2);
  EXPECT_LT(std::abs(int(p_half[2]) - int(photo[2])), std::abs(int(pos[2]) - int(photo[2])));
  // Positive: the negative part shows the photo; negative: the positive part does.
  EXPECT_EQ(signed_overlay(image, values, Sign::Positive, Colormap::Jet, 2.0f, 0.8f).at<cv::Vec3b>(5, 25), photo);
  EXPECT_NE(signed_overlay(image, values, Sign::Positive, Colormap::Jet, 2.0f, 0.8f).at<cv::Vec3b>(5, 2), photo);
  EXPECT_EQ(signed_overlay(image, values, Sign::Negative, Colormap::Jet, 2.0f, 0.8f).at<cv::Vec3b>(5, 2), photo);
  EXPECT_NE(signed_overlay(image, values, Sign::Absolute, Colormap::Jet, 2.0f, 0.8f).at<cv::Vec3b>(5, 25), photo);
  // The scale is the 98th percentile of |value|: one outlier does not set it.
  cv::Mat outlier = values.clone();
  outlier.at<float>(0, 15) = 1000.f;
  EXPECT_FLOAT_EQ(signed_scale(outlier, Sign::All), 2.0f);
  EXPECT_EQ(parse_sign("absolute"), Sign::Absolute);
  EXPECT_THROW(parse_sign("both"), Error);
}

// A picture says what it shows: the caption strip under it is the one OpenCV draws for the map's
// caption, and that caption names the image, class, label, score, method and layer.
TEST(Picture, CaptionNamesTheClassMethodAndLayer) {
  ImageExplanation e;
  e.source = "/data/pets.jpg";
  e.top = {{171, "Italian greyhound", 16.3f, 0.601f}};
  Map m;
  m.method = "gradcam", m.layer = "features.18", m.target = "top-1", m.cls = 171, m.label = "Italian greyhound";
  m.target_value = 16.3f;
  m.normalized = cv::Mat(40, 500, CV_32F, cv::Scalar(0.5f));
  m.upsampled = m.normalized.clone();
  m.stats.max = 0.95f;
  const cv::Mat image(40, 500, CV_8UC3, cv::Scalar(10, 20, 30));
  RenderOptions options;
  const Caption caption = map_caption(m, e, options);
  ASSERT_GE(caption.lines.size(), 3u);
  EXPECT_EQ(caption.lines[0], "pets.jpg | class 171 Italian greyhound");
  EXPECT_NE(caption.lines[1].find("top-1, score 16.3, probability 0.601"), std::string::npos) << caption.lines[1];
  EXPECT_EQ(caption.lines[2], "gradcam at features.18");
  EXPECT_EQ(caption.high, "high (0.95)");
  const cv::Mat pic = overlay_picture(image, m, e, options);
  const cv::Mat strip = caption_strip(caption, 500);
  ASSERT_EQ(pic.cols, 500);
  ASSERT_EQ(pic.rows, 40 + strip.rows);
  EXPECT_EQ(cv::norm(pic(cv::Rect(0, 40, 500, strip.rows)), strip, cv::NORM_INF), 0.0);
  // The label is really drawn: another label changes the strip.
  Caption other = caption;
  other.lines[0] = "pets.jpg | class 171 Italian wolfhound";
  EXPECT_GT(cv::norm(caption_strip(other, 500), strip, cv::NORM_L1), 0.0);
  // --plain: the picture alone, at the image's size.
  options.plain = true;
  EXPECT_EQ(overlay_picture(image, m, e, options).size(), image.size());
  EXPECT_EQ(heat_picture(m, e, options).size(), image.size());
  // A narrow picture sits on a canvas wide enough to read its caption.
  options.plain = false;
  const cv::Mat small(32, 32, CV_8UC3, cv::Scalar(0, 0, 0));
  Map tiny = m;
  tiny.normalized = cv::Mat(32, 32, CV_32F, cv::Scalar(0.5f));
  EXPECT_EQ(overlay_picture(small, tiny, e, options).cols, 360);
}

TEST(Output, SafeNamesAndColormaps) {
  EXPECT_EQ(safe_name("a b/c:d.png"), "a_b_c_d.png");
  EXPECT_THROW(parse_colormap("rainbow"), Error);
  cv::Mat n(4, 4, CV_32F, cv::Scalar(1.0f));
  cv::Mat jet = heatmap(n, Colormap::Jet), turbo = heatmap(n, Colormap::Turbo);
  EXPECT_EQ(jet.type(), CV_8UC3);
  EXPECT_GT(cv::norm(jet, turbo, cv::NORM_INF), 0.0);
  EXPECT_GT(cv::norm(heatmap(n, parse_colormap("viridis")), heatmap(n, parse_colormap("inferno")), cv::NORM_INF), 0.0);
}

TEST(Targets, ScoresAndCounterfactuals) {
  auto logits = torch::tensor({{1.0f, 2.0f, 3.0f}, {0.0f, 0.0f, 0.0f}});
  torch::IValue out(logits);
  auto y = class_target({2, 0})(out);
  EXPECT_FLOAT_EQ(y[0].item<float>(), 3.0f);
  auto cf = class_target({2, 0}, Score::Logit, true)(out);
  EXPECT_FLOAT_EQ(cf[0].item<float>(), -3.0f);
  auto p = class_target({2, 0}, Score::Probability)(out);
  EXPECT_NEAR(p[1].item<float>(), 1.0f / 3.0f, 1e-6);
  EXPECT_NEAR(p[0].item<float>(), std::exp(3.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(3.0)), 1e-6);
  EXPECT_THROW(class_target({3, 0})(out), Error);
  EXPECT_THROW(parse_score("softmax2"), Error);
}

TEST(Scenes, DeterministicAndBoxesInside) {
  std::mt19937 a(5), b(5);
  for (int i = 0; i < 50; ++i) {
    auto s = demo::make_scene(a), t = demo::make_scene(b);
    EXPECT_EQ(cv::norm(s.image, t.image, cv::NORM_INF), 0.0);
    EXPECT_EQ(s.label, t.label);
    EXPECT_GE(s.box.x0, 0);
    EXPECT_LE(s.box.x1, 64);
    EXPECT_GT(s.box.width(), 8);
  }
}

}  // namespace lumen::test::units_tests

namespace lumen::test::units_tests {

// Every name that reaches a page is escaped, in text and in attributes; CSV fields are quoted.
TEST(Report, PagesEscapeNamesAndCsvQuotesFields) {
  const std::string hostile = "<img src=x onerror=alert(1)>\"'&.jpg";
  report::Page page("audit of " + hostile);
  page.figure("flagged/" + hostile + ".png", {hostile, "share 0.1"}).paragraph(hostile).table({{{hostile, {hostile}, hostile, hostile}}}, {hostile});
  const std::string html = page.html();
  EXPECT_EQ(html.find("<img src=x"), std::string::npos) << html;
  EXPECT_EQ(html.find("onerror=alert(1)>\""), std::string::npos);
  EXPECT_NE(html.find("&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;.jpg"), std::string::npos) << html;
  EXPECT_EQ(report::csv_row({"a", "b,c", "say \"hi\"", "x\ny"}), "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\"\n");
}

// Headers point one way: nothing below the engine (methods, models, io, maps, the lower public headers)
// includes the engine's header or its pipeline. docs/architecture.md draws the layers.
TEST(Headers, PointOneWay) {
  namespace fs = std::filesystem;
  const std::string root = LUMEN_SOURCE_DIR;
  std::vector<std::string> below;
  for (const char* dir : {"src/methods", "src/model", "src/io", "src/map", "src/core", "src/picture", "src/report"})
    for (const auto& e : fs::recursive_directory_iterator(root + "/" + dir))
      if (e.is_regular_file()) below.push_back(e.path().string());
  for (const char* h : {"layout.h", "map.h", "settings.h", "methods.h", "model.h", "target.h", "output.h", "image.h", "metrics.h", "error.h", "runtime.h",
                        "report.h", "dataset.h", "demo.h", "visualize.h", "picture.h"})
    below.push_back(root + "/include/lumen/" + h);
  ASSERT_GE(below.size(), 50u);
  for (const auto& f : below) {
    std::ifstream in(f);
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(text.find("<lumen/explain.h>"), std::string::npos) << f << " includes the engine's header";
    EXPECT_EQ(text.find("explain/pipeline.h"), std::string::npos) << f << " includes the engine's pipeline";
  }
}

// lumen.h gathers every public header, so that one include is enough.
TEST(Headers, UmbrellaIncludesEveryPublicHeader) {
  std::ifstream in(std::string(LUMEN_SOURCE_DIR) + "/include/lumen/lumen.h");
  const std::string umbrella((std::istreambuf_iterator<char>(in)), {});
  size_t headers = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(LUMEN_SOURCE_DIR) + "/include/lumen")) {
    const std::string name = e.path().filename().string();
    if (name == "lumen.h") continue;
    ++headers;
    EXPECT_NE(umbrella.find("#include <lumen/" + name + ">"), std::string::npos) << name << " is missing from lumen.h";
  }
  EXPECT_GE(headers, 15u);
}

}  // namespace lumen::test::units_tests

namespace lumen::test::units_tests {

// Shards: every list position is in exactly one shard, in order, in whole batches; the job engines'
// variables give the same shards as K/N.
TEST(Shard, BlocksCoverTheListOnceInWholeBatches) {
  for (size_t n : {0, 1, 7, 8, 9, 300, 1001})
    for (int count : {1, 2, 3, 4, 16, 50})
      for (size_t unit : {1, 8}) {
        size_t next = 0;
        for (int k = 0; k < count; ++k) {
          const auto [first, last] = shard_range(n, Shard{k, count, ""}, unit);
          EXPECT_EQ(first, next) << n << " " << count << " " << unit;
          EXPECT_LE(first, last);
          if (last < n) {
            EXPECT_EQ(last % unit, 0u) << "a shard ends inside a batch";
          }
          next = last;
        }
        EXPECT_EQ(next, n);
      }
  EXPECT_EQ(shard_of(std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, Shard{1, 3, ""}), (std::vector<int>{3, 4, 5}));
  const std::map<std::string, std::string> none;
  EXPECT_EQ(parse_shard("3/16", none).text(), "3/16");
  EXPECT_EQ(parse_shard("auto", {{"JOB_COMPLETION_INDEX", "2"}, {"JOB_COMPLETIONS", "4"}}).text(), "2/4");
  EXPECT_EQ(parse_shard("auto/8", {{"JOB_COMPLETION_INDEX", "7"}}).text(), "7/8");
  EXPECT_EQ(parse_shard("auto", {{"SLURM_ARRAY_TASK_ID", "12"}, {"SLURM_ARRAY_TASK_MIN", "10"}, {"SLURM_ARRAY_TASK_COUNT", "4"}}).text(), "2/4");
  for (const auto& [text, env] : std::vector<std::pair<std::string, std::map<std::string, std::string>>>{
           {"16/16", none}, {"-1/4", none}, {"1/0", none}, {"3", none}, {"1/2x", none}, {"auto", none},
           {"auto", {{"JOB_COMPLETION_INDEX", "4"}, {"JOB_COMPLETIONS", "4"}}},
           {"auto", {{"SLURM_ARRAY_TASK_ID", "3"}, {"SLURM_ARRAY_TASK_COUNT", "4"}, {"SLURM_ARRAY_TASK_STEP", "2"}}},
           {"auto", {{"SLURM_ARRAY_TASK_ID", "3"}, {"SLURM_ARRAY_TASK_MIN", "5"}, {"SLURM_ARRAY_TASK_COUNT", "4"}}}})
    EXPECT_THROW(parse_shard(text, env), Error) << text;
}

// Which settings go with which task, as the CLI, serve and Python all ask it: the cases of the rule
// table, and the sentence each front end builds in its own names.
TEST(Tasks, EachConflictIsNamedFromOneTable) {
  using S = TaskSetting;
  using K = TaskConflict::Kind;
  EXPECT_FALSE(task_conflict(Task::Classification, {S::Classes, S::TopK, S::Score, S::Counterfactual, S::Contrast, S::Output}));
  EXPECT_FALSE(task_conflict(Task::Detection, {S::Classes, S::Box, S::ScoreThreshold, S::MaxBoxes, S::DetectionOutput}));
  EXPECT_FALSE(task_conflict(Task::Segmentation, {S::Classes, S::Region, S::Output}));
  EXPECT_FALSE(task_conflict(Task::Similarity, {S::References, S::Dissimilar, S::Output}));
  const auto top_k = task_conflict(Task::Detection, {S::Classes, S::TopK});
  ASSERT_TRUE(top_k);
  EXPECT_EQ(top_k->kind, K::Refused);
  EXPECT_EQ(top_k->setting, S::TopK);
  const auto classes = task_conflict(Task::Segmentation, {S::Region});
  ASSERT_TRUE(classes);
  EXPECT_EQ(classes->kind, K::Missing);
  EXPECT_EQ(classes->setting, S::Classes);
  // A setting of another task is named before anything the asked task lacks.
  const auto box = task_conflict(Task::Similarity, {S::Box});
  ASSERT_TRUE(box);
  EXPECT_EQ(box->kind, K::Elsewhere);
  EXPECT_EQ(box->task, Task::Detection);
  EXPECT_EQ(task_conflict(Task::Similarity, {S::References, S::Classes})->setting, S::Classes);
  EXPECT_EQ(task_conflict(Task::Classification, {S::Mask})->task, Task::Segmentation);
  const auto flag = [](S s) { return s == S::TopK ? std::string("--top-k") : s == S::Classes ? "--class" : "--box"; };
  const auto task = [](Task t) { return "--task " + to_string(t); };
  EXPECT_EQ(describe(*top_k, flag, task), "--task detection explains each box's score (IoU + the detector's score); it takes no --top-k");
  EXPECT_EQ(describe(*classes, flag, task), "--task segmentation needs --class: the classes whose pixels are explained");
  EXPECT_EQ(describe(*box, flag, task), "--box belongs to --task detection");
  EXPECT_EQ(parse_task("detection"), Task::Detection);
  EXPECT_THROW(parse_task("tracking"), Error);
}

}  // namespace lumen::test::units_tests
