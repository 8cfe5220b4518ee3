// lumen: images in, model input out. Preprocessing is described by a small model card (JSON) or by
// explicit options; the default resize policy stretches the whole image to the model's input size
// (no crop, aspect ratio not kept), which is how the shared MobileNetV2 was evaluated.
#pragma once

#include <opencv2/core.hpp>
#include <torch/script.h>

#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

struct Preprocess {
  int width = 224, height = 224;
  std::vector<float> mean{0.f, 0.f, 0.f};   // in pixel units (0..255)
  std::vector<float> std{255.f, 255.f, 255.f};
  bool rgb = true;                          // channel order the model expects
};

struct ModelCard {
  std::string name;
  Preprocess preprocess;
  std::vector<std::string> labels;          // empty when the card names no labels file
  std::string cam_layer;                    // suggested target layer, may be empty
};

// Reads a card like ../shared/models/mobilenet_v2_imagenet.json (fields: input.size, input.mean,
// input.std, input.color_order, output.labels_file, cam_target_layer). Throws lumen::Error.
ModelCard load_card(const std::string& path);
std::vector<std::string> load_labels(const std::string& path);

// Largest image lumen decodes (pixels) by default; bigger files are refused rather than risking memory.
constexpr long long kMaxImagePixels = 80LL * 1000 * 1000;

// What an image file's header declares, read without decoding: PNG, JPEG, GIF, BMP and WebP (format
// empty for others, which OpenCV checks against its own limit while decoding). `truncated`: the file
// ends before its end marker (JPEG EOI, PNG IEND), so the decoder would fill the rest with grey.
struct ImageHeader {
  std::string format;
  long long width = 0, height = 0;
  bool truncated = false;
};
ImageHeader read_image_header(const std::string& bytes);
bool image_file_truncated(const std::string& path);  // read_image_header(the file's bytes).truncated

// Process-wide limits of read_image (the CLI's --max-pixels and --allow-truncated).
struct ImageLimits {
  long long max_pixels = kMaxImagePixels;
  bool allow_truncated = false;  // decode truncated files anyway (read_image then warns on stderr)
};
void set_image_limits(const ImageLimits& limits);
ImageLimits image_limits();

// BGR 8-bit image as OpenCV reads it. Throws lumen::Error for a missing, unreadable, corrupt, truncated
// or huge file; the size is checked from the header before anything is decoded.
cv::Mat read_image(const std::string& path);
// The same for a file's bytes already in memory; `name` is what the messages call it.
cv::Mat decode_image(const std::string& bytes, const std::string& name);

// [3,H,W] float tensor: converted to float, stretched to the input size with antialiased bilinear
// interpolation (torch interpolate(mode="bilinear", antialias=True, align_corners=False), which is
// torchvision's Resize), then (pixel - mean) / std.
torch::Tensor to_input(const cv::Mat& bgr, const Preprocess& p);
torch::Tensor to_batch(const std::vector<cv::Mat>& images, const Preprocess& p);
// A mask image as a segmentation region (lumen::segmentation_target): [H,W] float, its grey level, so
// that nonzero is inside. The target stretches it over the network's output.
torch::Tensor mask_region(const cv::Mat& bgr);
// A reference input for `x` ([N,C,H,W], model-input space), for IG baselines and occlusion fills:
// "black", a pixel value "0".."255", "noise" (uniform pixels from a CPU generator seeded with `seed`),
// "blur" (Gaussian, sigma = blur_sigma x width, at least half a pixel), or the path of an image.
torch::Tensor reference_input(const torch::Tensor& x, const std::string& kind, const Preprocess& p, uint64_t seed = 0,
                              double blur_sigma = static_cast<double>(0.05f));
// A 3-D network's input from a .npy file (float32, C order): [C,D,H,W] (a video clip is [3,T,H,W]) or
// [D,H,W] for one channel, taken as the model's input as it is (preprocessed by the caller: lumen cannot
// know a scanner's or a video model's normalisation). Returns [C,D,H,W]. Throws lumen::Error for a
// missing, corrupt or huge file (more voxels than image_limits().max_pixels), another shape, or a value
// that is NaN or infinite.
torch::Tensor read_volume(const std::string& path);
// The volume's slices as pictures, stacked one below another (D*H rows, W columns), BGR 8-bit: its
// values min-max scaled over the whole volume; three channels are colour (in `rgb` order), any other
// count is shown as the channels' mean in grey.
cv::Mat volume_slices(const torch::Tensor& volume, bool rgb = true);

// Separable Gaussian blur of an [N,C,H,W] batch, sigma in pixels, reflect-padded (radius ceil(3 sigma)).
// Torch, not OpenCV: it runs on model inputs, batched, and stays differentiable.
torch::Tensor gaussian_blur(const torch::Tensor& x, double sigma);

}  // namespace lumen
#pragma GCC visibility pop
