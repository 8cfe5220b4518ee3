// lumen: the pages and tables people read (eval, audit, demo). Every page is built through Page, so
// that every name that reaches HTML (image files, labels, method names) is escaped the same way, and
// every CSV row through csv_row.
#pragma once

#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen::report {

// Text for HTML content and attribute values: & < > " ' escaped.
std::string escape(const std::string& text);
// One CSV line (RFC 4180): fields with a comma, quote or line break are quoted, quotes doubled.
std::string csv_row(const std::vector<std::string>& fields);

class Page {
 public:
  explicit Page(const std::string& title);
  Page& heading(const std::string& text, int level = 2);
  Page& paragraph(const std::string& text);
  Page& preformatted(const std::string& text);
  // An image file (relative to the page) with caption lines under it.
  Page& figure(const std::string& image, const std::vector<std::string>& caption);
  // Figures side by side with the text of their row: a table of image files and text cells.
  struct Cell {
    std::string image;                 // an image file, or empty for text
    std::vector<std::string> lines;    // text lines (under the image, if any)
  };
  Page& table(const std::vector<std::vector<Cell>>& rows);
  std::string html() const;

 private:
  std::string title_, body_;
};

}  // namespace lumen::report
#pragma GCC visibility pop
