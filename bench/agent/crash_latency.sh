#!/usr/bin/env bash
# Kill -> detection latency of the Docker runtime (see bench/agent/crash_latency.cc).
#   bench/agent/crash_latency.sh [BUILD_DIR] [ITERATIONS]
# Builds the crash_latency target (bench/agent/docker/CMakeLists.txt), starts a private dockerd
# in a temp dir, and prints median/p95 of SIGKILL -> Watch callback and Start -> serving.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}
iterations=${2:-20}
cmake --build "$build" --target crash_latency upkeep-sample-service >/dev/null
UPKEEP_SOURCE_DIR=$src UPKEEP_BIN_DIR=$build/bin exec "$build/bin/crash_latency" \
  --iterations "$iterations"
