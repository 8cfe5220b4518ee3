// HTML by hand: a page here is a title, headings, paragraphs, figures and a table, and the one thing
// that must never be forgotten is escaping, which this class does for every piece of text it takes.
// (No Debian template library fits so small a need without bringing its own dependencies.)
#include <lumen/report.h>
#include <lumen/version.h>

#include <algorithm>
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

Page& Page::table(const std::vector<std::vector<Cell>>& rows) {
  body_ += "<table>\n";
  for (const auto& row : rows) {
    body_ += "<tr>";
    for (const auto& cell : row) {
      body_ += "<td>";
      if (!cell.image.empty()) body_ += "<img src=\"" + escape(cell.image) + "\" alt=\"" + escape(cell.image) + "\">" + (cell.lines.empty() ? "" : "<br>");
      body_ += lines_html(cell.lines) + "</td>";
    }
    body_ += "</tr>\n";
  }
  body_ += "</table>\n";
  return *this;
}

std::string Page::html() const {
  return "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" + escape(title_) +
         "</title><style>body{font-family:sans-serif}figure{display:inline-block;margin:4px;vertical-align:top}"
         "figure img{width:176px}figcaption{font-size:11px}td{padding:6px;vertical-align:middle}pre{white-space:pre-wrap}</style></head><body>\n" +
         body_ + "<footer><small>made by lumen " + escape(version()) + "</small></footer></body></html>\n";
}

}  // namespace lumen::report
