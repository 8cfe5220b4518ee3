# `cpack -G DEB` (run in the build folder) -> lumen_<version>_<arch>.deb: the command, the library with
# its headers, CMake package and lumen.pc, the Python module when it is built, and the docs, under /usr.
# One package rather than lumen + liblumen-dev: a user who installs lumen from its .deb wants both, and
# the dependencies below are what the development files need anyway (headers of LibTorch and OpenCV).
set(CPACK_PACKAGE_NAME lumen)
set(CPACK_PACKAGE_VENDOR "lumen")
set(CPACK_PACKAGE_CONTACT "lumen developers <lumen@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "why a deep network decided what it decided: Grad-CAM and its family on LibTorch")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://example.invalid/lumen")
# Runtime libraries by name (dpkg-shlibdeps would find the same ones, but needs the package database of
# a Debian build machine) and the -dev packages whose headers lumen's public headers include.
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libc6, libstdc++6, libtorch1.13, libopencv-core406, libopencv-imgproc406, libopencv-imgcodecs406, libopencv-dnn406, libopencv-contrib406, libonnx1, libprotobuf32, libtorch-dev, libopencv-dev, nlohmann-json3-dev, libonnx-dev, libprotobuf-dev")
if(LUMEN_TCMALLOC AND LUMEN_TCMALLOC_LIBRARY AND NOT LUMEN_SANITIZE)  # the command's allocator (CMakeLists.txt)
  string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", libtcmalloc-minimal4")
endif()
if(LUMEN_PYTHON_MODULE)
  string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", python3 (>= 3.11), python3 (<< 3.12), python3-numpy")
  set(CPACK_DEBIAN_PACKAGE_SUGGESTS "python3-torch")
endif()
include(CPack)
