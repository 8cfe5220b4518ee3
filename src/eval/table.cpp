// The summary table of `lumen eval`: one row per method, the columns of the metrics that ran.
#include <lumen/report.h>

#include "eval/eval_run.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace lumen::detail {
namespace {

std::string fmt(double v, int digits = 1) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// The columns of the table: key in the summary, header, the metric it needs, digits.
struct Column {
  std::string key, header, metric;
  int digits;
};
const std::vector<Column> kColumns{
    {"loc_top1_error", "top-1 loc err %", "loc", 1},     {"loc_top5_error", "top-5 loc err %", "loc", 1},
    {"maxboxacc", "MaxBoxAcc %", "loc", 1},              {"maxboxacc_v2", "MaxBoxAccV2 %", "loc", 1},
    {"pointing_accuracy", "pointing %", "pointing", 1},  {"deletion_auc", "deletion AUC (lower)", "deletion", 4},
    {"insertion_auc", "insertion AUC (higher)", "insertion", 4}, {"average_drop", "avg drop % (lower)", "drop", 1},
    {"increase_in_confidence", "incr. conf. %", "drop", 1},
    {"cam_mult_change", "cam-mult conf. change % (higher)", "cam-mult", 2}, {"cam_mult_drop", "cam-mult drop % (lower)", "cam-mult", 2},
    {"cam_mult_increase", "cam-mult incr. %", "cam-mult", 1}, {"infidelity", "infidelity (lower)", "infidelity", 6},
    {"sensitivity_max", "sensitivity-max (lower)", "sensitivity", 4},
    {"road", "ROAD (higher)", "road", 4},                {"road_morf", "ROAD MoRF (lower)", "road", 4},
    {"road_lerf", "ROAD LeRF (higher)", "road", 4},
    {"arcc", "ARCC (higher)", "arcc", 4},                {"arcc_coherency", "coherency (higher)", "arcc", 4},
    {"arcc_complexity", "complexity (lower)", "arcc", 4},     {"arcc_road", "ARCC's ROAD, 20-80 % (higher)", "arcc", 4},
    {"sanity_top_spearman", "rank corr., top block random", "sanity", 3},
    {"sanity_half_spearman", "rank corr., top half random", "sanity", 3},
};

// A summary's number, or NaN ("-" in the table) where it has none: an empty shard has no rates.
double number(const nlohmann::json& s, const std::string& key) {
  return s.contains(key) && s[key].is_number() ? s[key].get<double>() : std::nan("");
}

}  // namespace

Table summary_table(const nlohmann::json& summary, const std::vector<std::string>& methods, const EvalOptions& eo, size_t images) {
  std::vector<Column> cols;
  for (const auto& c : kColumns)
    if (eo.has(c.metric)) cols.push_back(c);
  const auto& any = summary[methods.front()];
  std::ostringstream table;
  table << "classification error on " << images << " images: top-1 " << fmt(number(any, "cls_top1_error")) << "%, top-5 "
        << fmt(number(any, "cls_top5_error")) << "%\n\n| method |";
  std::vector<std::string> header{"method", "images", "cls_top1_error", "cls_top5_error", "empty_maps"};
  for (const auto& c : cols) table << " " << c.header << " |", header.push_back(c.key);
  table << "\n|---|";
  for (size_t i = 0; i < cols.size(); ++i) table << "---|";
  table << "\n";
  std::string csv = report::csv_row(header);
  for (const auto& m : methods) {
    const auto& s = summary[m];
    table << "| " << m << " |";
    std::vector<std::string> row{m, s["images"].dump(), fmt(number(s, "cls_top1_error"), 3), fmt(number(s, "cls_top5_error"), 3),
                                 std::to_string(s.value("empty_maps", 0))};
    for (const auto& c : cols) {
      const double v = number(s, c.key);
      std::string cell = fmt(v, c.digits);
      if (c.key == "sanity_half_spearman" && s.value("sanity_flag", false)) cell += " FLAG";
      table << " " << cell << " |";
      row.push_back(fmt(v, 6));
    }
    table << "\n";
    csv += report::csv_row(row);
  }
  Table t{table.str(), csv, ""};
  if (eo.has("loc"))
    t.notes += "Loc errors follow the Grad-CAM paper (class-aware: wrong class or IoU < 0.5); MaxBoxAcc/V2 follow wsolevaluation "
               "(ground-truth class known, best map threshold) and are a different number.\n";
  if (eo.has("sanity"))
    t.notes += "sanity: mean Spearman rank correlation with the trained model's maps after randomising the top block, and the top "
               "half of the blocks; FLAG = still above 0.5 with the top half random (the map ignores what was learned).\n";
  return t;
}

}  // namespace lumen::detail
