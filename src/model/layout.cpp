// Reading a layer output's layout from its shape. A grid of an input H x W is what some stride s makes
// of it: (H/s, W/s), rounded down (convolutions, patch embeddings) or up (padded patch merging).
#include <lumen/error.h>
#include <lumen/layout.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <sstream>
#include <tuple>

namespace lumen {
namespace {

// Prefix tokens in the models people ship: a class token, a distillation token, registers (4 to 16).
// Without a patch embedding to read the grid from, more than a class token and 4 registers could be
// read into almost any length, so fewer are accepted.
constexpr int64_t kMaxPrefix = 16, kMaxPrefixUnread = 5;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// The grids strides make of the input; only the patch embedding's stride when it is known.
std::set<std::pair<int64_t, int64_t>> grids(int64_t input_h, int64_t input_w, int64_t patch) {
  std::set<std::pair<int64_t, int64_t>> out;
  const int64_t first = patch > 0 ? patch : 1, last = patch > 0 ? patch : std::max(input_h, input_w);
  for (int64_t s = first; s <= last; ++s) {
    out.insert({input_h / s, input_w / s});
    out.insert({(input_h + s - 1) / s, (input_w + s - 1) / s});
  }
  out.erase({0, 0});
  return out;
}

bool is_grid(int64_t h, int64_t w, int64_t input_h, int64_t input_w) {
  return h > 0 && w > 0 && grids(input_h, input_w, 0).count({h, w});
}

std::string token_readings(const std::vector<std::tuple<int64_t, int64_t, int64_t>>& readings) {
  std::string s;
  for (size_t i = 0; i < readings.size(); ++i) {
    const auto& [p, h, w] = readings[i];
    s += (i ? (i + 1 == readings.size() ? " or " : ", ") : "") + std::to_string(p) + " prefix + " + std::to_string(h) + "x" + std::to_string(w);
  }
  return s;
}

TokenLayout tokens(const std::vector<int64_t>& shape, int64_t input_h, int64_t input_w, int64_t patch, const TokenHint& hint) {
  const int64_t length = shape[1];
  TokenLayout layout;
  layout.kind = TokenLayout::Kind::Tokens;
  if (hint.grid_h > 0) {
    const int64_t prefix = hint.prefix >= 0 ? hint.prefix : length - hint.grid_h * hint.grid_w;
    if (prefix < 0 || prefix + hint.grid_h * hint.grid_w != length)
      throw Error("layer output " + shape_text(shape) + " does not fit --tokens grid=" + std::to_string(hint.grid_h) + "x" +
                  std::to_string(hint.grid_w) + (hint.prefix >= 0 ? ",prefix=" + std::to_string(hint.prefix) : "") + ": " +
                  std::to_string(std::max<int64_t>(prefix, 0)) + " + " + std::to_string(hint.grid_h) + "x" + std::to_string(hint.grid_w) +
                  " tokens is not the layer's " + std::to_string(length));
    layout.grid_h = hint.grid_h, layout.grid_w = hint.grid_w, layout.prefix = prefix;
    return layout;
  }
  std::vector<std::tuple<int64_t, int64_t, int64_t>> readings;  // prefix, h, w
  auto collect = [&](int64_t stride) {
    readings.clear();
    const int64_t most = stride > 0 ? kMaxPrefix : kMaxPrefixUnread;
    for (const auto& [h, w] : grids(input_h, input_w, stride)) {
      const int64_t prefix = length - h * w;
      const bool prefix_fits = hint.prefix >= 0 ? prefix == hint.prefix : prefix >= 0 && prefix <= most;
      if (h * w < 2) continue;  // a single position is no map
      if (prefix_fits) readings.emplace_back(prefix, h, w);
    }
    std::sort(readings.begin(), readings.end());
  };
  // The patch embedding's stride says the grid of a plain ViT; a hierarchical model's later stages
  // have other strides, read from the shape alone.
  if (patch > 0) collect(patch);
  if (readings.empty()) collect(0);
  if (readings.size() == 1) {
    std::tie(layout.prefix, layout.grid_h, layout.grid_w) = readings[0];
    return layout;
  }
  if (readings.empty())
    throw Error("layer output " + shape_text(shape) + " is no token grid of the " + std::to_string(input_h) + "x" + std::to_string(input_w) +
                " input (with up to " + std::to_string(patch > 0 ? kMaxPrefix : kMaxPrefixUnread) +
                " prefix tokens); give it with --tokens grid=HxW,prefix=P");
  throw Error("layer output " + shape_text(shape) + " can be read as " + token_readings(readings) +
              " tokens; say which with --tokens grid=HxW,prefix=P");
}

TokenLayout map4(const std::vector<int64_t>& shape, int64_t input_h, int64_t input_w, const TokenHint& hint) {
  TokenLayout layout;
  const bool first = is_grid(shape[2], shape[3], input_h, input_w), last = is_grid(shape[1], shape[2], input_h, input_w);
  std::string channels = hint.channels;
  if (channels.empty()) {
    // Channels first, PyTorch's convention, whenever that reading is a grid of the input (a CNN's
    // [N,16,16,16] is also a 16x16 channels-last grid; --tokens channels=last says otherwise). Channels
    // last only when it alone is: convolutions without padding give sizes no stride gives exactly, and
    // those maps stay channels first too.
    channels = last && !first ? "last" : "first";
  }
  if (channels == "last") {
    layout.kind = TokenLayout::Kind::ChannelsLast;
    layout.grid_h = shape[1], layout.grid_w = shape[2];
  } else {
    layout.grid_h = shape[2], layout.grid_w = shape[3];
  }
  if (hint.grid_h > 0 && (hint.grid_h != layout.grid_h || hint.grid_w != layout.grid_w))
    throw Error("layer output " + shape_text(shape) + " has a " + std::to_string(layout.grid_h) + "x" + std::to_string(layout.grid_w) +
                " grid, not the " + std::to_string(hint.grid_h) + "x" + std::to_string(hint.grid_w) + " of --tokens");
  return layout;
}

}  // namespace

std::string TokenLayout::describe() const {
  const std::string grid = std::to_string(grid_h) + "x" + std::to_string(grid_w);
  switch (kind) {
    case Kind::ChannelsFirst: return "[N,C,h,w] map, " + grid;
    case Kind::ChannelsLast: return "channels-last " + grid + " map";
    case Kind::Volume: return "[N,C,d,h,w] volume, " + std::to_string(grid_d) + "x" + grid;
    case Kind::Tokens:
      return (prefix ? std::to_string(prefix) + " prefix token" + (prefix > 1 ? "s" : "") + " + " : std::string()) + grid + " grid of tokens";
  }
  return "?";
}

TokenHint parse_tokens(const std::string& text) {
  TokenHint hint;
  std::stringstream parts(text);
  for (std::string part; std::getline(parts, part, ',');) {
    const auto eq = part.find('=');
    const std::string key = part.substr(0, eq), value = eq == std::string::npos ? "" : part.substr(eq + 1);
    char* end = nullptr;
    if (key == "grid") {
      const auto x = value.find('x');
      hint.grid_h = std::strtoll(value.c_str(), &end, 10);
      const bool h_ok = x != std::string::npos && end == value.c_str() + x;
      hint.grid_w = h_ok ? std::strtoll(value.c_str() + x + 1, &end, 10) : 0;
      if (!h_ok || *end != '\0' || hint.grid_h < 1 || hint.grid_w < 1 || hint.grid_h > 100000 || hint.grid_w > 100000)
        throw Error("--tokens grid must be HxW with positive sizes, got '" + value + "'");
    } else if (key == "prefix") {
      hint.prefix = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || hint.prefix < 0 || hint.prefix > 100000)
        throw Error("--tokens prefix must be a count of tokens (0 or more), got '" + value + "'");
    } else if (key == "channels") {
      if (value != "first" && value != "last") throw Error("--tokens channels must be first or last, got '" + value + "'");
      hint.channels = value;
    } else {
      throw Error("--tokens takes grid=HxW, prefix=P and channels=first|last, not '" + part + "'");
    }
  }
  return hint;
}

TokenLayout infer_layout(const std::vector<int64_t>& shape, int64_t input_h, int64_t input_w, int64_t patch, const TokenHint& hint) {
  if (shape.size() == 4) return map4(shape, input_h, input_w, hint);
  // Conv3d's layout, the only one 3-D networks use in PyTorch: channels first, then depth (time).
  if (shape.size() == 5 && !hint.given()) {
    TokenLayout layout;
    layout.kind = TokenLayout::Kind::Volume;
    layout.grid_d = shape[2], layout.grid_h = shape[3], layout.grid_w = shape[4];
    return layout;
  }
  if (shape.size() == 5) throw Error("layer output " + shape_text(shape) + " is a [N,C,d,h,w] volume; --tokens is for token sequences and 2-D maps");
  if (shape.size() == 3 && hint.channels != "first") return tokens(shape, input_h, input_w, patch, hint);
  throw Error("layer output " + shape_text(shape) + " is neither a [N,C,h,w] or [N,h,w,C] map, a [N,C,d,h,w] volume nor a [N,tokens,C] sequence; pick a "
              "convolutional or transformer block's layer");
}

torch::Tensor to_spatial(const torch::Tensor& t, const TokenLayout& layout) {
  switch (layout.kind) {
    case TokenLayout::Kind::ChannelsFirst: return t;
    case TokenLayout::Kind::ChannelsLast: return t.permute({0, 3, 1, 2});
    case TokenLayout::Kind::Tokens:
      return t.slice(1, layout.prefix).reshape({t.size(0), layout.grid_h, layout.grid_w, t.size(2)}).permute({0, 3, 1, 2});
    case TokenLayout::Kind::Volume: return t.reshape({t.size(0), t.size(1), layout.grid_d * layout.grid_h, layout.grid_w});
  }
  return t;
}

torch::Tensor from_spatial(const torch::Tensor& spatial, const TokenLayout& layout, const torch::Tensor& like) {
  switch (layout.kind) {
    case TokenLayout::Kind::ChannelsFirst: return spatial;
    case TokenLayout::Kind::ChannelsLast: return spatial.permute({0, 2, 3, 1}).contiguous();
    case TokenLayout::Kind::Tokens: {
      const int64_t m = spatial.size(0), c = spatial.size(1);
      auto grid = spatial.permute({0, 2, 3, 1}).reshape({m, layout.grid_h * layout.grid_w, c});
      if (layout.prefix == 0) return grid;
      return torch::cat({like.slice(1, 0, layout.prefix).expand({m, layout.prefix, c}), grid}, 1);
    }
    case TokenLayout::Kind::Volume:
      return spatial.reshape({spatial.size(0), spatial.size(1), layout.grid_d, layout.grid_h, layout.grid_w});
  }
  return spatial;
}

}  // namespace lumen
