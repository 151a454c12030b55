#!/usr/bin/env bash
# Runs the manifest fuzzer (libFuzzer + ASan, needs clang) for SECONDS (default 60) on a copy
# of the corpus; new interesting inputs land in build-fuzz/corpus. Crashes are saved as
# build-fuzz/crash-*; add them to tests/fuzz/corpus/manifest once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-60}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address" >/dev/null
cmake --build build-fuzz --target manifest_fuzz
mkdir -p build-fuzz/corpus
cp -n tests/fuzz/corpus/manifest/* build-fuzz/corpus/ 2>/dev/null || true
cd build-fuzz
./bin/manifest_fuzz corpus -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -rss_limit_mb=2048 \
  -artifact_prefix=./ -timeout=10
