// lumen: a localisation dataset on disk, as `lumen eval` and `lumen audit` read it:
//   DIR/images/...             the images
//   DIR/labels.csv             image,label                    (one row per image)
//   DIR/boxes.csv              image,label,x0,y0,x1,y1        (pixels of the stored image; several rows per image allowed)
//   DIR/masks/<image stem>.png optional, non-zero = object
// This is the layout of ../shared/data/imagenet-loc-dev.
#pragma once

#include <lumen/metrics.h>

#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

struct Sample {
  std::string name;                    // as in labels.csv
  std::string path;                    // DIR/images/name
  int64_t label = -1;
  std::vector<metrics::GtBox> boxes;   // may be empty
  std::string mask;                    // path, or empty
};

struct Dataset {
  std::string root;
  std::vector<Sample> samples;         // labels.csv order
};

// Throws lumen::Error naming the file and line of anything malformed: a missing file, a bad header, a
// non-numeric field, a box with x1 <= x0, a box for an image not in labels.csv, a missing image.
Dataset load_dataset(const std::string& dir);

}  // namespace lumen
#pragma GCC visibility pop
