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
std::string encode_npy(const cv::Mat& map, int depth) {
  if (map.depth() != CV_32F || map.dims != 2) throw Error("npy export needs a 2-D float32 map");
  if (depth > 0 && map.rows % depth != 0) throw Error("npy export: a volume's slices must stack evenly");
  cv::Mat m = map.isContinuous() ? map : map.clone();
  std::string shape = depth > 0 ? std::to_string(depth) + ", " + std::to_string(m.rows / depth) + ", " + std::to_string(m.cols)
                                : std::to_string(m.rows) + ", " + std::to_string(m.cols);
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

NpyArray decode_npy_array(const std::string& bytes) {
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
  if (lp == std::string::npos || rp == std::string::npos || rp < lp) throw Error(".npy header has no shape");
  NpyArray out;
  std::stringstream ss(header.substr(lp + 1, rp - lp - 1));
  double count = 1;
  for (std::string item; std::getline(ss, item, ',');) {
    const auto first = item.find_first_not_of(' '), last = item.find_last_not_of(' ');
    if (first == std::string::npos) continue;
    const std::string digits = item.substr(first, last - first + 1);
    // Dimensions are whole numbers small enough that their product cannot overflow below.
    if (digits.empty() || digits.size() > 10 || digits.find_first_not_of("0123456789") != std::string::npos)
      throw Error(".npy shape holds '" + digits + "', not a dimension");
    out.shape.push_back(std::stoll(digits));
    if (out.shape.back() > (1LL << 31)) throw Error(".npy dimension " + digits + " is too large");
    if (out.shape.size() > 8) throw Error(".npy has more than 8 dimensions");
    count *= static_cast<double>(out.shape.back());
  }
  if (out.shape.empty()) throw Error(".npy holds a scalar, not an array");
  if (count > static_cast<double>(1LL << 31)) throw Error(".npy array is too large");
  if (count == 0) throw Error(".npy array is empty");
  const size_t data = start + hlen, need = static_cast<size_t>(count) * sizeof(float);
  if (bytes.size() - data != need) throw Error(".npy data size does not match its shape");
  out.data.resize(static_cast<size_t>(count));
  std::memcpy(out.data.data(), bytes.data() + data, need);
  return out;
}

cv::Mat decode_npy(const std::string& bytes) {
  NpyArray a = decode_npy_array(bytes);
  auto shape = a.shape;
  if (shape.size() == 1) shape.insert(shape.begin(), 1);
  if (shape.size() == 2) shape.push_back(1);
  if (shape.size() != 3 || shape[2] > 4) throw Error(".npy must hold a 2-D array (or H x W x C with C <= 4) of sane size");
  cv::Mat m(static_cast<int>(shape[0]), static_cast<int>(shape[1]), CV_32FC(static_cast<int>(shape[2])));
  std::memcpy(m.data, a.data.data(), a.data.size() * sizeof(float));
  return m;
}

std::string read_npy_bytes(const std::string& path) {
  // Its header says its size; a file far beyond any map lumen would read is refused unread.
  if (require_regular_file(path, ".npy file") > (2ull << 30)) throw Error(path + ": .npy file over 2 GiB");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

cv::Mat read_npy(const std::string& path) {
  const std::string bytes = read_npy_bytes(path);
  try {
    return decode_npy(bytes);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
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
  // A new folder is staged beside where it will be (in its nearest existing ancestor, on the same file
  // system) and renamed into place whole by commit(): until the run succeeds there is no folder, even
  // if the process is killed. An existing folder gets its staging folder inside.
  fs::path home = fs::path(dir);
  if (created_) {
    home = fs::absolute(home, ec).lexically_normal();
    if (home.filename().empty()) home = home.parent_path();  // "out/"
    home = home.parent_path();
    while (!home.empty() && !fs::exists(home, ec) && home != home.parent_path()) home = home.parent_path();
  }
  if (!fs::is_directory(home, ec)) throw Error("cannot create output directory " + dir + ": " + home.string() + " is not a directory");
  std::random_device rd;
  staging_ = (home / (".lumen-staging-" + std::to_string(rd()))).string();
  fs::create_directory(staging_, ec);
  if (ec) throw Error((created_ ? "cannot create output directory " : "output directory ") + dir + (created_ ? ": " : " is not writable: ") + ec.message());
}

OutputDir::~OutputDir() {
  std::error_code ec;
  fs::remove_all(staging_, ec);
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
  if (created_ && !path_exists(dir_)) {
    // The whole folder at once (its parents made first; they hold nothing of this run).
    std::error_code ec;
    fs::path target = fs::absolute(fs::path(dir_), ec).lexically_normal();
    if (target.filename().empty()) target = target.parent_path();
    fs::create_directories(target.parent_path(), ec);
    fs::rename(staging_, target, ec);
    if (ec) throw Error("cannot create output directory " + dir_ + ": " + ec.message());
    committed_ = true;
    return;
  }
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
  if (!m.detections.empty()) {
    j["detections"] = nlohmann::json::array();
    for (const auto& d : m.detections)
      j["detections"].push_back({{"box", {d.x0, d.y0, d.x1, d.y1}}, {"class", d.cls}, {"label", d.label}, {"score", d.score}});
  }
  if (!m.parts.empty()) {
    j["parts"] = nlohmann::json::array();
    for (size_t p = 0; p < m.parts.size(); ++p) {
      nlohmann::json top = nlohmann::json::array();
      for (const auto& t : m.parts[p].top) top.push_back({{"class", t.cls}, {"label", t.label}, {"logit", t.logit}, {"probability", t.probability}});
      j["parts"].push_back({{"index", p}, {"top", top}});
    }
  }
  const bool volume = m.depth > 0;
  j["raw_shape"] = volume ? nlohmann::json{m.raw_depth, m.raw.rows / std::max(1, m.raw_depth), m.raw.cols} : nlohmann::json{m.raw.rows, m.raw.cols};
  j["stats"] = {{"raw_min", m.stats.min}, {"raw_max", m.stats.max}, {"raw_mean", m.stats.mean},
                {"peak", volume ? nlohmann::json{m.stats.peak_x, m.stats.peak_y, m.stats.peak_z} : nlohmann::json{m.stats.peak_x, m.stats.peak_y}}};
  if (m.box.valid && volume) {
    j["box"] = {m.box.x0, m.box.y0, m.box.z0, m.box.x1, m.box.y1, m.box.z1};
  } else if (m.box.valid) {
    j["box"] = {m.box.x0, m.box.y0, m.box.x1, m.box.y1};
  } else {
    j["box"] = nullptr;
  }
  return j;
}

std::string map_file_stem(const std::string& image_stem, const Map& m) {
  // The class id, so that a file says which class it explains (its rank is in run.json); a custom
  // target's name otherwise.
  const std::string target = m.cls >= 0 ? std::to_string(m.cls) : m.target;
  return safe_name(image_stem + "." + m.method + "." + m.layer + "." + target + (m.counterfactual ? ".cf" : "") + (m.contrastive ? ".contrast" : ""));
}

nlohmann::json write_maps(OutputDir& out, const std::vector<cv::Mat>& images, const std::vector<ImageExplanation>& explained,
                          const std::vector<std::string>& stems, const RenderOptions& options) {
  nlohmann::json entries = run_json(explained, nlohmann::json::object())["images"];
  for (size_t i = 0; i < explained.size(); ++i) {
    for (size_t k = 0; k < explained[i].maps.size(); ++k) {
      const Map& m = explained[i].maps[k];
      const std::string base = map_file_stem(stems.at(i), m);
      if (m.depth > 0) {  // a volume: its slices side by side, and the maps as (D, H, W) arrays
        out.write(base + ".heat.png", encode_png(slices_picture(cv::Mat(), m, explained[i], options)));
        out.write(base + ".overlay.png", encode_png(slices_picture(images[i], m, explained[i], options)));
      } else {
        out.write(base + ".heat.png", encode_png(heat_picture(m, explained[i], options)));
        out.write(base + ".overlay.png", encode_png(overlay_picture(images[i], m, explained[i], options)));
      }
      out.write(base + ".npy", encode_npy(m.normalized, m.depth));
      out.write(base + ".raw.npy", encode_npy(m.raw, m.raw_depth));
      entries[i]["maps"][k]["files"] = {{"heat", base + ".heat.png"}, {"overlay", base + ".overlay.png"},
                                        {"map", base + ".npy"}, {"raw", base + ".raw.npy"}};
      if (!m.parts.empty()) {
        std::vector<cv::Mat> planes;
        for (const auto& p : m.parts) planes.push_back(p.normalized);
        cv::Mat stacked;
        cv::merge(planes, stacked);
        out.write(base + ".parts.npy", encode_npy(stacked, m.depth));
        out.write(base + ".parts.png", encode_png(parts_picture(images[i], m, explained[i], options)));
        entries[i]["maps"][k]["files"]["parts_map"] = base + ".parts.npy";
        entries[i]["maps"][k]["files"]["parts"] = base + ".parts.png";
      }
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
    if (img.depth > 0) ji["depth"] = img.depth;
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
