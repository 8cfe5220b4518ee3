// lumen: maps as pictures a person reads. Unsigned maps (Grad-CAM, saliency) get a sequential colour
// map; signed maps (integrated gradients, input x gradient, occlusion, contrast) get a diverging one
// centred on zero, or one sign of them (Captum's sign modes), and an overlay whose opacity follows
// |value|. Every picture can carry a caption strip that says what it shows (image, class, score,
// method, layer) and a colour bar with its range.
#pragma once

#include <lumen/map.h>

#include <opencv2/core.hpp>

#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

enum class Colormap { Jet, Turbo, Viridis, Inferno };
Colormap parse_colormap(const std::string& name);   // "jet" | "turbo" | "viridis" | "inferno"

// Which part of a signed map is drawn (Captum's visualize_image_attr sign): both signs on the diverging
// colour map, the positive or the negative part alone, or the magnitude, on the sequential one.
enum class Sign { All, Positive, Negative, Absolute };
Sign parse_sign(const std::string& name);           // "all" | "positive" | "negative" | "absolute"
std::string to_string(Sign sign);

// The diverging colour map (ColorBrewer RdBu, reversed: blue below zero, red above), as 256 BGR colours;
// entry 128 is its centre (zero), a near-white grey.
const cv::Mat& diverging_lut();
cv::Vec3b diverging_centre();

cv::Mat heatmap(const cv::Mat& normalized, Colormap cmap);                  // [0,1] -> BGR 8-bit
// Signed values -> BGR on the diverging map; `scale` is the |value| drawn at either end (clipped beyond).
cv::Mat diverging_heatmap(const cv::Mat& values, float scale);
// The |value| that a signed picture puts at the end of its colour bar: the 98th percentile of |value|
// over the map (Captum's default outlier_perc = 2), so that a few outliers do not wash the map out.
float signed_scale(const cv::Mat& values, Sign sign);

// Signed map as grey: 0 is mid grey, +max|m| white, -max|m| black (as gradient figures in the papers).
cv::Mat signed_picture(const cv::Mat& map);
// Per-channel attribution (model channel order) as a colour picture around grey, resized to `size`.
cv::Mat attribution_picture(const cv::Mat& attribution, cv::Size size, bool rgb_order);
// Unsigned: the heat map blended over the image with weight alpha.
cv::Mat overlay(const cv::Mat& bgr, const cv::Mat& normalized, Colormap cmap, float alpha = 0.5f);
// Signed (`values` at image size): each pixel's colour from the sign mode, blended with a weight that
// grows with |value| / scale up to `alpha`, so that where the map is zero the image shows unchanged.
cv::Mat signed_overlay(const cv::Mat& bgr, const cv::Mat& values, Sign sign, Colormap cmap, float scale, float alpha = 0.8f);
void draw_box(cv::Mat& bgr, const Box& box, const cv::Scalar& colour, int thickness = 2);
// A detector's boxes (image pixels), each with its label and score on its top edge.
void draw_detections(cv::Mat& bgr, const std::vector<Detection>& detections);

// What a caption strip says: text lines, then a colour bar with its end (and, diverging, middle) labels.
struct Caption {
  std::vector<std::string> lines;
  bool diverging = false;      // the bar is the diverging map; else `cmap`
  Colormap cmap = Colormap::Jet;
  std::string low, middle, high;
};
// `picture` with the caption strip below it. The result is at least 360 pixels wide (a narrower picture
// sits centred on a grey canvas) so that the text stays readable.
cv::Mat with_caption(const cv::Mat& picture, const Caption& caption);
// The strip alone, `width` pixels wide (the rows with_caption adds).
cv::Mat caption_strip(const Caption& caption, int width);

// How a run draws its maps.
struct RenderOptions {
  Colormap colormap = Colormap::Jet;
  float alpha = 0.5f;       // heat-map weight in the overlay (signed maps: the weight at full scale)
  bool draw_box = true;     // the paper's box on the overlay
  bool rgb_input = true;    // channel order of attributions (the model's input order)
  Sign sign = Sign::All;    // signed maps
  bool plain = false;       // no caption strip or colour bar (for people who compose their own figures)
};

// The heat map and overlay of one map, as a run writes them, with their caption unless options.plain.
// `image` is the original (BGR); `explained` gives the source and the predictions for the caption.
cv::Mat heat_picture(const Map& map, const ImageExplanation& explained, const RenderOptions& options);
cv::Mat overlay_picture(const cv::Mat& image, const Map& map, const ImageExplanation& explained, const RenderOptions& options);
// A decomposition's parts (Map::parts, DFF's concepts) in one picture, as pytorch-grad-cam's
// show_factorization_on_image draws them: each pixel takes the colour of its strongest part, as bright
// as that part's normalised value, blended over the image with weight options.alpha; below, a legend
// gives each colour its part's top classes and marks the part chosen for the map's target.
// Throws lumen::Error when the map has no parts.
cv::Mat parts_picture(const cv::Mat& image, const Map& map, const ImageExplanation& explained, const RenderOptions& options);
// A volume's map (Map::depth > 0) as a row of slices: every slice when there are at most 8, else 8
// evenly spaced with the peak's slice among them, each enlarged (nearest: voxels stay visible) and
// labelled with its index; overlaid on `slices` (the volume's slices stacked, BGR 8-bit, as
// volume_slices gives them) or, when `slices` is empty, the heat map alone. The box is drawn on the
// slices it spans. Below, the caption, with the volume's size and the box's slices.
cv::Mat slices_picture(const cv::Mat& slices, const Map& map, const ImageExplanation& explained, const RenderOptions& options);
// The caption of a map's pictures (what heat_picture and overlay_picture draw under them).
Caption map_caption(const Map& map, const ImageExplanation& explained, const RenderOptions& options);

}  // namespace lumen
#pragma GCC visibility pop
