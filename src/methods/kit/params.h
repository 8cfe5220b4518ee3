// Internal: checking a method setting's value against its declaration (src/methods/kit/params.cpp).
#pragma once

#include "methods/kit/method.h"

namespace lumen::detail {

std::string kind_name(Param::Kind kind);
// The value, checked and converted to the declared kind (integers exact, floats rounded to float for
// single-precision settings). Throws lumen::Error naming the flag.
nlohmann::json checked_value(const Param& p, const nlohmann::json& value);
// The same from command-line text.
nlohmann::json parsed_value(const Param& p, const std::string& text);

}  // namespace lumen::detail
