// lumen: the pages and tables people read (eval, audit, demo). Every page is built through Page, so
// that every name that reaches HTML (image files, labels, method names) is escaped the same way, and
// every CSV row through csv_row.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen::report {

// Text for HTML content and attribute values: & < > " ' escaped.
std::string escape(const std::string& text);
// Numbers as pages and pictures print them: `significant` digits ("0.951", "1.52e-05"), or a fixed
// number of decimals ("0.500").
std::string significant(double value, int digits = 3);
std::string decimals(double value, int digits = 3);
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
    std::string link;                  // where clicking the image goes (e.g. the full-size picture)
    std::string title;                 // text shown on hover (the full label when `lines` shortens it)
  };
  // A table with a header row (empty: none); text in cells is escaped, long text wraps.
  Page& table(const std::vector<std::vector<Cell>>& rows, const std::vector<std::string>& header = {});
  // A Markdown table (| a | b | rows, the |---| line skipped) as an HTML table with its header row.
  Page& markdown_table(const std::string& markdown);
  // The same table folded away under a one-line summary (long tables: per class).
  Page& details(const std::string& summary, const std::vector<std::vector<Cell>>& rows, const std::vector<std::string>& header = {});
  // Raw SVG markup made by svg_plot, placed as it is.
  Page& svg(const std::string& markup);
  std::string html() const;

 private:
  std::string title_, body_;
};

// A line plot as inline SVG (no script, no network: it shows from a file:// URL). Each series is a line,
// with an optional band (low..high, drawn translucent) around it; the legend names the series.
struct Series {
  std::string name;
  std::vector<double> x, y;
  std::vector<double> low, high;  // empty: no band
};
struct Plot {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  double y_min = 0, y_max = 0;    // equal: from the data
  int width = 640, height = 360;
};
std::string svg_plot(const Plot& plot);

// The page of one `lumen explain` run, from its run.json document: one row per image and target, one
// column per method and layer, each cell the overlay (linking to the full picture) with what was
// measured on it, and the image's predictions.
std::string run_page(const nlohmann::json& run);

}  // namespace lumen::report
#pragma GCC visibility pop
