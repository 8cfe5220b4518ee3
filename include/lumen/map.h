// lumen: what an explanation is, as data. A Map is one float map with what it explains (method, layer,
// target) and what was measured on it (stats, the paper's box); an ImageExplanation is one image's
// predictions and maps. Everything below the engine (pictures, files, metrics) works on these.
#pragma once

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

struct Box {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;       // pixels of the original image; x1, y1 exclusive
  bool valid = false;
  int z0 = 0, z1 = 0;                       // volumes: slices (frames), z1 exclusive; 0, 0 for images
  int width() const { return x1 - x0; }
  int height() const { return y1 - y0; }
};

// One box of an object detector's output: in the model input's pixels as the detector gives it, in the
// image's pixels on a Map (x1, y1 are the box's far edges, as torchvision's).
struct Detection {
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  int64_t cls = 0;    // the detector's label
  float score = 0;
  std::string label;  // the class's name, when the labels list has it
};

struct MapStats {
  float min = 0, max = 0, mean = 0;          // of the raw map
  int peak_x = 0, peak_y = 0;                // argmax of the upsampled map, original image pixels
  int peak_z = 0;                            // volumes: its slice
};

struct Prediction {
  int64_t cls = 0;
  std::string label;
  float logit = 0, probability = 0;
};

// One part of a decomposition of the layer (Deep Feature Factorization's concepts): its own map and the
// classes the network reads in it.
struct MapPart {
  cv::Mat raw;                   // CV_32F, layer resolution
  cv::Mat normalized;            // CV_32F in [0,1], original image size
  std::vector<Prediction> top;   // its top-2 classes (softmax over the scores the network gives the part)
};

struct Map {
  std::string method, layer, target;   // layer is "input" for pixel-space methods
  int64_t cls = -1;                          // -1 for custom targets
  std::string label;
  bool counterfactual = false;
  bool contrastive = false;                  // a class-difference map (ExplainOptions::contrast)
  float target_value = 0;                    // y for this image
  // Volumes (a 3-D network's [N,C,D,H,W] input): raw, upsampled and normalized hold the slices one
  // below the other, raw_depth x h rows and depth x H rows; both depths are 0 for images.
  int depth = 0, raw_depth = 0;
  cv::Mat raw;         // CV_32F, layer resolution, exactly as the method's formula gives it
  cv::Mat upsampled;   // CV_32F, original image size, bilinear (half-pixel centres) from raw; volumes: trilinear
  cv::Mat normalized;  // CV_32F in [0,1]: (upsampled - min) / (max - min); all zero when empty
  MapStats stats;
  Box box;
  bool empty = false;  // the map is constant (e.g. all-zero gradient): nothing to show
  bool is_signed = false;  // the map's sign means something (pictures centre it on grey)
  cv::Mat attribution;     // pixel methods: CV_32FC3 per-channel attribution at the model's input size
  nlohmann::json extra = nlohmann::json::object();  // method-specific facts (IG completeness gap, ...)
  std::vector<MapPart> parts;  // decompositions (dff): every part; the map itself is the one chosen for the target
  std::vector<Detection> detections;  // detection targets: the boxes the map explains, in image pixels
};

struct ImageExplanation {
  std::string source;                        // file name or caller's tag
  int width = 0, height = 0;                 // original image size
  std::vector<Prediction> top;               // top-5 (fewer if the model has fewer classes)
  std::vector<Map> maps;
  int depth = 0;                             // volumes: slices (frames); 0 for images
};

// The paper's box: threshold `map` (any size, CV_32F) at `fraction` of its maximum, take the largest
// 8-connected region, return its bounding box. Invalid when the map has no positive maximum. `max`:
// the map's maximum when the caller has it already (NaN: found here).
Box threshold_box(const cv::Mat& map, float fraction, double max = std::numeric_limits<double>::quiet_NaN());
// The same in 3-D for a volume's slices stacked one below the other (`depth` of them): the largest
// 26-connected region, its box with z0, z1.
Box threshold_box_3d(const cv::Mat& stacked, int depth, float fraction);

}  // namespace lumen
#pragma GCC visibility pop
