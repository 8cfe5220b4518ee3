// The page's files (src/serve/page/), compiled into the binary by CMake (cmake/embed_assets.cmake),
// so that lumen serve works from any folder with no network.
#pragma once

#include <map>
#include <string>

namespace lumen::serve {

struct Asset {
  std::string type;   // Content-Type
  std::string bytes;
};

// By file name: "index.html", "app.js", "style.css".
const std::map<std::string, Asset>& page_assets();

}  // namespace lumen::serve
