#include <lumen/dataset.h>
#include <lumen/error.h>
#include <lumen/files.h>
#include <lumen/image.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace lumen {
namespace fs = std::filesystem;
namespace {

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string field;
  while (std::getline(ss, field, ',')) out.push_back(field);
  if (!line.empty() && line.back() == ',') out.emplace_back();
  for (auto& f : out) {
    while (!f.empty() && (f.back() == '\r' || f.back() == ' ')) f.pop_back();
    while (!f.empty() && f.front() == ' ') f.erase(f.begin());
  }
  return out;
}

double number(const std::string& s, const std::string& where) {
  try {
    size_t used = 0;
    double v = std::stod(s, &used);
    if (used != s.size() || !std::isfinite(v)) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw Error(where + ": '" + s + "' is not a number");
  }
}

// A class index: digits only, parsed as an integer (1e300 is no class).
int64_t class_index(const std::string& s, const std::string& where) {
  const bool digits = !s.empty() && s.size() <= 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits) throw Error(where + ": label '" + s + "' is not a class index (a whole number from 0)");
  return std::stoll(s);
}

// An image's name in a CSV stays inside images/: relative, without "..".
void check_inside(const std::string& name, const std::string& where) {
  const fs::path p(name);
  bool up = false;
  for (const auto& part : p) up = up || part == "..";
  if (name.empty() || p.is_absolute() || up) throw Error(where + ": image name '" + name + "' must be a path inside the images/ folder");
}

// Rows of a CSV file after checking its header.
std::vector<std::pair<int, std::vector<std::string>>> read_csv(const fs::path& path, const std::vector<std::string>& header) {
  if (!path_exists(path.string())) throw Error("dataset file not found: " + path.string());
  std::istringstream in(read_text_file(path.string(), "dataset file"));
  std::string line;
  if (!std::getline(in, line) || split_csv(line) != header) {
    std::string want;
    for (const auto& h : header) want += (want.empty() ? "" : ",") + h;
    throw Error(path.string() + ": the first line must be the header '" + want + "'");
  }
  std::vector<std::pair<int, std::vector<std::string>>> rows;
  for (int n = 2; std::getline(in, line); ++n) {
    if (line.empty() || line == "\r") continue;
    auto f = split_csv(line);
    if (f.size() != header.size())
      throw Error(path.string() + ":" + std::to_string(n) + ": expected " + std::to_string(header.size()) + " fields, found " +
                  std::to_string(f.size()));
    rows.emplace_back(n, std::move(f));
  }
  return rows;
}

// The size an image's header declares, from its first 64 KiB: enough for PNG, GIF, BMP and WebP, and for
// JPEGs unless their metadata is larger (then the size is unknown, 0, and the box goes unchecked). Loading
// a dataset must not read every image whole.
ImageHeader header_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(64 << 10, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  return read_image_header(head);
}

}  // namespace

Dataset load_dataset(const std::string& dir) {
  if (!is_folder(dir)) throw Error("dataset folder not found: " + dir);
  Dataset d;
  d.root = dir;
  std::map<std::string, size_t> index;
  const fs::path labels = fs::path(dir) / "labels.csv";
  for (const auto& [n, f] : read_csv(labels, {"image", "label"})) {
    const std::string where = labels.string() + ":" + std::to_string(n);
    if (index.count(f[0])) throw Error(where + ": image '" + f[0] + "' is listed twice");
    check_inside(f[0], where);
    const int64_t label = class_index(f[1], where);
    Sample s;
    s.name = f[0];
    s.path = (fs::path(dir) / "images" / f[0]).string();
    if (!path_exists(s.path)) throw Error(where + ": image not found: " + s.path);
    s.label = label;
    const fs::path mask = fs::path(dir) / "masks" / (fs::path(f[0]).stem().string() + ".png");
    if (path_exists(mask.string())) s.mask = mask.string();
    index[s.name] = d.samples.size();
    d.samples.push_back(std::move(s));
  }
  if (d.samples.empty()) throw Error(labels.string() + " lists no images");
  const fs::path boxes = fs::path(dir) / "boxes.csv";
  if (path_exists(boxes.string())) {
    std::map<size_t, ImageHeader> sizes;  // per sample, read once however many boxes it has
    for (const auto& [n, f] : read_csv(boxes, {"image", "label", "x0", "y0", "x1", "y1"})) {
      const std::string where = boxes.string() + ":" + std::to_string(n);
      auto it = index.find(f[0]);
      if (it == index.end()) throw Error(where + ": image '" + f[0] + "' is not in labels.csv");
      metrics::GtBox b;
      b.label = class_index(f[1], where);
      b.x0 = number(f[2], where), b.y0 = number(f[3], where), b.x1 = number(f[4], where), b.y1 = number(f[5], where);
      if (!(b.x1 > b.x0 && b.y1 > b.y0 && b.x0 >= 0 && b.y0 >= 0))
        throw Error(where + ": box (" + f[2] + "," + f[3] + ")-(" + f[4] + "," + f[5] + ") is empty or negative");
      auto known = sizes.find(it->second);
      if (known == sizes.end()) known = sizes.emplace(it->second, header_of(d.samples[it->second].path)).first;
      const ImageHeader& size = known->second;
      if (size.width > 0 && (b.x0 >= size.width || b.y0 >= size.height))
        throw Error(where + ": box (" + f[2] + "," + f[3] + ")-(" + f[4] + "," + f[5] + ") lies outside the " + std::to_string(size.width) + "x" +
                    std::to_string(size.height) + " image");
      d.samples[it->second].boxes.push_back(b);
    }
  }
  return d;
}

}  // namespace lumen
