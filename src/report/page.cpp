// HTML by hand: a page here is a title, headings, paragraphs, figures and a table, and the one thing
// that must never be forgotten is escaping, which this class does for every piece of text it takes.
// (No Debian template library fits so small a need without bringing its own dependencies.)
#include <lumen/report.h>
#include <lumen/version.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace lumen::report {

std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string significant(double value, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*g", digits, value);
  return buf;
}

std::string decimals(double value, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", digits, value);
  return buf;
}

std::string csv_row(const std::vector<std::string>& fields) {
  std::string line;
  for (size_t i = 0; i < fields.size(); ++i) {
    const std::string& f = fields[i];
    if (i) line += ',';
    if (f.find_first_of(",\"\r\n") == std::string::npos) {
      line += f;
      continue;
    }
    line += '"';
    for (char c : f) line += c == '"' ? std::string("\"\"") : std::string(1, c);
    line += '"';
  }
  return line + "\n";
}

Page::Page(const std::string& title) : title_(title) { heading(title, 1); }

Page& Page::heading(const std::string& text, int level) {
  const std::string tag = "h" + std::to_string(std::max(1, std::min(level, 6)));
  body_ += "<" + tag + ">" + escape(text) + "</" + tag + ">\n";
  return *this;
}

Page& Page::paragraph(const std::string& text) {
  body_ += "<p>" + escape(text) + "</p>\n";
  return *this;
}

Page& Page::preformatted(const std::string& text) {
  body_ += "<pre>" + escape(text) + "</pre>\n";
  return *this;
}

namespace {

std::string lines_html(const std::vector<std::string>& lines) {
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) out += (i ? "<br>" : "") + escape(lines[i]);
  return out;
}

}  // namespace

Page& Page::figure(const std::string& image, const std::vector<std::string>& caption) {
  body_ += "<figure><img src=\"" + escape(image) + "\" alt=\"" + escape(caption.empty() ? image : caption.front()) + "\"><figcaption>" +
           lines_html(caption) + "</figcaption></figure>\n";
  return *this;
}

Page& Page::table(const std::vector<std::vector<Cell>>& rows, const std::vector<std::string>& header) {
  body_ += "<table>\n";
  if (!header.empty()) {
    body_ += "<thead><tr>";
    for (const auto& h : header) body_ += "<th>" + escape(h) + "</th>";
    body_ += "</tr></thead>\n";
  }
  body_ += "<tbody>\n";
  for (const auto& row : rows) {
    body_ += "<tr>";
    for (const auto& cell : row) {
      body_ += cell.title.empty() ? "<td>" : "<td title=\"" + escape(cell.title) + "\">";
      if (!cell.image.empty()) {
        const std::string img = "<img src=\"" + escape(cell.image) + "\" alt=\"" + escape(cell.lines.empty() ? cell.image : cell.lines.front()) + "\">";
        body_ += cell.link.empty() ? img : "<a href=\"" + escape(cell.link) + "\">" + img + "</a>";
        if (!cell.lines.empty()) body_ += "<br>";
      }
      body_ += lines_html(cell.lines) + "</td>";
    }
    body_ += "</tr>\n";
  }
  body_ += "</tbody></table>\n";
  return *this;
}

Page& Page::markdown_table(const std::string& markdown) {
  std::vector<std::vector<std::string>> rows;
  std::string line;
  std::istringstream in(markdown);
  while (std::getline(in, line)) {
    if (line.size() < 2 || line[0] != '|' || line.rfind("|---", 0) == 0) continue;
    std::vector<std::string> cells;
    size_t start = 1;
    for (size_t bar; (bar = line.find('|', start)) != std::string::npos; start = bar + 1) {
      const std::string cell = line.substr(start, bar - start);
      const auto a = cell.find_first_not_of(' '), b = cell.find_last_not_of(' ');
      cells.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
    }
    rows.push_back(cells);
  }
  if (rows.empty()) return *this;
  std::vector<std::vector<Cell>> cells;
  for (size_t r = 1; r < rows.size(); ++r) {
    std::vector<Cell> row;
    for (const auto& c : rows[r]) row.push_back({"", {c}, "", ""});
    cells.push_back(row);
  }
  return table(cells, rows[0]);
}

Page& Page::details(const std::string& summary, const std::vector<std::vector<Cell>>& rows, const std::vector<std::string>& header) {
  body_ += "<details><summary>" + escape(summary) + "</summary>\n";
  table(rows, header);
  body_ += "</details>\n";
  return *this;
}

Page& Page::svg(const std::string& markup) {
  body_ += "<div class=\"plot\">" + markup + "</div>\n";
  return *this;
}

std::string Page::html() const {
  // Everything inline: a page works from a file:// URL, offline.
  return "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>" +
         escape(title_) +
         "</title><style>"
         "body{font-family:sans-serif;margin:16px;max-width:1400px}"
         "figure{display:inline-block;margin:4px;vertical-align:top;width:260px}"
         "figure img{width:256px}figcaption{font-size:12px;overflow-wrap:anywhere}"
         "table{border-collapse:collapse;margin:8px 0}"
         "th,td{padding:4px 8px;vertical-align:top;border-bottom:1px solid #ddd;font-size:13px;overflow-wrap:anywhere}"
         "th{background:#f3f3f3;text-align:left}td img{width:256px;display:block}"
         "pre,p{white-space:pre-wrap;overflow-wrap:anywhere}.plot svg{max-width:100%;height:auto}"
         "</style></head><body>\n" +
         body_ + "<footer><small>made by lumen " + escape(version()) + "</small></footer></body></html>\n";
}

}  // namespace lumen::report
