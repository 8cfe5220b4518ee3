// The index page of an explain run, made from run.json alone: what a person opens to compare methods.
#include <lumen/report.h>

#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <map>

namespace lumen::report {
namespace {

std::string str(const nlohmann::json& j, const char* key) { return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : ""; }

// A map's row: its image and target (counterfactual and contrast maps are rows of their own).
std::string row_key(const nlohmann::json& m) {
  return str(m, "target") + (m.value("counterfactual", false) ? " (counterfactual)" : "") + (m.value("contrastive", false) ? " (contrast)" : "");
}

std::string target_line(const nlohmann::json& m) {
  const int64_t cls = m.value("class", int64_t{-1});
  std::string line = row_key(m);
  if (cls >= 0) line += ": class " + std::to_string(cls) + (str(m, "label").empty() ? "" : " " + str(m, "label"));
  return line;
}

}  // namespace

std::string run_page(const nlohmann::json& run) {
  Page page("lumen explain");
  const auto& images = run.at("images");
  std::vector<std::string> methods;
  for (const auto& m : run.value("methods", nlohmann::json::array())) methods.push_back(m.get<std::string>());
  std::string about = std::to_string(images.size()) + " image(s); methods " ;
  for (size_t i = 0; i < methods.size(); ++i) about += (i ? ", " : "") + methods[i];
  about += ". Each cell is the overlay (click for the full picture; the white box is the paper's box at " +
           significant(run.value("box_threshold", 0.15)) + " of the map's maximum, from the positive part of signed maps). "
           "Score: the target's value (logit unless the run chose another score).";
  page.paragraph(about);

  // Columns: every (method, layer) in the order the maps come.
  std::vector<std::pair<std::string, std::string>> columns;
  for (const auto& img : images)
    for (const auto& m : img.at("maps")) {
      std::pair<std::string, std::string> c{str(m, "method"), str(m, "layer")};
      if (std::find(columns.begin(), columns.end(), c) == columns.end()) columns.push_back(c);
    }
  std::vector<std::string> header{"image and target"};
  for (const auto& [method, layer] : columns) header.push_back(method + " at " + layer);

  std::vector<std::vector<Page::Cell>> rows;
  for (const auto& img : images) {
    // Rows in the order the targets come; one cell per column.
    std::vector<std::string> keys;
    std::map<std::string, std::map<std::pair<std::string, std::string>, const nlohmann::json*>> cells;
    for (const auto& m : img.at("maps")) {
      const std::string key = row_key(m);
      if (!cells.count(key)) keys.push_back(key);
      cells[key][{str(m, "method"), str(m, "layer")}] = &m;
    }
    const std::string source = str(img, "source");
    std::vector<std::string> predictions;
    for (const auto& p : img.value("top5", nlohmann::json::array()))
      predictions.push_back(std::to_string(p.value("class", int64_t{0})) + " " + str(p, "label") + "  p " + significant(p.value("probability", 0.0)));
    for (size_t k = 0; k < keys.size(); ++k) {
      std::vector<Page::Cell> row;
      const nlohmann::json& first = *cells[keys[k]].begin()->second;
      Page::Cell head;
      head.lines = {std::filesystem::path(source).filename().string(), target_line(first), "score " + significant(first.value("target_value", 0.0))};
      head.title = source;
      if (k == 0) {
        head.lines.push_back("predictions:");
        head.lines.insert(head.lines.end(), predictions.begin(), predictions.end());
      }
      row.push_back(head);
      for (const auto& c : columns) {
        Page::Cell cell;
        auto it = cells[keys[k]].find(c);
        if (it == cells[keys[k]].end()) {
          cell.lines = {"-"};
        } else {
          const auto& m = *it->second;
          const auto& files = m.value("files", nlohmann::json::object());
          cell.image = str(files, "overlay");
          cell.link = cell.image;
          if (m.value("empty", false)) {
            cell.lines.push_back("empty map: no spatial evidence");
          } else {
            const auto& s = m.value("stats", nlohmann::json::object());
            cell.lines.push_back((m.value("signed", false) ? "signed, raw " : "raw ") + significant(s.value("raw_min", 0.0)) + " to " +
                                 significant(s.value("raw_max", 0.0)));
            if (m.contains("box") && m["box"].is_array()) {
              const auto& b = m["box"];
              cell.lines.push_back("box " + std::to_string(b[0].get<int>()) + "," + std::to_string(b[1].get<int>()) + " to " +
                                   std::to_string(b[2].get<int>()) + "," + std::to_string(b[3].get<int>()));
            }
          }
          const auto extra = m.value("extra", nlohmann::json::object());
          if (extra.contains("completeness_gap"))
            cell.lines.push_back("completeness gap " + significant(100.0 * extra["completeness_gap"].get<double>()) + " %");
          cell.title = str(m, "method") + " at " + str(m, "layer") + ", " + target_line(m);
        }
        row.push_back(cell);
      }
      rows.push_back(std::move(row));
    }
  }
  page.table(rows, header);
  return page.html();
}

}  // namespace lumen::report
