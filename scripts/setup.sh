#!/usr/bin/env bash
# Fresh Debian 12 -> built lumen -> `lumen demo`. Installs Debian packages (needs root or sudo).
#   scripts/setup.sh [--no-demo]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PACKAGES=(
  build-essential cmake ninja-build
  libtorch-dev libopencv-dev nlohmann-json3-dev libcli11-dev libgtest-dev libbenchmark-dev libonnx-dev zlib1g-dev libeigen3-dev
  libcpp-httplib-dev                           # lumen serve's HTTP
  libgoogle-perftools-dev                      # tcmalloc for the lumen command (CMakeLists.txt says why)
  libopenblas0-openmp                          # LibTorch's default BLAS here is the slow reference one
  pybind11-dev python3-dev python3-numpy       # the Python module (import lumen)
  pkg-config                                   # the package test builds examples/ with lumen.pc
  chromium chromium-driver python3-selenium    # test tooling: the pages are tested in a real browser
  python3-torch python3-torchvision python3-jsonschema python3-onnx python3-pil python3-yaml python3-sklearn python3-opencv   # test tooling: fixtures, references (the anchors: scikit-learn, OpenCV), deploy files
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"

if [ "${1:-}" != "--no-demo" ]; then
  build/lumen demo --out build/lumen-demo
fi
