#!/usr/bin/env bash
# lumen as other projects get it: installed to a fresh prefix, the example (examples/explain_one) built
# with find_package(lumen) and with pkg-config, the Python module imported from the installed tree, and
# the .deb unpacked into a fresh root and built against. Each program runs on the shared MobileNetV2 and
# must give the same class and box as the installed `lumen explain`.
#   tests/package/test_package.sh SOURCE_DIR BUILD_DIR SHARED_DIR PYTHON
set -euo pipefail
src=$1 build=$2 shared=$3 python=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "test_package: FAILED: $*" >&2; exit 1; }
model=$shared/models/mobilenet_v2_imagenet.pt card=$shared/models/mobilenet_v2_imagenet.json image=$shared/images/pets.jpg

echo "== cmake --install to a fresh prefix"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
p=$work/prefix
for f in bin/lumen include/lumen/lumen.h include/lumen/version.h lib/cmake/lumen/lumenConfig.cmake \
         lib/cmake/lumen/lumenConfigVersion.cmake lib/pkgconfig/lumen.pc share/doc/lumen/README.md; do
  [ -e "$p/$f" ] || fail "the install has no $f"
done
ls "$p"/lib/liblumen.* >/dev/null 2>&1 || fail "the install has no liblumen"
version=$("$p/bin/lumen" --version)
echo "$version"
[[ "$version" =~ ^lumen\ ([0-9]+\.[0-9]+\.[0-9]+)\ \(LibTorch ]] || fail "lumen --version printed '$version'"
grep -q "\"${BASH_REMATCH[1]}\"" "$p/include/lumen/version.h" || fail "version.h does not say ${BASH_REMATCH[1]}"

# What the installed command says about the image: the class and the box the examples must reproduce.
"$p/bin/lumen" explain --model "$model" --card "$card" --image "$image" --layer features.18 --out "$work/cli" >/dev/null
want=$("$python" -c "
import json, sys
m = json.load(open(sys.argv[1]))['images'][0]['maps'][0]
print('for class %d (%s), box %s' % (m['class'], m['label'], ','.join(map(str, m['box']))))" "$work/cli/run.json")
echo "lumen explain: $want"
check_example() {  # check_example NAME BINARY
  local out
  out=$("$2" "$model" "$card" "$image" "$work/$1.png" features.18)
  echo "$1: $out"
  [[ "$out" == *"$want" ]] || fail "$1 printed '$out', the installed lumen says '$want'"
  "$python" -c "
import sys
from PIL import Image
a, b = Image.open(sys.argv[1]), Image.open(sys.argv[2])
assert a.size == b.size, (a.size, b.size)" "$work/$1.png" "$image" || fail "$1's overlay is not the image's size"
}

echo "== find_package(lumen) against the installed prefix"
cmake -S "$src/examples/explain_one" -B "$work/cmake-example" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$p" >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; fail "the example did not configure"; }
cmake --build "$work/cmake-example" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; fail "the example did not build"; }
check_example cmake "$work/cmake-example/explain_one"

echo "== pkg-config against the installed prefix"
mkdir -p "$work/pc-example"
PKG_CONFIG_PATH="$p/lib/pkgconfig" make -s -C "$work/pc-example" -f "$src/examples/explain_one/Makefile" \
     VPATH="$src/examples/explain_one" CXXFLAGS=-O1 >"$work/pc.log" 2>&1 || { tail -30 "$work/pc.log"; fail "the pkg-config build failed"; }
check_example pkg-config "$work/pc-example/explain_one"

if [ -d "$build/python/lumen" ]; then
  echo "== the Python module from the installed tree"
  pydir=$(dirname "$(find "$p/lib" -path '*dist-packages/lumen/__init__.py' | head -1)")
  [ -n "$pydir" ] && [ "$pydir" != "." ] || fail "the install has no Python package"
  got=$(cd "$work" && PYTHONPATH=$(dirname "$pydir") "$python" -c "
import lumen, sys
assert lumen.__file__.startswith(sys.argv[1]), lumen.__file__
e = lumen.Explainer(sys.argv[2], sys.argv[3])
m = e.explain(sys.argv[4], layers=['features.18'])[0]['gradcam']
print('for class %d (%s), box %s' % (m.cls, m.label, ','.join(map(str, m.box))))" "$p" "$model" "$card" "$image")
  echo "python: $got"
  [ "$got" == "$want" ] || fail "the installed Python module says '$got'"
fi

echo "== cpack -G DEB, unpacked into a fresh root"
(cd "$build" && cpack -G DEB -B "$work/deb" >"$work/cpack.log" 2>&1) || { tail -30 "$work/cpack.log"; fail "cpack failed"; }
deb=$(ls "$work"/deb/lumen_*.deb)
depends=$(dpkg-deb -f "$deb" Depends)
for d in libtorch1.13 libopencv-imgcodecs406 libtorch-dev libopencv-dev nlohmann-json3-dev; do
  [[ "$depends" == *"$d"* ]] || fail "the package does not depend on $d: $depends"
done
dpkg-deb -x "$deb" "$work/root"
[ -x "$work/root/usr/bin/lumen" ] || fail "the package has no /usr/bin/lumen"
[ -e "$work/root/usr/lib/pkgconfig/lumen.pc" ] || [ -e "$work/root/usr/lib/x86_64-linux-gnu/pkgconfig/lumen.pc" ] || fail "the package has no lumen.pc"
if [ -d "$build/python/lumen" ]; then
  [ -e "$work/root/usr/lib/python3/dist-packages/lumen/__init__.py" ] || fail "the package's Python module is not in /usr/lib/python3/dist-packages"
fi
[ "$("$work/root/usr/bin/lumen" --version)" == "$version" ] || fail "the packaged lumen is not $version"
cmake -S "$src/examples/explain_one" -B "$work/deb-example" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/root/usr" >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; fail "the example did not configure against the .deb"; }
cmake --build "$work/deb-example" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; fail "the example did not build against the .deb"; }
check_example deb "$work/deb-example/explain_one"
echo "test_package: passed ($(basename "$deb"), $(du -h "$deb" | cut -f1))"
