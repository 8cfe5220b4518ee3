// Method settings: the declarations' builders, and turning a given value (JSON or command-line text)
// into a checked one. Every refusal names the flag, because that is what a user typed.
#include <lumen/error.h>

#include "methods/kit/params.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <cstdlib>
#include <sstream>

namespace lumen::detail {
namespace {

std::string show(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string range_text(const Param& p) {
  const bool low = p.min > -1e299, high = p.max < 1e299;
  if (low && high) return " from " + show(p.min) + (p.above_min ? " (exclusive)" : "") + " to " + show(p.max);
  if (low) return std::string(p.above_min ? " above " : " of at least ") + show(p.min);
  if (high) return " of at most " + show(p.max);
  return "";
}

Param declared(std::string name, Param::Kind kind, nlohmann::json fallback, std::string help) {
  Param p;
  p.name = std::move(name);
  p.kind = kind;
  p.fallback = std::move(fallback);
  p.help = std::move(help);
  return p;
}

[[noreturn]] void refuse(const Param& p, const std::string& wanted, const std::string& got) {
  throw Error(flag_of(p.name) + " must be " + wanted + ", got " + got);
}

}  // namespace

std::string flag_of(const std::string& setting) {
  std::string f = "--" + setting;
  for (auto& c : f)
    if (c == '_') c = '-';
  return f;
}

Param integer(std::string name, int64_t fallback, int64_t min, int64_t max, std::string help) {
  Param p = declared(std::move(name), Param::Kind::Integer, fallback, std::move(help));
  p.min = static_cast<double>(min);
  p.max = static_cast<double>(max);
  return p;
}

Param number(std::string name, double fallback, double min, double max, std::string help) {
  Param p = declared(std::move(name), Param::Kind::Number, fallback, std::move(help));
  p.min = min;
  p.max = max;
  return p;
}

Param number32(std::string name, float fallback, double min, double max, std::string help) {
  Param p = number(std::move(name), static_cast<double>(fallback), min, max, std::move(help));
  p.single_precision = true;
  return p;
}

Param text(std::string name, std::string fallback, std::string help) {
  return declared(std::move(name), Param::Kind::Text, std::move(fallback), std::move(help));
}

Param choice(std::string name, std::string fallback, std::vector<std::string> choices, std::string help) {
  Param p = declared(std::move(name), Param::Kind::Choice, std::move(fallback), std::move(help));
  p.choices = std::move(choices);
  return p;
}

Param seed_param() { return integer("seed", 0, 0, INT64_MAX, "seed of random methods and noise references"); }

Param blur_sigma_param() {
  return number32("blur_sigma", 0.05f, 0, 1, "the blur reference input: Gaussian sigma as a share of the input width");
}

Param reference_param(std::string name, std::string fallback, std::string help) {
  Param p = text(name, std::move(fallback), std::move(help));
  p.check = [flag = flag_of(name)](const std::string& v) {
    if (v == "black" || v == "blur" || v == "noise") return;
    if (!v.empty() && v.find_first_not_of("0123456789.") == std::string::npos) {
      char* end = nullptr;
      const double pixel = std::strtod(v.c_str(), &end);
      if (*end != '\0' || pixel < 0 || pixel > 255) throw Error(flag + " must be a pixel value from 0 to 255, got '" + v + "'");
      return;
    }
    std::error_code ec;
    if (!std::filesystem::is_regular_file(v, ec))
      throw Error(flag + " '" + v + "' is neither black, blur, noise, a pixel value 0-255 nor an image file");
  };
  return p;
}

Param baseline_param() {
  return reference_param("baseline", "black",
                         "the reference input of path and Shapley methods (integrated-gradients, deeplift, gradient-shap, feature groups): "
                         "black, blur, noise, a pixel value 0-255 or an image path");
}

Param samples_param() {
  return integer("samples", 50, 1, 100000,
                 "random draws: smoothgrad's noisy copies, gradient-shap's points, shapley-sampling's permutations, "
                 "kernel-shap's and lime's coalitions");
}

Param patch_param() { return integer("patch", 32, 1, 100000, "square side in input pixels: occlusion's patch, the grid of feature-group methods"); }

Param flag(std::string name, std::string help) { return declared(std::move(name), Param::Kind::Flag, false, std::move(help)); }

std::string kind_name(Param::Kind k) {
  switch (k) {
    case Param::Kind::Integer: return "integer";
    case Param::Kind::Number: return "number";
    case Param::Kind::Text: return "text";
    case Param::Kind::Choice: return "choice";
    case Param::Kind::Flag: return "flag";
  }
  return "?";
}

nlohmann::json checked_value(const Param& p, const nlohmann::json& v) {
  switch (p.kind) {
    case Param::Kind::Integer: {
      const bool integral = v.is_number_integer() || (v.is_number_float() && std::isfinite(v.get<double>()) &&
                                                       v.get<double>() == std::floor(v.get<double>()));
      if (!integral) refuse(p, "an integer" + range_text(p), v.dump());
      const double d = v.get<double>();
      if (d < p.min || d > p.max) refuse(p, "an integer" + range_text(p), v.dump());
      return v.is_number_unsigned() ? nlohmann::json(v.get<uint64_t>()) : nlohmann::json(v.get<int64_t>());
    }
    case Param::Kind::Number: {
      if (!v.is_number() || !std::isfinite(v.get<double>())) refuse(p, "a finite number" + range_text(p), v.dump());
      double d = v.get<double>();
      if (p.single_precision) d = static_cast<double>(static_cast<float>(d));
      if (d < p.min || d > p.max || (p.above_min && d == p.min)) refuse(p, "a number" + range_text(p), show(d));
      return d;
    }
    case Param::Kind::Text:
      if (!v.is_string()) refuse(p, "text", v.dump());
      if (p.check) p.check(v.get<std::string>());
      return v;
    case Param::Kind::Choice: {
      std::string list;
      for (const auto& c : p.choices) list += (list.empty() ? "" : ", ") + c;
      if (!v.is_string() || std::find(p.choices.begin(), p.choices.end(), v.get<std::string>()) == p.choices.end())
        refuse(p, "one of " + list, v.dump());
      return v;
    }
    case Param::Kind::Flag:
      if (!v.is_boolean()) refuse(p, "true or false", v.dump());
      return v;
  }
  return v;
}

nlohmann::json parsed_value(const Param& p, const std::string& text) {
  switch (p.kind) {
    case Param::Kind::Integer: {
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || errno == ERANGE) refuse(p, "an integer" + range_text(p), "'" + text + "'");
      return checked_value(p, static_cast<int64_t>(v));
    }
    case Param::Kind::Number: {
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !std::isfinite(v)) refuse(p, "a finite number" + range_text(p), "'" + text + "'");
      return checked_value(p, v);
    }
    case Param::Kind::Flag:
      if (text == "true" || text == "1") return true;
      if (text == "false" || text == "0") return false;
      refuse(p, "true or false", "'" + text + "'");
    case Param::Kind::Text:
    case Param::Kind::Choice: return checked_value(p, text);
  }
  return text;
}

}  // namespace lumen::detail
