#!/usr/bin/env bash
# Runs a fuzz target (libFuzzer + ASan, needs clang) for SECONDS (default 60) on a copy of its
# corpus; further arguments go to libFuzzer (e.g. -runs=10000000).
#   scripts/fuzz.sh [manifest|controller] [SECONDS] [libFuzzer args...]   (default: manifest)
#   manifest     the manifest loader (tests/fuzz/manifest_fuzz.cc)
#   controller   AgentService streams and FleetService requests through the controller's real
#                handlers (tests/fuzz/controller_fuzz.cc)
# New interesting inputs land in build-fuzz/corpus-TARGET. Crashes and hangs (over 10 s) are
# saved as build-fuzz/crash-* / timeout-*; add them to tests/fuzz/corpus/TARGET once fixed.
# LIBYAML_SRC=DIR (an unpacked `apt-get source libyaml`) instruments libyaml too.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=manifest
if [ $# -gt 0 ] && [[ ! "$1" =~ ^[0-9]+$ ]]; then TARGET=$1; shift; fi
case "$TARGET" in
  manifest) MAX_LEN=65536 ;;
  controller) MAX_LEN=200000 ;;
  *) echo "fuzz.sh: unknown target $TARGET (manifest or controller)" >&2; exit 2 ;;
esac
SECONDS_TO_RUN=${1:-60}
shift || true
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address" \
  -DUPKEEP_FUZZ_LIBYAML_SRC="${LIBYAML_SRC:-}" >/dev/null
cmake --build build-fuzz --target "${TARGET}_fuzz"
CORPUS=build-fuzz/corpus-$TARGET
[ "$TARGET" = manifest ] && [ -d build-fuzz/corpus ] && [ ! -d "$CORPUS" ] && mv build-fuzz/corpus "$CORPUS"
mkdir -p "$CORPUS"
cp -n tests/fuzz/corpus/"$TARGET"/* "$CORPUS"/ 2>/dev/null || true
cd build-fuzz
./bin/"${TARGET}_fuzz" "corpus-$TARGET" -max_total_time="$SECONDS_TO_RUN" -max_len="$MAX_LEN" \
  -rss_limit_mb=4096 -artifact_prefix=./ -timeout=10 "$@"
