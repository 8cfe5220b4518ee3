#include <lumen/version.h>

namespace lumen {

const char* version() { return LUMEN_VERSION_STRING; }

}  // namespace lumen
