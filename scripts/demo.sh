#!/usr/bin/env bash
# `make demo`: the demo stack under upkeep and the runbook's fault tour (see demo/main.cc).
# DEMO_ONCE=1 exits after the tour with 0 when every fault ended as expected.
set -euo pipefail
cd "$(dirname "$0")/.."
exec ./build/bin/upkeep-demo --source . --bin build/bin ${DEMO_ONCE:+--once}
