#!/usr/bin/env bash
# Runs the manifest fuzzer (libFuzzer + ASan, needs clang) for SECONDS (default 60) on a copy
# of the corpus; further arguments go to libFuzzer (e.g. -runs=10000000). New interesting
# inputs land in build-fuzz/corpus. Crashes and hangs (over 10 s) are saved as
# build-fuzz/crash-* / timeout-*; add them to tests/fuzz/corpus/manifest once fixed.
# LIBYAML_SRC=DIR (an unpacked `apt-get source libyaml`) instruments libyaml too.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-60}
shift || true
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address" \
  -DUPKEEP_FUZZ_LIBYAML_SRC="${LIBYAML_SRC:-}" >/dev/null
cmake --build build-fuzz --target manifest_fuzz
mkdir -p build-fuzz/corpus
cp -n tests/fuzz/corpus/manifest/* build-fuzz/corpus/ 2>/dev/null || true
cd build-fuzz
./bin/manifest_fuzz corpus -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -rss_limit_mb=2048 \
  -artifact_prefix=./ -timeout=10 "$@"
