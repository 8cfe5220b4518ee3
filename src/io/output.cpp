#include <lumen/error.h>
#include <lumen/files.h>
#include <lumen/output.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <unistd.h>

namespace lumen {
namespace fs = std::filesystem;

// .npy by hand: the format is a 10-byte preamble plus a Python-dict header (NumPy's NEP 1); no Debian
// C++ package writes it, and OpenCV's FileStorage writes its own YAML/XML formats instead.
std::string encode_npy(const cv::Mat& map) {
  if (map.depth() != CV_32F || map.dims != 2) throw Error("npy export needs a 2-D float32 map");
  cv::Mat m = map.isContinuous() ? map : map.clone();
  std::string shape = std::to_string(m.rows) + ", " + std::to_string(m.cols);
  if (m.channels() > 1) shape += ", " + std::to_string(m.channels());
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
  // Preamble (10 bytes) + header + '\n' must be a multiple of 64.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(m.data), m.total() * m.channels() * sizeof(float));
  return out;
}

cv::Mat decode_npy(const std::string& bytes) {
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw Error("not a .npy file");
  size_t hlen = 0, start = 0;
  if (bytes[6] == 1) {
    hlen = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    start = 10;
  } else if (bytes[6] == 2 || bytes[6] == 3) {
    if (bytes.size() < 12) throw Error("truncated .npy header");
    for (int i = 0; i < 4; ++i) hlen |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    start = 12;
  } else {
    throw Error("unsupported .npy version");
  }
  if (start + hlen > bytes.size()) throw Error("truncated .npy header");
  std::string header = bytes.substr(start, hlen);
  if (header.find("'<f4'") == std::string::npos) throw Error(".npy is not little-endian float32");
  if (header.find("'fortran_order': False") == std::string::npos) throw Error(".npy in Fortran order is not supported");
  auto lp = header.find('('), rp = header.find(')');
  if (lp == std::string::npos || rp == std::string::npos) throw Error(".npy header has no shape");
  std::vector<long long> shape;
  std::stringstream ss(header.substr(lp + 1, rp - lp - 1));
  for (std::string item; std::getline(ss, item, ',');) {
    const auto first = item.find_first_not_of(' '), last = item.find_last_not_of(' ');
    if (first == std::string::npos) continue;
    const std::string digits = item.substr(first, last - first + 1);
    // Dimensions are whole numbers small enough that their product cannot overflow below.
    if (digits.empty() || digits.size() > 10 || digits.find_first_not_of("0123456789") != std::string::npos)
      throw Error(".npy shape holds '" + digits + "', not a dimension");
    shape.push_back(std::stoll(digits));
    if (shape.back() > (1LL << 31)) throw Error(".npy dimension " + digits + " is too large");
  }
  if (shape.size() == 1) shape.insert(shape.begin(), 1);
  if (shape.size() == 2) shape.push_back(1);
  if (shape.size() == 3 && (shape[0] == 0 || shape[1] == 0)) throw Error(".npy array is empty");
  if (shape.size() != 3 || shape[0] < 0 || shape[1] < 0 || shape[2] < 1 || shape[2] > 4 ||
      static_cast<double>(shape[0]) * static_cast<double>(shape[1]) * static_cast<double>(shape[2]) > static_cast<double>(1LL << 31))
    throw Error(".npy must hold a 2-D array (or H x W x C with C <= 4) of sane size");
  size_t data = start + hlen, need = static_cast<size_t>(shape[0] * shape[1] * shape[2]) * sizeof(float);
  if (bytes.size() - data != need) throw Error(".npy data size does not match its shape");
  cv::Mat m(static_cast<int>(shape[0]), static_cast<int>(shape[1]), CV_32FC(static_cast<int>(shape[2])));
  std::memcpy(m.data, bytes.data() + data, need);
  return m;
}

cv::Mat read_npy(const std::string& path) {
  // Its header says its size; a file far beyond any map lumen would read is refused unread.
  if (require_regular_file(path, ".npy file") > (2ull << 30)) throw Error(path + ": .npy file over 2 GiB");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return decode_npy(ss.str());
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

Colormap parse_colormap(const std::string& name) {
  if (name == "jet") return Colormap::Jet;
  if (name == "turbo") return Colormap::Turbo;
  throw Error("unknown colour map '" + name + "' (expected jet or turbo)");
}

cv::Mat heatmap(const cv::Mat& normalized, Colormap cmap) {
  cv::Mat u8, out;
  normalized.convertTo(u8, CV_8U, 255.0);
  cv::applyColorMap(u8, out, cmap == Colormap::Jet ? cv::COLORMAP_JET : cv::COLORMAP_TURBO);
  return out;
}

cv::Mat signed_picture(const cv::Mat& map) {
  double lo, hi;
  cv::minMaxLoc(map, &lo, &hi);
  double scale = std::max(std::abs(lo), std::abs(hi));
  cv::Mat out;
  // 0 -> mid grey, +max|m| -> white, -max|m| -> black.
  map.convertTo(out, CV_8U, scale > 0 ? 127.5 / scale : 0.0, 127.5);
  return out;
}

cv::Mat attribution_picture(const cv::Mat& attribution, cv::Size size, bool rgb_order) {
  cv::Mat resized;
  cv::resize(attribution, resized, size, 0, 0, cv::INTER_LINEAR);
  std::vector<cv::Mat> planes;
  cv::split(resized, planes);
  double scale = 0;
  for (const auto& p : planes) scale = std::max(scale, cv::norm(p, cv::NORM_INF));
  cv::Mat merged, out;
  if (rgb_order && planes.size() == 3) std::swap(planes[0], planes[2]);
  cv::merge(planes, merged);
  merged.convertTo(out, CV_8U, scale > 0 ? 127.5 / scale : 0.0, 127.5);
  return out;
}

cv::Mat overlay(const cv::Mat& bgr, const cv::Mat& normalized, Colormap cmap, float alpha) {
  cv::Mat heat = heatmap(normalized, cmap), out;
  cv::addWeighted(heat, alpha, bgr, 1.0 - alpha, 0.0, out);
  return out;
}

void draw_box(cv::Mat& bgr, const Box& box, const cv::Scalar& colour, int thickness) {
  if (!box.valid) return;
  cv::rectangle(bgr, cv::Point(box.x0, box.y0), cv::Point(box.x1 - 1, box.y1 - 1), colour, thickness);
}

std::string encode_png(const cv::Mat& image) {
  std::vector<uchar> buf;
  if (!cv::imencode(".png", image, buf)) throw Error("PNG encoding failed");
  return std::string(buf.begin(), buf.end());
}

std::string safe_name(const std::string& s) {
  std::string out;
  for (char c : s) out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ? c : '_');
  return out;
}

OutputDir::OutputDir(const std::string& dir) : dir_(dir) {
  std::error_code ec;
  created_ = !fs::exists(dir, ec);
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) throw Error("cannot create output directory " + dir + ": " + (ec ? ec.message() : "not a directory"));
  std::random_device rd;
  staging_ = (fs::path(dir) / (".lumen-staging-" + std::to_string(rd()))).string();
  fs::create_directory(staging_, ec);
  if (ec) throw Error("output directory " + dir + " is not writable: " + ec.message());
}

OutputDir::~OutputDir() {
  std::error_code ec;
  fs::remove_all(staging_, ec);
  // A run that failed leaves no folder it made behind (fs::remove only removes an empty one).
  if (!committed_ && created_) fs::remove(dir_, ec);
}

void OutputDir::write(const std::string& name, const std::string& bytes) {
  if (committed_) throw Error("output already committed");
  if (!written_.insert(name).second) throw Error("two outputs of this run would be written to the same file " + name);
  fs::path p = fs::path(staging_) / name;
  std::error_code ec;
  fs::create_directories(p.parent_path(), ec);
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw Error("cannot write " + (fs::path(dir_) / name).string());
  names_.push_back(name);
}

void OutputDir::commit() {
  // Each rename is atomic on one file system, and nothing is renamed before every file was written.
  // Files of an earlier run that would be replaced are set aside first, so that a failure part-way puts
  // the folder back as it was.
  const fs::path aside = fs::path(staging_) / ".replaced";
  std::vector<std::pair<fs::path, bool>> moved;  // target, whether an earlier file was set aside
  auto roll_back = [&] {
    std::error_code ignore;
    for (auto it = moved.rbegin(); it != moved.rend(); ++it) {
      fs::remove(it->first, ignore);
      if (it->second) fs::rename(aside / fs::relative(it->first, dir_, ignore), it->first, ignore);
    }
  };
  for (const auto& name : names_) {
    const fs::path target = fs::path(dir_) / name;
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    bool replaced = false;
    if (fs::exists(target, ec)) {
      fs::create_directories((aside / name).parent_path(), ec);
      fs::rename(target, aside / name, ec);
      replaced = !ec;
    }
    if (!ec) fs::rename(fs::path(staging_) / name, target, ec);
    if (ec) {
      if (replaced) fs::rename(aside / name, target, ec);
      roll_back();
      throw Error("cannot move " + name + " into " + dir_ + ": " + ec.message() + " (nothing of this run was kept)");
    }
    moved.emplace_back(target, replaced);
  }
  committed_ = true;
}

nlohmann::json map_json(const Map& m) {
  nlohmann::json j;
  j["method"] = m.method;
  j["layer"] = m.layer;
  j["target"] = m.target;
  j["class"] = m.cls;
  j["label"] = m.label;
  j["counterfactual"] = m.counterfactual;
  if (m.contrastive) j["contrastive"] = true;
  j["target_value"] = m.target_value;
  j["empty"] = m.empty;
  j["signed"] = m.is_signed;
  if (!m.extra.empty()) j["extra"] = m.extra;
  j["raw_shape"] = {m.raw.rows, m.raw.cols};
  j["stats"] = {{"raw_min", m.stats.min}, {"raw_max", m.stats.max}, {"raw_mean", m.stats.mean},
                {"peak", {m.stats.peak_x, m.stats.peak_y}}};
  if (m.box.valid) {
    j["box"] = {m.box.x0, m.box.y0, m.box.x1, m.box.y1};
  } else {
    j["box"] = nullptr;
  }
  return j;
}

std::string map_file_stem(const std::string& image_stem, const Map& m) {
  std::string target = m.target;
  if (target.rfind("top-", 0) == 0) target = "top" + target.substr(4);
  if (target.rfind("class ", 0) == 0) target = "c" + target.substr(6);
  return safe_name(image_stem + "." + m.method + "." + m.layer + "." + target + (m.counterfactual ? ".cf" : "") + (m.contrastive ? ".contrast" : ""));
}

nlohmann::json write_maps(OutputDir& out, const std::vector<cv::Mat>& images, const std::vector<ImageExplanation>& explained,
                          const std::vector<std::string>& stems, const RenderOptions& options) {
  nlohmann::json entries = run_json(explained, nlohmann::json::object())["images"];
  for (size_t i = 0; i < explained.size(); ++i) {
    for (size_t k = 0; k < explained[i].maps.size(); ++k) {
      const Map& m = explained[i].maps[k];
      const std::string base = map_file_stem(stems.at(i), m);
      cv::Mat over = overlay(images[i], m.normalized, options.colormap, options.alpha);
      if (options.draw_box) draw_box(over, m.box, cv::Scalar(255, 255, 255), 2);
      out.write(base + ".heat.png", encode_png(m.is_signed ? signed_picture(m.upsampled) : heatmap(m.normalized, options.colormap)));
      out.write(base + ".overlay.png", encode_png(over));
      out.write(base + ".npy", encode_npy(m.normalized));
      out.write(base + ".raw.npy", encode_npy(m.raw));
      entries[i]["maps"][k]["files"] = {{"heat", base + ".heat.png"}, {"overlay", base + ".overlay.png"},
                                        {"map", base + ".npy"}, {"raw", base + ".raw.npy"}};
      if (!m.attribution.empty()) {
        out.write(base + ".attr.npy", encode_npy(m.attribution));
        out.write(base + ".rgb.png", encode_png(attribution_picture(m.attribution, images[i].size(), options.rgb_input)));
        entries[i]["maps"][k]["files"]["attribution"] = base + ".attr.npy";
        entries[i]["maps"][k]["files"]["rgb"] = base + ".rgb.png";
      }
    }
  }
  return entries;
}

nlohmann::json run_json(const std::vector<ImageExplanation>& images, const nlohmann::json& run_info) {
  nlohmann::json j = run_info;
  j["images"] = nlohmann::json::array();
  for (const auto& img : images) {
    nlohmann::json ji;
    ji["source"] = img.source;
    ji["width"] = img.width;
    ji["height"] = img.height;
    ji["top5"] = nlohmann::json::array();
    for (const auto& p : img.top)
      ji["top5"].push_back({{"class", p.cls}, {"label", p.label}, {"logit", p.logit}, {"probability", p.probability}});
    ji["maps"] = nlohmann::json::array();
    for (const auto& m : img.maps) ji["maps"].push_back(map_json(m));
    j["images"].push_back(std::move(ji));
  }
  return j;
}

}  // namespace lumen

namespace lumen {

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const fs::path target(path);
  const fs::path tmp = target.parent_path() / ("." + target.filename().string() + ".tmp" + std::to_string(::getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw Error("cannot write " + path);
    }
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error("cannot write " + path + ": " + ec.message());
  }
}

}  // namespace lumen
