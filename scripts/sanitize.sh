#!/usr/bin/env bash
# One clang build (build-asan) with AddressSanitizer, UndefinedBehaviorSanitizer and libFuzzer coverage:
# the unit, model, CLI, ONNX and hostile-input suites run under the sanitizers, then every fuzz target
# runs for FUZZ_SECONDS (20) from its seed corpus. Reuses build/fixtures (run the tests in build/ first).
# Left out under the sanitizers: the resident-memory test (ASan keeps freed memory in quarantine) and
# the 1-vs-2-thread map comparison (minutes under ASan; its arithmetic is not what sanitizers check).
#   scripts/sanitize.sh [--no-fuzz]
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v clang++ >/dev/null; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
fi
start=$(date +%s)
cmake -S . -B build-asan -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DLUMEN_FUZZ=ON -DCMAKE_BUILD_TYPE=Release \
      -DLUMEN_FIXTURES_DIR="$PWD/build/fixtures" >/dev/null
cmake --build build-asan -j"$(nproc)"
echo "sanitize: built in $(( $(date +%s) - start )) s"

# LibTorch and protobuf keep allocations until exit by design: leak reports would be theirs.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_WAIT_POLICY=PASSIVE
start=$(date +%s)
filter='Box.*:Card.*:Headers.*:Image.*:Images.*:Npy.*:Output.*:Preprocess.*:Report.*:Scenes.*:Targets.*:Layout.*:Model.*:Onnx.*:Hostile.*:Cli.ExplainWritesMapsOverlaysAndValidJson:Cli.BadInputMatrix:Cli.BadSettings*:Cli.TargetLanguage*:Cli.SegmentationScoresPerturbedCopies*:Pixel.DeepLiftAndLrpClosedForms:Cam.FeatureGroupMethodsMatchReferences:Cam.LayerMethodsMatchReferences:Cam.DeepFeatureFactorizationMatchesScikitLearn:Metrics.SensitivityMaxInClosedForm:Volumes.ScoreCamMasksTheWholeVolume:Volumes.RefusesWhatVolumesDoNotDefine:Volumes.CliWritesVolumeMapsAndSlicePictures-Model.ResidentMemoryStaysFlatOverManyRequests:Model.MapsAreTheSameWithOneAndTwoThreads'
# Two halves of the list at once (GoogleTest's own sharding): much of an instrumented test is one
# thread, so the second core would otherwise idle.
pids=()
for shard in 0 1; do
  XDG_CACHE_HOME="$PWD/build-asan/cache-$shard" GTEST_TOTAL_SHARDS=2 GTEST_SHARD_INDEX=$shard build-asan/tests/lumen_tests --gtest_brief=1 --gtest_filter="$filter" \
    >"build-asan/tests-shard-$shard.log" 2>&1 &
  pids+=($!)
done
failed=0
for shard in 0 1; do
  if ! wait "${pids[$shard]}"; then
    failed=1
    tail -80 "build-asan/tests-shard-$shard.log"
  fi
done
if [ $failed -ne 0 ]; then echo "sanitize: tests under ASan+UBSan failed"; exit 1; fi
echo "sanitize: tests under ASan+UBSan passed in $(( $(date +%s) - start )) s"

if [ "${1:-}" = "--no-fuzz" ]; then exit 0; fi
seconds=${FUZZ_SECONDS:-20}
for target in onnx image npy torchscript card labels dataset records serve; do
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$target/." "$work/"
  log="$work/log"
  # lumen silences decoders' stderr while they run, which would swallow a crash report there: the
  # sanitizers write theirs to files as well.
  if ! ASAN_OPTIONS="$ASAN_OPTIONS:log_path=$work/asan" UBSAN_OPTIONS="$UBSAN_OPTIONS:log_path=$work/ubsan" "build-asan/fuzz/lumen_fuzz_$target" -max_total_time="$seconds" -rss_limit_mb=3072 -timeout=30 -print_final_stats=1 \
       -artifact_prefix="build-asan/fuzz/crash-$target-" "$work" >"$log" 2>&1; then
    tail -40 "$log"
    cat "$work"/asan.* "$work"/ubsan.* 2>/dev/null | head -80 || true
    echo "sanitize: fuzz target $target failed; the input is in build-asan/fuzz/crash-$target-*"
    exit 1
  fi
  # The last stats line is the fuzzer's own: the TorchScript target's forked readers print theirs when
  # LibTorch crashes in them (that is what the fork is for).
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  runs=${runs:-0}
  corpus=$(find "$work" -maxdepth 1 -type f ! -name log | wc -l)
  echo "sanitize: fuzz $target: $runs runs in ${seconds} s ($(( runs / seconds ))/s), corpus $corpus files, no crash"
  rm -rf "$work"
done
