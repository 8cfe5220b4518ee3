#include <lumen/error.h>

#include "methods/method.h"

namespace lumen::detail {

const std::vector<CamMethod>& cam_methods() {
  static const std::vector<CamMethod> methods{gradcam()};
  return methods;
}

const CamMethod& find_cam_method(const std::string& name) {
  std::string known;
  for (const auto& m : cam_methods()) {
    if (m.name == name) return m;
    known += (known.empty() ? "" : ", ") + m.name;
  }
  throw Error("unknown method '" + name + "' (available: " + known + ")");
}

}  // namespace lumen::detail
