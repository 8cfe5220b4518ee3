#include <lumen/map.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>

namespace lumen {

Box threshold_box(const cv::Mat& map, float fraction) {
  Box box;
  double mx;
  cv::minMaxLoc(map, nullptr, &mx);
  if (!(mx > 0)) return box;
  const cv::Mat mask = map >= fraction * mx;
  // Labels only: connectedComponentsWithStats also accumulates centroids in double precision, which
  // tripled the cost of a box. The areas are one counting pass; the largest region's extent is
  // OpenCV's bounding rectangle of its mask.
  cv::Mat labels;
  const int n = cv::connectedComponents(mask, labels, 8, CV_32S);
  if (n < 2) return box;
  std::vector<int> area(static_cast<size_t>(n), 0);
  for (int y = 0; y < labels.rows; ++y) {
    const int* row = labels.ptr<int>(y);
    for (int x = 0; x < labels.cols; ++x) ++area[static_cast<size_t>(row[x])];
  }
  // The first label of the largest area, as the stats-based version chose.
  const int best = static_cast<int>(std::max_element(area.begin() + 1, area.end()) - area.begin());
  const cv::Rect r = cv::boundingRect(labels == best);
  box.x0 = r.x;
  box.y0 = r.y;
  box.x1 = r.x + r.width;
  box.y1 = r.y + r.height;
  box.valid = true;
  return box;
}

}  // namespace lumen
