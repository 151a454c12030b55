#!/usr/bin/env bash
# `make bench`: runs every benchmark and load tool against the build in BUILD_DIR (default
# build) and regenerates bench/results/:
#   heal.md    bench/e2e/heal_bench (upkeep, Monit, the Docker floor and Docker's restart
#              policy, nginx 502 under client traffic; same run; bench/results/heal-notes.md
#              is appended to it)
#   latest.md  Diagnose per call (bench/core/diagnose_bench) and per observation in the
#              reconciler (bench/controller/key_diagnoser_bench), the idle agent's footprint
#              (bench/agent/footprint), controller load at 1,000 and 10,000 simulated agents
#              (bench/controller/load.sh), each with the date, the machine and its load.
# The hand-written analyses beside them (diagnose.md, churn.md, ha.md, tls.md, autonomy.md)
# say how their figures were taken; rerun those commands to refresh them.
# Figures from a loaded machine are upper bounds: the load average is printed with each.
#   scripts/bench.sh                 everything (about 15 minutes)
#   QUICK=1 scripts/bench.sh         fewer runs and 1,000 agents only (about 3 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
BIN=$BUILD/bin        # the daemons and the sample service
BENCH=$BUILD/bench    # the benchmarks (bench/*/CMakeLists.txt)
RESULTS=bench/results
OUT=$RESULTS/latest.md
RUNS=10 AGENTS=(1000 10000) SECONDS_IDLE=30
if [ -n "${QUICK:-}" ]; then RUNS=3 AGENTS=(1000) SECONDS_IDLE=10; fi

machine() {
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

section() {  # title, then the command whose output goes in a code block
  local title=$1; shift
  echo "running: $*" >&2
  {
    echo "## $title"
    echo
    echo "\`$*\` — $(machine)"
    echo
    echo '```'
    "$@" 2>&1 || { echo "(exit status $?)"; failed+=("$title"); }
    echo '```'
    echo
  } >>"$OUT"
}

failed=()
echo "# Latest benchmark run (scripts/bench.sh)" >"$OUT"
echo >>"$OUT"
section "Diagnose per call" "$BENCH/diagnose_bench" --benchmark_min_time=0.5
section "The reconciler's Diagnose per observation" "$BENCH/key_diagnoser_bench" --benchmark_min_time=0.5
section "Idle agent, 3 services probed each second" "$BENCH/agent_footprint" "$SECONDS_IDLE" "$BIN"
section "Agent, process crash -> exit seen and Start -> serving" "$BENCH/agent_process_crash" 20 "$BIN"
for n in "${AGENTS[@]}"; do
  for broken in 0.02 0.2; do  # the issue's two breaking rates (#15)
    BROKEN=$broken section "Controller load, $n agents, $broken of backends breaking" \
      bench/controller/load.sh "$BUILD" "$n"
  done
done
echo "running: heal_bench --runs $RUNS" >&2
docker_flag=()
command -v dockerd >/dev/null && docker_flag=(--docker)
"$BENCH/heal_bench" --runs "$RUNS" --out "$RESULTS/heal.md" --bin "$BIN" --source "$PWD" \
  "${docker_flag[@]}" || { echo "heal_bench failed (exit $?)" >&2; failed+=(heal_bench); }
echo "bench: wrote $OUT and $RESULTS/heal.md" >&2
# A benchmark that did not run fails `make bench` (its section says why).
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench: failed: ${failed[*]}" >&2
  exit 1
fi
