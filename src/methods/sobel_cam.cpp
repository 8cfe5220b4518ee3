// The Sobel baseline of pytorch-grad-cam's metrics (its sobel_cam): the edges of the picture, no model
// at all. The input's pixels (the preprocessing undone, rounded to 8 bits) in grey (OpenCV's RGB to
// grey, 0.299 R + 0.587 G + 0.114 B), Sobel derivatives in x and y (3x3, OpenCV's reflected border),
// each |.| saturated to 8 bits, averaged: map = (|dI/dx| + |dI/dy|) / 2, rounded, in 0-255. Any
// faithfulness metric must rank it below maps that read the model; it is the same for every class.
// OpenCV, not hand-written: its rounding and borders are the anchor's.
#include "methods/kit/method.h"

#include <opencv2/imgproc.hpp>

LUMEN_METHOD(sobel_cam) {
  Method m("sobel", "pytorch-grad-cam's sobel_cam (a baseline: the image's edges)", Family::Pixel, Space::Input);
  m.compute = [](const Evidence& e, size_t) {
    const auto px = e.passes->pixels().round().clamp(0, 255).to(torch::kUInt8).permute({0, 2, 3, 1}).contiguous();  // [N,H,W,3] RGB
    std::vector<torch::Tensor> maps;
    for (int64_t i = 0; i < px.size(0); ++i) {
      const cv::Mat rgb(static_cast<int>(px.size(1)), static_cast<int>(px.size(2)), CV_8UC3, px[i].data_ptr<uint8_t>());
      cv::Mat grey, dx, dy, edges;
      cv::cvtColor(rgb, grey, cv::COLOR_RGB2GRAY);
      cv::Sobel(grey, dx, CV_64F, 1, 0, 3);
      cv::Sobel(grey, dy, CV_64F, 0, 1, 3);
      cv::convertScaleAbs(dx, dx);
      cv::convertScaleAbs(dy, dy);
      cv::addWeighted(dx, 0.5, dy, 0.5, 0, edges);
      cv::Mat f;
      edges.convertTo(f, CV_32F);
      maps.push_back(torch::from_blob(f.data, {f.rows, f.cols}, torch::kFloat32).clone());
    }
    return Result{torch::stack(maps)};
  };
  return m;
}
