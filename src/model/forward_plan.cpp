// Which forward mode runs a model fastest on this machine: measured, not guessed, because it depends on
// the model (depthwise convolutions gain most from channels-last), the input size and the CPU.
#include <lumen/error.h>
#include <lumen/files.h>
#include <lumen/model.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <vector>

namespace lumen {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string shape_key(const std::vector<int64_t>& shape) {
  std::string key;
  for (auto d : shape) key += (key.empty() ? "" : "x") + std::to_string(d);
  return key;
}

nlohmann::json read_cache(const std::string& file) {
  try {
    if (!path_exists(file)) return nlohmann::json::object();
    auto j = nlohmann::json::parse(read_text_file(file, "forward plan cache", 16u << 20));
    return j.is_object() ? j : nlohmann::json::object();
  } catch (const std::exception&) {
    return nlohmann::json::object();  // damaged: probe again and rewrite it
  }
}

}  // namespace

std::string default_forward_cache() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::string(xdg) + "/lumen/forward-plans.json";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/lumen/forward-plans.json";
  return "";
}

ForwardPlan plan_forward(const Model& model, const std::vector<int64_t>& shape, const std::string& cache_file) {
  const bool cacheable = !cache_file.empty() && !model.fingerprint().empty();
  // "bn-folded": channels-last folds batch norms since 2026-12-04; plans measured before are probed again.
  const std::string key = model.fingerprint() + " " + shape_key(shape) + " bn-folded";
  if (cacheable) {
    const auto cache = read_cache(cache_file);
    if (cache.contains(key) && cache[key].is_object()) {
      try {
        const auto& e = cache[key];
        return {parse_forward_mode(e.at("mode").get<std::string>()), e.at("plain_ms").get<double>(), e.at("channels_last_ms").get<double>(), true};
      } catch (const std::exception&) {
        // An entry of another shape of file: probe again.
      }
    }
  }
  const Model plain = model.forward_mode() == ForwardMode::Plain ? model : model.with_forward_mode(ForwardMode::Plain);
  const Model last = model.with_forward_mode(ForwardMode::ChannelsLast);
  torch::NoGradGuard no_grad;
  const auto gen = at::detail::createCPUGenerator(0);
  const torch::Tensor x = torch::randn(shape, gen);
  auto time_ms = [&](const Model& m) {
    const auto start = std::chrono::steady_clock::now();
    m.forward(x);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  };
  // One warm-up each (graph compilation, oneDNN's weight reorders), then alternating rounds so that
  // both see the same machine.
  time_ms(plain);
  time_ms(last);
  std::vector<double> p, c;
  for (int round = 0; round < 5; ++round) {
    p.push_back(time_ms(plain));
    c.push_back(time_ms(last));
  }
  ForwardPlan plan;
  plan.plain_ms = median(p);
  plan.channels_last_ms = median(c);
  // Switch only for a clear gain: within 3 % the plain layout keeps the file's own numerics.
  plan.mode = plan.channels_last_ms < 0.97 * plan.plain_ms ? ForwardMode::ChannelsLast : ForwardMode::Plain;
  if (cacheable) {
    try {
      auto cache = read_cache(cache_file);
      cache[key] = {{"mode", to_string(plan.mode)}, {"plain_ms", plan.plain_ms}, {"channels_last_ms", plan.channels_last_ms},
                    {"model", model.name()}};
      std::error_code ec;
      std::filesystem::create_directories(std::filesystem::path(cache_file).parent_path(), ec);
      write_file_atomic(cache_file, cache.dump(1) + "\n");
    } catch (const std::exception&) {
      // A cache that cannot be written costs a probe next time, nothing else.
    }
  }
  return plan;
}

}  // namespace lumen
