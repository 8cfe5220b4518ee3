// lumen: from explanations to files. Data first: .npy float maps and one JSON document per run; then
// pictures: a colour-mapped heat map and an overlay on the image. Everything a run writes is staged and
// moved into place at the end, so a failed run leaves no partial files.
#pragma once

#include <lumen/files.h>
#include <lumen/map.h>
#include <lumen/picture.h>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <set>
#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

// NumPy .npy (format 1.0, little-endian float32, C order): a CV_32F matrix is (rows, cols); one with
// C > 1 channels is (rows, cols, C); with depth > 0, a volume's slices stacked (Map::depth) are
// (depth, rows / depth, cols[, C]).
std::string encode_npy(const cv::Mat& map, int depth = 0);
cv::Mat decode_npy(const std::string& bytes);   // float32, 2-D or (H, W, C<=4); throws lumen::Error
cv::Mat read_npy(const std::string& path);
// Any float32 array (at most 8 dimensions and 2^31 values), e.g. a volume: its shape and values.
struct NpyArray {
  std::vector<long long> shape;
  std::vector<float> data;
};
NpyArray decode_npy_array(const std::string& bytes);
std::string read_npy_bytes(const std::string& path);  // the file, refused unread when over 2 GiB

std::string encode_png(const cv::Mat& image);

// Files of one run: written into a hidden staging folder inside `dir`, moved into `dir` by commit().
// Destroying an uncommitted OutputDir removes the staging folder. Throws lumen::Error if `dir` cannot
// be created or written.
class OutputDir {
 public:
  explicit OutputDir(const std::string& dir);
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;

  void write(const std::string& name, const std::string& bytes);
  void commit();
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, staging_;
  std::vector<std::string> names_;
  std::set<std::string> written_;
  bool committed_ = false, created_ = false;
};

// File-name-safe stem: letters, digits, '-', '_' and '.' kept, everything else '_'.
std::string safe_name(const std::string& s);


// Base name of one map's files: <stem>.<method>.<layer>.<class id>[.cf][.contrast] (a custom target:
// its name instead of the class id).
std::string map_file_stem(const std::string& image_stem, const Map& map);

// Writes, per map: <base>.heat.png, <base>.overlay.png (with their caption strips unless
// options.plain), <base>.npy (normalised, image size) and
// <base>.raw.npy (layer or input resolution, unnormalised); for pixel methods also <base>.attr.npy
// (per-channel attribution, H x W x C) and <base>.rgb.png. Returns the images' JSON entries.
// Volumes (Map::depth > 0): `images` are their slices stacked (volume_slices); the pictures show the
// slices side by side (slices_picture) and the .npy files are (D, H, W) and (d, h, w).
nlohmann::json write_maps(OutputDir& out, const std::vector<cv::Mat>& images, const std::vector<ImageExplanation>& explained,
                          const std::vector<std::string>& stems, const RenderOptions& options);

// The run document (schema in docs/json-schema.md).
nlohmann::json run_json(const std::vector<ImageExplanation>& images, const nlohmann::json& run_info);
nlohmann::json map_json(const Map& map);

}  // namespace lumen
#pragma GCC visibility pop
