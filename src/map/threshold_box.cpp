#include <lumen/map.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

namespace lumen {

Box threshold_box(const cv::Mat& map, float fraction, double max) {
  Box box;
  double mx = max;
  if (std::isnan(mx)) cv::minMaxLoc(map, nullptr, &mx);
  if (!(mx > 0)) return box;
  const cv::Mat mask = map >= fraction * mx;
  // Labels only: connectedComponentsWithStats also accumulates centroids in double precision, which
  // tripled the cost of a box. Each region's area and extent then come from one pass over the labels
  // by runs: a thresholded smooth map has long runs of one label, and counting pixel by pixel (or
  // masking the winner for cv::boundingRect) cost more than the labelling itself.
  cv::Mat labels;
  const int n = cv::connectedComponents(mask, labels, 8, CV_32S);
  if (n < 2) return box;
  struct Extent {
    int area = 0, x0 = std::numeric_limits<int>::max(), y0 = 0, x1 = 0, y1 = 0;
  };
  std::vector<Extent> regions(static_cast<size_t>(n));
  for (int y = 0; y < labels.rows; ++y) {
    const int* row = labels.ptr<int>(y);
    for (int x = 0; x < labels.cols;) {
      const int label = row[x];
      int end = x + 1;
      while (end < labels.cols && row[end] == label) ++end;
      if (label) {
        Extent& r = regions[static_cast<size_t>(label)];
        if (r.area == 0) r.y0 = y;  // rows are scanned downwards: a region's first run is its top
        r.area += end - x;
        r.x0 = std::min(r.x0, x);
        r.x1 = std::max(r.x1, end);
        r.y1 = y + 1;
      }
      x = end;
    }
  }
  // The first label of the largest area, as the stats-based version chose.
  const auto best = std::max_element(regions.begin() + 1, regions.end(),
                                     [](const Extent& a, const Extent& b) { return a.area < b.area; });
  box.x0 = best->x0;
  box.y0 = best->y0;
  box.x1 = best->x1;
  box.y1 = best->y1;
  box.valid = true;
  return box;
}


// By hand: OpenCV labels 2-D images only, and the Debian libraries that label volumes (ITK, VTK) are
// far heavier than this one flood fill over a few million voxels at most.
Box threshold_box_3d(const cv::Mat& stacked, int depth, float fraction) {
  Box box;
  if (depth < 1 || stacked.rows % depth != 0) return box;
  double mx;
  cv::minMaxLoc(stacked, nullptr, &mx);
  if (!(mx > 0)) return box;
  const int h = stacked.rows / depth, w = stacked.cols;
  const cv::Mat map = stacked.isContinuous() ? stacked : stacked.clone();
  const float* v = map.ptr<float>();
  const float cut = static_cast<float>(fraction * mx);
  const size_t total = map.total();
  std::vector<int> label(total, 0);
  std::vector<size_t> stack;
  int best_area = 0;
  Box region;
  int next = 0;
  for (size_t start = 0; start < total; ++start) {
    if (label[start] || !(v[start] >= cut)) continue;
    label[start] = ++next;
    stack.assign(1, start);
    Box b;
    b.x0 = b.y0 = b.z0 = 1 << 30;
    int area = 0;
    while (!stack.empty()) {
      const size_t i = stack.back();
      stack.pop_back();
      ++area;
      const int z = static_cast<int>(i / static_cast<size_t>(h * w)), y = static_cast<int>(i / static_cast<size_t>(w)) % h,
                x = static_cast<int>(i % static_cast<size_t>(w));
      b.x0 = std::min(b.x0, x), b.y0 = std::min(b.y0, y), b.z0 = std::min(b.z0, z);
      b.x1 = std::max(b.x1, x + 1), b.y1 = std::max(b.y1, y + 1), b.z1 = std::max(b.z1, z + 1);
      for (int dz = -1; dz <= 1; ++dz)
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            const int nz = z + dz, ny = y + dy, nx = x + dx;
            if (nz < 0 || ny < 0 || nx < 0 || nz >= depth || ny >= h || nx >= w) continue;
            const size_t j = (static_cast<size_t>(nz) * h + ny) * w + nx;
            if (!label[j] && v[j] >= cut) {
              label[j] = next;
              stack.push_back(j);
            }
          }
    }
    if (area > best_area) best_area = area, region = b;  // the first of the largest, as in 2-D
  }
  if (best_area == 0) return box;
  region.valid = true;
  return region;
}

}  // namespace lumen
