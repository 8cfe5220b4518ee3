// The registry: every method file of src/methods/, found by CMake (build/generated/methods/registered.inc
// lists them by file name), so that adding a method edits no list. Also the public catalogue
// (lumen/methods.h) and settings' resolution, both read off the methods' own declarations.
#include <lumen/error.h>
#include <lumen/methods.h>

#include "methods/kit/method.h"
#include "methods/kit/params.h"

#include <algorithm>
#include <set>

#define LUMEN_REGISTERED(id)              \
  namespace lumen::detail::registered {   \
  ::lumen::detail::Method id();           \
  }
#include "methods/registered.inc"
#undef LUMEN_REGISTERED

namespace lumen::detail {
namespace {

bool same_declaration(const Param& a, const Param& b) {
  return a.kind == b.kind && a.fallback == b.fallback && a.help == b.help && a.min == b.min && a.max == b.max &&
         a.above_min == b.above_min && a.single_precision == b.single_precision && a.choices == b.choices;
}

// Methods that share a setting ("seed") must declare it alike: one flag, one default, one meaning.
void check_registry(const std::vector<Method>& all) {
  std::set<std::string> names;
  std::map<std::string, const Param*> params;
  for (const auto& m : all) {
    if (!names.insert(m.name).second) throw Error("internal: two methods are named '" + m.name + "'");
    for (const auto& p : m.params) {
      auto [it, fresh] = params.emplace(p.name, &p);
      if (!fresh && !same_declaration(*it->second, p))
        throw Error("internal: method '" + m.name + "' declares setting '" + p.name + "' unlike another method");
    }
  }
}

const Param* find_param(const std::string& name) {
  for (const auto& m : methods())
    for (const auto& p : m.params)
      if (p.name == name) return &p;
  return nullptr;
}

std::string known_settings() {
  std::set<std::string> names;
  for (const auto& m : methods())
    for (const auto& p : m.params) names.insert(p.name);
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  return list;
}

const Param& param(const std::string& name) {
  if (const Param* p = find_param(name)) return *p;
  throw Error("unknown setting '" + name + "' (settings: " + known_settings() + ")");
}

std::string joined(const std::vector<const Method*>& ms) {
  std::string s;
  for (const auto* m : ms) s += (s.empty() ? "" : ", ") + m->name;
  return s;
}

std::string family_name(Family f) {
  switch (f) {
    case Family::Cam: return "cam";
    case Family::Attention: return "attention";
    case Family::Perturbation: return "perturbation";
    case Family::Pixel: return "pixel";
  }
  return "?";
}

}  // namespace

const std::vector<Method>& methods() {
  static const std::vector<Method> all = [] {
    std::vector<Method> v{
#define LUMEN_REGISTERED(id) registered::id(),
#include "methods/registered.inc"
#undef LUMEN_REGISTERED
    };
    std::stable_sort(v.begin(), v.end(), [](const Method& a, const Method& b) {
      return a.family != b.family ? a.family < b.family : a.name < b.name;
    });
    check_registry(v);
    return v;
  }();
  return all;
}

const Method& find_method(const std::string& name) {
  for (const auto& m : methods())
    if (m.name == name) return m;
  throw Error("unknown method '" + name + "' (available: " + [] {
    std::string known;
    for (const auto& m : methods()) known += (known.empty() ? "" : ", ") + m.name;
    return known;
  }() + ")");
}

std::vector<const Method*> with_used_methods(const std::vector<const Method*>& requested, const Settings& settings) {
  std::vector<const Method*> all;
  auto add = [&](const Method* m, auto& self) -> void {
    if (std::find(all.begin(), all.end(), m) != all.end()) return;
    all.push_back(m);
    if (m->uses)
      for (const auto& name : m->uses(settings)) self(&find_method(name), self);
  };
  for (const auto* m : requested) add(m, add);
  return all;
}

Settings resolve_settings(const std::vector<const Method*>& requested, const Settings& given) {
  for (const auto& [name, value] : given.values().items()) param(name);  // unknown names first
  // A wrapper's own settings decide which methods it uses; those settings are resolved first.
  Settings resolved;
  auto fill = [&](const Method& m) {
    for (const auto& p : m.params)
      if (!resolved.has(p.name)) resolved.set(p.name, given.has(p.name) ? checked_value(p, given.values().at(p.name)) : p.fallback);
  };
  for (const auto* m : requested) fill(*m);
  const auto all = with_used_methods(requested, resolved);
  for (const auto* m : all) fill(*m);
  for (const auto& [name, value] : given.values().items()) {
    if (resolved.has(name)) continue;
    std::vector<const Method*> takers;
    for (const auto& m : methods())
      for (const auto& p : m.params)
        if (p.name == name) takers.push_back(&m);
    throw Error(flag_of(name) + " is a setting of " + joined(takers) + "; none of the requested methods (" + joined(requested) +
                ") takes it");
  }
  for (const auto* m : all)
    if (m->check) m->check(resolved);
  return resolved;
}

}  // namespace lumen::detail

namespace lumen {

std::vector<MethodInfo> method_catalog() {
  std::vector<MethodInfo> out;
  for (const auto& m : detail::methods()) {
    MethodInfo info{m.name, m.paper, detail::family_name(m.family), m.per_layer(), static_cast<bool>(m.reduce), {}, m.volumes};
    for (const auto& p : m.params) info.settings.push_back(p.name);
    out.push_back(std::move(info));
  }
  return out;
}

std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const auto& m : detail::methods()) names.push_back(m.name);
  return names;
}

std::vector<SettingInfo> setting_catalog() {
  std::vector<SettingInfo> out;
  for (const auto& m : detail::methods()) {
    for (const auto& p : m.params) {
      auto it = std::find_if(out.begin(), out.end(), [&](const SettingInfo& s) { return s.name == p.name; });
      if (it == out.end()) {
        out.push_back({p.name, detail::flag_of(p.name), detail::kind_name(p.kind), p.fallback, p.help, p.choices, {}});
        it = out.end() - 1;
      }
      it->methods.push_back(m.name);
    }
  }
  std::sort(out.begin(), out.end(), [](const SettingInfo& a, const SettingInfo& b) { return a.name < b.name; });
  return out;
}

void check_settings(const std::vector<std::string>& names, const Settings& settings) {
  std::vector<const detail::Method*> requested;
  for (const auto& n : names) requested.push_back(&detail::find_method(n));
  detail::resolve_settings(requested, settings);
}

Settings taken_by(const std::vector<std::string>& names, const Settings& settings) {
  std::vector<const detail::Method*> requested;
  for (const auto& n : names) requested.push_back(&detail::find_method(n));
  Settings probe;  // the requested methods' settings, given or default: what decides the methods they use
  for (const auto* m : requested)
    for (const auto& p : m->params) probe.set(p.name, settings.has(p.name) ? settings.values().at(p.name) : p.fallback);
  Settings out;
  for (const auto* m : detail::with_used_methods(requested, probe))
    for (const auto& p : m->params)
      if (settings.has(p.name)) out.set(p.name, settings.values().at(p.name));
  return out;
}

nlohmann::json effective_settings(const Settings& settings) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& s : setting_catalog()) {
    const auto& p = detail::param(s.name);
    out[s.name] = settings.has(s.name) ? detail::checked_value(p, settings.values().at(s.name)) : p.fallback;
  }
  return out;
}

Settings& Settings::set(const std::string& name, nlohmann::json value) {
  values_[name] = std::move(value);
  return *this;
}

Settings& Settings::set_text(const std::string& name, const std::string& text) {
  values_[name] = detail::parsed_value(detail::param(name), text);
  return *this;
}

const nlohmann::json& Settings::at(const std::string& name) const {
  if (!values_.contains(name)) throw Error("internal: setting '" + name + "' has no value (not declared by the method that reads it)");
  return values_.at(name);
}

int64_t Settings::integer(const std::string& name) const { return at(name).get<int64_t>(); }
double Settings::number(const std::string& name) const { return at(name).get<double>(); }
std::string Settings::text(const std::string& name) const { return at(name).get<std::string>(); }
bool Settings::flag(const std::string& name) const { return at(name).get<bool>(); }

}  // namespace lumen
