#!/usr/bin/env bash
# Controller memory under churn: N simulated agents for MINUTES minutes with constant churn —
# backends breaking (each break: an action, its result, events), streams closed and reopened,
# and hellos from host ids no stack names — against a controller with small retention limits,
# so that pruning runs many times. Prints the controller's RSS every minute, then at start and
# end of the run: it must stay flat.
#   bench/controller/churn.sh [BUILD_DIR] [N] [MINUTES]        (default: build 1000 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}; N=${2:-1000}; MINUTES=${3:-10}
SECONDS_PER_RUN=$((MINUTES * 60)) PERIOD=${PERIOD:-1} BROKEN=${BROKEN:-0.05} \
  CONTROLLER_ARGS="--retain_events ${RETAIN:-20000} --retain_actions ${RETAIN:-20000}" \
  LOAD_ARGS="--reconnect_share ${RECONNECT:-0.01} --strangers ${STRANGERS:-20} --rss_every 60" \
  bench/controller/load.sh "$BUILD" "$N"
