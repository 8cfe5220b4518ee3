#include <lumen/error.h>
#include <lumen/files.h>
#include <lumen/image.h>
#include <lumen/output.h>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <iostream>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unistd.h>

namespace lumen {
namespace fs = std::filesystem;

namespace {

// Points file descriptor 2 at /dev/null while alive. Serialised with every other writer to stderr
// (lumen::stderr_mutex), since the descriptor is process-wide.
class StderrSilencer {
 public:
  StderrSilencer() : lock_(stderr_mutex()) {
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
  std::lock_guard<std::mutex> lock_;
  int saved_ = -1;
};

}  // namespace

std::vector<std::string> load_labels(const std::string& path) {
  std::istringstream in(read_text_file(path, "labels file"));
  std::vector<std::string> labels;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(line);
  }
  while (!labels.empty() && labels.back().empty()) labels.pop_back();
  if (labels.empty()) throw Error("labels file " + path + " is empty");
  return labels;
}

namespace {

// A card's numbers, with exact types: [H, W] are whole numbers, mean and std three finite numbers.
std::vector<int> whole_numbers(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array()) throw Error(where + " must be a list of whole numbers");
  std::vector<int> out;
  for (const auto& v : j) {
    if (!v.is_number_integer() || v.get<long long>() < 1 || v.get<long long>() > 100000)
      throw Error(where + " must hold whole numbers from 1 to 100000, got " + v.dump());
    out.push_back(v.get<int>());
  }
  return out;
}

std::vector<float> three_numbers(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array() || j.size() != 3) throw Error(where + " needs 3 numbers (one per colour channel)");
  std::vector<float> out;
  for (const auto& v : j) {
    if (!v.is_number() || !std::isfinite(v.get<double>())) throw Error(where + " must hold finite numbers, got " + v.dump());
    out.push_back(v.get<float>());
  }
  return out;
}

}  // namespace

ModelCard load_card(const std::string& path) {
  const std::string text = read_text_file(path, "model card", 64ull << 20);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error("model card " + path + " is not valid JSON: " + first_line(e.what()));
  }
  if (!j.is_object()) throw Error("model card " + path + " must be a JSON object");
  const std::string where = "model card " + path + ": ";
  ModelCard card;
  try {
    card.name = j.value("name", fs::path(path).stem().string());
    // The preprocessing decides every number lumen computes: it is required, not guessed.
    if (!j.contains("input") || !j.at("input").is_object())
      throw Error(where + "\"input\" (size, mean, std) is required; see ../shared/models/*.json for the format");
    const auto& in_j = j.at("input");
    for (const char* field : {"size", "mean", "std"})
      if (!in_j.contains(field)) throw Error(where + "input." + field + " is required");
    auto& p = card.preprocess;
    const auto size = whole_numbers(in_j.at("size"), where + "input.size");
    if (size.size() != 2) throw Error(where + "input.size must be [H, W]");
    p.height = size[0];
    p.width = size[1];
    p.mean = three_numbers(in_j.at("mean"), where + "input.mean");
    p.std = three_numbers(in_j.at("std"), where + "input.std");
    for (float s : p.std)
      if (!(s > 0)) throw Error(where + "input.std values must be positive");
    const auto& order_j = in_j.contains("color_order") ? in_j.at("color_order") : nlohmann::json("RGB");
    if (!order_j.is_string() || (order_j != "RGB" && order_j != "BGR")) throw Error(where + "input.color_order must be \"RGB\" or \"BGR\"");
    p.rgb = order_j == "RGB";
    if (j.contains("output") && j.at("output").contains("labels_file")) {
      const auto& file_j = j.at("output").at("labels_file");
      if (!file_j.is_string()) throw Error(where + "output.labels_file must be a file name");
      fs::path labels = file_j.get<std::string>();
      if (labels.is_relative()) labels = fs::path(path).parent_path() / labels;
      card.labels = load_labels(labels.string());
    }
    if (j.contains("cam_target_layer") && !j.at("cam_target_layer").is_string()) throw Error(where + "cam_target_layer must be a layer name");
    card.cam_layer = j.value("cam_target_layer", "");
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + first_line(e.what()));
  }
  return card;
}

namespace {
// Hand-written because OpenCV 4.6 has no public header-only reader: these few bytes are what stops a
// 30000x30000 PNG of 2.6 MB from being decoded into gigabytes before its size is known.
uint32_t be16(const std::string& b, size_t i) { return (uint8_t(b[i]) << 8) | uint8_t(b[i + 1]); }
uint32_t be32(const std::string& b, size_t i) { return (be16(b, i) << 16) | be16(b, i + 2); }
uint32_t le16(const std::string& b, size_t i) { return uint8_t(b[i]) | (uint8_t(b[i + 1]) << 8); }
uint32_t le24(const std::string& b, size_t i) { return le16(b, i) | (uint8_t(b[i + 2]) << 16); }
uint32_t le32(const std::string& b, size_t i) { return le16(b, i) | (le16(b, i + 2) << 16); }

std::atomic<long long> g_max_pixels{kMaxImagePixels};
std::atomic<bool> g_allow_truncated{false};
}  // namespace

ImageHeader read_image_header(const std::string& b) {
  ImageHeader h;
  const size_t n = b.size();
  if (n >= 24 && b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) {
    h.format = "PNG";
    h.width = be32(b, 16), h.height = be32(b, 20);
    h.truncated = b.rfind("IEND") == std::string::npos;
  } else if (n >= 4 && uint8_t(b[0]) == 0xFF && uint8_t(b[1]) == 0xD8) {
    h.format = "JPEG";
    size_t i = 2;
    while (i + 4 <= n) {
      if (uint8_t(b[i]) != 0xFF) break;
      const uint8_t marker = uint8_t(b[i + 1]);
      if (marker == 0xFF) {  // fill byte
        ++i;
        continue;
      }
      if ((marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) {
        i += 2;
        continue;
      }
      const bool frame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (frame && i + 9 <= n) {
        h.height = be16(b, i + 5), h.width = be16(b, i + 7);
        break;
      }
      if (marker == 0xDA) break;  // scan data before any frame header: left to the decoder
      i += 2 + be16(b, i + 2);
    }
    // Entropy-coded data stuffs every 0xFF with 0x00, so FF D9 after the last scan header is the end marker.
    const size_t scan = b.rfind("\xFF\xDA");  // the last scan: a thumbnail in EXIF has its own scan and end
    h.truncated = scan == std::string::npos || b.find("\xFF\xD9", scan) == std::string::npos;
  } else if (n >= 10 && (b.compare(0, 6, "GIF87a") == 0 || b.compare(0, 6, "GIF89a") == 0)) {
    h.format = "GIF";
    h.width = le16(b, 6), h.height = le16(b, 8);
  } else if (n >= 26 && b.compare(0, 2, "BM") == 0) {
    h.format = "BMP";
    h.width = std::llabs(static_cast<int32_t>(le32(b, 18))), h.height = std::llabs(static_cast<int32_t>(le32(b, 22)));
  } else if (n >= 30 && b.compare(0, 4, "RIFF") == 0 && b.compare(8, 4, "WEBP") == 0) {
    h.format = "WebP";
    if (b.compare(12, 4, "VP8X") == 0) {
      h.width = 1 + le24(b, 24), h.height = 1 + le24(b, 27);
    } else if (b.compare(12, 4, "VP8 ") == 0) {
      h.width = le16(b, 26) & 0x3FFF, h.height = le16(b, 28) & 0x3FFF;
    } else if (b.compare(12, 4, "VP8L") == 0) {
      const uint32_t bits = le32(b, 21);
      h.width = 1 + (bits & 0x3FFF), h.height = 1 + ((bits >> 14) & 0x3FFF);
    }
  }
  return h;
}

bool image_file_truncated(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return read_image_header(bytes).truncated;
}

void set_image_limits(const ImageLimits& limits) {
  if (!(limits.max_pixels >= 1)) throw Error("the pixel limit must be at least 1");
  g_max_pixels = limits.max_pixels;
  g_allow_truncated = limits.allow_truncated;
}

ImageLimits image_limits() { return {g_max_pixels.load(), g_allow_truncated.load()}; }

cv::Mat read_image(const std::string& path) {
  const auto limits = image_limits();
  // An image of the largest allowed size, uncompressed, with room for its container.
  const std::uintmax_t max_bytes = static_cast<std::uintmax_t>(limits.max_pixels) * 4 + (64ull << 20);
  const auto size = require_regular_file(path, "image");
  if (size > max_bytes) throw Error("image " + path + " is a " + std::to_string(size >> 20) + " MiB file, more than an image under the pixel limit takes");
  std::string bytes(static_cast<size_t>(size), '\0');
  {
    std::ifstream in(path, std::ios::binary);
    if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) throw Error("cannot read image " + path);
  }
  return decode_image(bytes, path);
}

cv::Mat decode_image(const std::string& bytes, const std::string& path) {
  const auto limits = image_limits();
  if (bytes.empty()) throw Error("image " + path + " is empty");
  if (bytes.size() > static_cast<size_t>(limits.max_pixels) * 4 + (64ull << 20) || bytes.size() > (1ull << 31) - 1)
    throw Error("image " + path + " is a " + std::to_string(bytes.size() >> 20) + " MiB file, more than an image under the pixel limit takes");
  const ImageHeader header = read_image_header(bytes);
  const auto over = [&](long long w, long long h) {
    return Error("image " + path + " is " + std::to_string(w) + "x" + std::to_string(h) + ", over lumen's limit of " +
                 std::to_string(limits.max_pixels) + " pixels (--max-pixels)");
  };
  // Only the formats whose header lumen reads (PNG, JPEG, BMP, WebP) reach a decoder. OpenCV also
  // decodes JPEG 2000, DICOM, TIFF, OpenEXR, Radiance HDR, PNM, PFM and Sun raster; its JPEG 2000
  // decoder (OpenJPEG) crashed and its DICOM reader (GDCM) aborted on an assertion for fuzzed bytes
  // (fuzz/fuzz_image.cpp; the inputs are in its corpus), the others' sizes could not be checked before
  // decoding, and no model card here expects them.
  if (header.format.empty() || header.format == "GIF")
    throw Error("image " + path + " is not a PNG, JPEG, BMP or WebP file" +
                (header.format == "GIF" ? std::string(" (GIF)") : std::string()) + "; convert it to PNG or JPEG");
  // A header that declares no pixels is refused before any decoder sees it: a WebP whose VP8 frame
  // says 0x0 crashed inside OpenCV's decoder (found by fuzz/fuzz_image.cpp).
  if ((header.width < 1 || header.height < 1))
    throw Error("image " + path + " is a " + header.format + " file that declares a " + std::to_string(header.width) + "x" +
                std::to_string(header.height) + " image");
  // In double: two 32-bit sizes can overflow a 64-bit product.
  if (static_cast<double>(header.width) * static_cast<double>(header.height) > static_cast<double>(limits.max_pixels))
    throw over(header.width, header.height);
  if (header.truncated) {
    if (!limits.allow_truncated)
      throw Error("image " + path + " is truncated (the " + header.format +
                  " file ends before its end marker; the rest would be decoded as grey); --allow-truncated explains it anyway");
    std::cerr << "lumen: warning: image " << path << " is truncated; explained as decoded (--allow-truncated)\n";
  }
  cv::Mat img;
  try {
    // libpng and libjpeg print their own complaints about corrupt files to stderr before OpenCV returns
    // an empty image; lumen's one-line error below says it better, so their output is silenced.
    StderrSilencer quiet;
    img = cv::imdecode(cv::Mat(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data())), cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    throw Error("cannot decode image " + path + ": " + first_line(e.what()));
  }
  if (img.empty()) throw Error("cannot decode image " + path + " (not an image, corrupt, or over OpenCV's size limit)");
  if (static_cast<long long>(img.rows) * img.cols > limits.max_pixels) throw over(img.cols, img.rows);
  return img;
}

torch::Tensor mask_region(const cv::Mat& bgr) {
  cv::Mat grey;
  cv::cvtColor(bgr, grey, cv::COLOR_BGR2GRAY);
  grey.convertTo(grey, CV_32F);
  return torch::from_blob(grey.data, {grey.rows, grey.cols}, torch::kFloat32).clone();
}

torch::Tensor to_input(const cv::Mat& bgr, const Preprocess& p) {
  if (bgr.empty() || bgr.type() != CV_8UC3) throw Error("to_input needs a non-empty 8-bit BGR image");
  cv::Mat ordered;
  if (p.rgb) {
    cv::cvtColor(bgr, ordered, cv::COLOR_BGR2RGB);
  } else {
    ordered = bgr.isContinuous() ? bgr : bgr.clone();
  }
  // Planar before the float conversion: the resize below runs a third faster on planar float than on
  // interleaved, and the bytes are a quarter of the floats to reorder.
  auto t = torch::from_blob(ordered.data, {1, ordered.rows, ordered.cols, 3}, torch::kUInt8)
               .permute({0, 3, 1, 2})
               .contiguous()
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

torch::Tensor read_volume(const std::string& path) {
  NpyArray a;
  try {
    a = decode_npy_array(read_npy_bytes(path));
  } catch (const Error& e) {
    throw Error(std::string(e.what()).rfind(path, 0) == 0 ? e.what() : path + ": " + e.what());
  }
  auto shape = a.shape;
  if (shape.size() == 3) shape.insert(shape.begin(), 1);
  if (shape.size() == 5 && shape[0] == 1) shape.erase(shape.begin());
  std::string given = "[";
  for (size_t i = 0; i < a.shape.size(); ++i) given += (i ? "," : "") + std::to_string(a.shape[i]);
  given += "]";
  if (shape.size() != 4)
    throw Error(path + ": a volume must be [C,D,H,W] (a clip: [3,T,H,W]) or [D,H,W], not " + given);
  if (shape[0] > 64) throw Error(path + ": a volume " + given + " with " + std::to_string(shape[0]) + " channels; the channels come first ([C,D,H,W])");
  const double voxels = static_cast<double>(shape[1]) * static_cast<double>(shape[2]) * static_cast<double>(shape[3]);
  if (voxels > static_cast<double>(image_limits().max_pixels))
    throw Error(path + ": a volume of " + std::to_string(static_cast<long long>(voxels)) + " voxels is over the limit of " +
                std::to_string(image_limits().max_pixels) + " (--max-pixels)");
  const std::vector<int64_t> sizes(shape.begin(), shape.end());
  auto t = torch::from_blob(a.data.data(), sizes, torch::kFloat32).clone();
  if (!torch::isfinite(t).all().item<bool>()) throw Error(path + ": the volume holds NaN or infinite values");
  return t;
}

cv::Mat volume_slices(const torch::Tensor& volume, bool rgb) {
  if (volume.dim() != 4) throw Error("volume_slices needs a [C,D,H,W] volume");
  auto v = volume.detach().to(torch::kFloat32);
  if (v.size(0) == 3) {
    if (rgb) v = v.flip(0);  // OpenCV's BGR
  } else {
    v = v.mean(0, true).expand({3, v.size(1), v.size(2), v.size(3)});
  }
  const float lo = v.min().item<float>(), hi = v.max().item<float>();
  v = hi > lo ? (v - lo) * (255.f / (hi - lo)) : torch::zeros_like(v);
  // [3,D,H,W] -> (D*H) x W x 3
  auto hwc = v.round().clamp(0, 255).to(torch::kUInt8).permute({1, 2, 3, 0}).reshape({v.size(1) * v.size(2), v.size(3), 3}).contiguous();
  cv::Mat out(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3);
  std::memcpy(out.data, hwc.data_ptr<uint8_t>(), static_cast<size_t>(hwc.numel()));
  return out;
}

}  // namespace lumen
