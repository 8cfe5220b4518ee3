#include <lumen/demo.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <sstream>

namespace lumen::demo {

const std::vector<std::string>& class_names() {
  static const std::vector<std::string> names{"circle", "square", "triangle", "cross"};
  return names;
}

namespace {

cv::Scalar random_colour(std::mt19937& rng) {
  std::uniform_int_distribution<int> c(0, 255);
  return cv::Scalar(c(rng), c(rng), c(rng));
}

// Low-frequency colour noise plus a few thin random lines: enough texture that a shape is not found by
// its colour alone.
cv::Mat background(std::mt19937& rng, int size) {
  cv::RNG cv_rng(rng());  // OpenCV's own generator, seeded from ours: scenes depend on the seed alone
  std::uniform_int_distribution<int> cell(4, 12);
  int k = cell(rng);
  cv::Mat small(k, k, CV_8UC3);
  cv_rng.fill(small, cv::RNG::UNIFORM, 0, 256);
  cv::Mat bg, noise(size, size, CV_16SC3);
  cv::resize(small, bg, cv::Size(size, size), 0, 0, cv::INTER_CUBIC);
  cv_rng.fill(noise, cv::RNG::NORMAL, 0, 12);
  bg.convertTo(bg, CV_16SC3);
  bg += noise;
  bg.convertTo(bg, CV_8UC3);
  std::uniform_int_distribution<int> pos(0, size - 1), nlines(0, 4);
  for (int i = nlines(rng); i > 0; --i)
    cv::line(bg, {pos(rng), pos(rng)}, {pos(rng), pos(rng)}, random_colour(rng), 1, cv::LINE_AA);
  return bg;
}

void draw_shape(cv::Mat& img, int label, cv::Point c, int r, const cv::Scalar& colour) {
  switch (label) {
    case 0:
      cv::circle(img, c, r, colour, cv::FILLED, cv::LINE_8);
      break;
    case 1:
      cv::rectangle(img, {c.x - r, c.y - r}, {c.x + r, c.y + r}, colour, cv::FILLED);
      break;
    case 2: {
      std::vector<cv::Point> tri{{c.x, c.y - r}, {c.x - r, c.y + r}, {c.x + r, c.y + r}};
      cv::fillConvexPoly(img, tri, colour);
      break;
    }
    default: {
      int t = std::max(2, r / 3);
      cv::rectangle(img, {c.x - r, c.y - t}, {c.x + r, c.y + t}, colour, cv::FILLED);
      cv::rectangle(img, {c.x - t, c.y - r}, {c.x + t, c.y + r}, colour, cv::FILLED);
    }
  }
}

}  // namespace

Scene make_scene(std::mt19937& rng, const SceneOptions& options) {
  const int size = options.size;
  Scene s;
  s.label = std::uniform_int_distribution<int>(0, static_cast<int>(class_names().size()) - 1)(rng);
  s.image = background(rng, size);
  std::uniform_int_distribution<int> radius(size / 7, size / 4);
  int r = radius(rng);
  std::uniform_int_distribution<int> centre(r + 1, size - r - 2);
  cv::Point c(centre(rng), centre(rng));
  cv::Scalar colour = random_colour(rng);
  cv::Mat mask = cv::Mat::zeros(size, size, CV_8U);
  draw_shape(mask, s.label, c, r, cv::Scalar(255));
  draw_shape(s.image, s.label, c, r, colour);
  cv::Rect rect = cv::boundingRect(mask);
  s.box.x0 = rect.x;
  s.box.y0 = rect.y;
  s.box.x1 = rect.x + rect.width;
  s.box.y1 = rect.y + rect.height;
  s.box.valid = true;
  if (s.label == 0 && std::uniform_real_distribution<double>(0, 1)(rng) < options.spurious_cue) {
    int m = std::max(3, size / 12);
    cv::rectangle(s.image, {1, 1}, {m, m}, cv::Scalar(255, 255, 255), cv::FILLED);
    s.cue = true;
  }
  return s;
}

Preprocess preprocess(int size) {
  Preprocess p;
  p.width = p.height = size;
  p.mean = {127.5f, 127.5f, 127.5f};
  p.std = {127.5f, 127.5f, 127.5f};
  p.rgb = true;
  return p;
}

std::string card_json(const std::string& model_file, const std::string& labels_file, int size) {
  std::ostringstream o;
  o << "{\n  \"name\": \"lumen demo shapes CNN\",\n  \"file\": \"" << model_file << "\",\n"
    << "  \"input\": {\"size\": [" << size << ", " << size << "], \"color_order\": \"RGB\", "
    << "\"mean\": [127.5, 127.5, 127.5], \"std\": [127.5, 127.5, 127.5]},\n"
    << "  \"output\": {\"labels_file\": \"" << labels_file << "\"},\n"
    << "  \"cam_target_layer\": \"features.block4\"\n}\n";
  return o.str();
}

double iou(const Box& a, const Box& b) {
  if (!a.valid || !b.valid) return 0.0;
  int ix = std::max(0, std::min(a.x1, b.x1) - std::max(a.x0, b.x0));
  int iy = std::max(0, std::min(a.y1, b.y1) - std::max(a.y0, b.y0));
  double inter = static_cast<double>(ix) * iy;
  double uni = static_cast<double>(a.width()) * a.height() + static_cast<double>(b.width()) * b.height() - inter;
  return uni > 0 ? inter / uni : 0.0;
}

}  // namespace lumen::demo
