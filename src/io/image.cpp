#include <lumen/error.h>
#include <lumen/image.h>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <unistd.h>

namespace lumen {
namespace fs = std::filesystem;

namespace {

// Points file descriptor 2 at /dev/null while alive. Serialised, since the descriptor is process-wide.
class StderrSilencer {
 public:
  StderrSilencer() : lock_(mutex()) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    int null = ::open("/dev/null", O_WRONLY);
    if (saved_ >= 0 && null >= 0) ::dup2(null, 2);
    if (null >= 0) ::close(null);
  }
  ~StderrSilencer() {
    std::fflush(stderr);
    if (saved_ >= 0) {
      ::dup2(saved_, 2);
      ::close(saved_);
    }
  }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  std::lock_guard<std::mutex> lock_;
  int saved_ = -1;
};

}  // namespace

std::vector<std::string> load_labels(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read labels file: " + path);
  std::vector<std::string> labels;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(line);
  }
  while (!labels.empty() && labels.back().empty()) labels.pop_back();
  return labels;
}

ModelCard load_card(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read model card: " + path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("model card " + path + " is not valid JSON: " + first_line(e.what()));
  }
  ModelCard card;
  try {
    card.name = j.value("name", fs::path(path).stem().string());
    if (j.contains("input")) {
      const auto& in_j = j.at("input");
      auto& p = card.preprocess;
      if (in_j.contains("size")) {
        auto size = in_j.at("size").get<std::vector<int>>();  // [H, W]
        if (size.size() != 2 || size[0] < 1 || size[1] < 1) throw Error("model card " + path + ": input.size must be [H, W]");
        p.height = size[0];
        p.width = size[1];
      }
      if (in_j.contains("mean")) p.mean = in_j.at("mean").get<std::vector<float>>();
      if (in_j.contains("std")) p.std = in_j.at("std").get<std::vector<float>>();
      if (p.mean.size() != 3 || p.std.size() != 3) throw Error("model card " + path + ": input.mean and input.std need 3 values");
      for (float s : p.std)
        if (!(s > 0)) throw Error("model card " + path + ": input.std values must be positive");
      std::string order = in_j.value("color_order", "RGB");
      if (order != "RGB" && order != "BGR") throw Error("model card " + path + ": input.color_order must be RGB or BGR");
      p.rgb = order == "RGB";
    }
    if (j.contains("output") && j.at("output").contains("labels_file")) {
      fs::path labels = j.at("output").at("labels_file").get<std::string>();
      if (labels.is_relative()) labels = fs::path(path).parent_path() / labels;
      card.labels = load_labels(labels.string());
    }
    card.cam_layer = j.value("cam_target_layer", "");
  } catch (const nlohmann::json::exception& e) {
    throw Error("model card " + path + ": " + first_line(e.what()));
  }
  return card;
}

cv::Mat read_image(const std::string& path) {
  if (!fs::exists(path)) throw Error("image not found: " + path);
  if (fs::is_directory(path)) throw Error("image path is a directory: " + path);
  cv::Mat img;
  try {
    // libpng and libjpeg print their own complaints about corrupt files to stderr before OpenCV returns
    // an empty image; lumen's one-line error below says it better, so their output is silenced.
    StderrSilencer quiet;
    img = cv::imread(path, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    throw Error("cannot decode image " + path + ": " + first_line(e.what()));
  }
  if (img.empty()) throw Error("cannot decode image " + path + " (not an image, corrupt, or over OpenCV's size limit)");
  if (static_cast<long long>(img.rows) * img.cols > kMaxImagePixels)
    throw Error("image " + path + " is " + std::to_string(img.cols) + "x" + std::to_string(img.rows) +
                ", over lumen's limit of " + std::to_string(kMaxImagePixels / 1000000) + " megapixels");
  return img;
}

torch::Tensor to_input(const cv::Mat& bgr, const Preprocess& p) {
  if (bgr.empty() || bgr.type() != CV_8UC3) throw Error("to_input needs a non-empty 8-bit BGR image");
  cv::Mat ordered;
  if (p.rgb) {
    cv::cvtColor(bgr, ordered, cv::COLOR_BGR2RGB);
  } else {
    ordered = bgr.isContinuous() ? bgr : bgr.clone();
  }
  auto t = torch::from_blob(ordered.data, {1, ordered.rows, ordered.cols, 3}, torch::kUInt8)
               .permute({0, 3, 1, 2})
               .to(torch::kFloat32);
  if (t.size(2) != p.height || t.size(3) != p.width) {
    // Bilinear with antialiasing when shrinking (torchvision Resize(antialias=True); PIL's bilinear
    // differs only by its uint8 rounding). Plain bilinear aliases badly at 512 -> 224 and moved the
    // shared MobileNetV2's top-1 on pets.jpg.
    t = at::_upsample_bilinear2d_aa(t, {p.height, p.width}, /*align_corners=*/false);
  }
  auto mean = torch::tensor(p.mean).view({1, 3, 1, 1});
  auto std = torch::tensor(p.std).view({1, 3, 1, 1});
  return ((t - mean) / std).squeeze(0);
}

torch::Tensor to_batch(const std::vector<cv::Mat>& images, const Preprocess& p) {
  std::vector<torch::Tensor> ts;
  ts.reserve(images.size());
  for (const auto& img : images) ts.push_back(to_input(img, p));
  return torch::stack(ts);
}

torch::Tensor gaussian_blur(const torch::Tensor& x, double sigma) {
  if (!(sigma > 0)) throw Error("blur sigma must be positive");
  const int radius = std::max(1, static_cast<int>(std::ceil(3 * sigma)));
  auto k = torch::arange(-radius, radius + 1, torch::kFloat32);
  k = torch::exp(-k * k / (2 * sigma * sigma));
  k = k / k.sum();
  const int64_t c = x.size(1);
  auto kx = k.view({1, 1, 1, -1}).repeat({c, 1, 1, 1}), ky = k.view({1, 1, -1, 1}).repeat({c, 1, 1, 1});
  auto padded = torch::reflection_pad2d(x, {radius, radius, radius, radius});
  const torch::Tensor no_bias;
  const std::vector<int64_t> ones{1, 1}, zeros{0, 0};
  auto h = at::conv2d(padded, kx, no_bias, at::IntArrayRef(ones), at::IntArrayRef(zeros), at::IntArrayRef(ones), c);
  return at::conv2d(h, ky, no_bias, at::IntArrayRef(ones), at::IntArrayRef(zeros), at::IntArrayRef(ones), c);
}

torch::Tensor reference_input(const torch::Tensor& x, const std::string& kind, const Preprocess& p, uint64_t seed, double blur_sigma) {
  auto mean = torch::tensor(p.mean).view({1, 3, 1, 1}), std = torch::tensor(p.std).view({1, 3, 1, 1});
  if (kind == "black") return ((torch::zeros_like(x) - mean) / std);
  if (!kind.empty() && kind.find_first_not_of("0123456789.") == std::string::npos)
    return ((torch::full_like(x, std::stod(kind)) - mean) / std);  // a pixel value
  if (kind == "noise") {
    auto gen = at::detail::createCPUGenerator(seed);
    return (torch::rand(x.sizes(), gen) * 255.0 - mean) / std;
  }
  if (kind == "blur") return gaussian_blur(x, std::max(0.5, blur_sigma * static_cast<double>(x.size(3))));  // sigma: share of width
  cv::Mat img = read_image(kind);  // a user's image
  return to_input(img, p).unsqueeze(0).expand_as(x).contiguous();
}

}  // namespace lumen
