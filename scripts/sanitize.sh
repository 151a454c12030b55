#!/usr/bin/env bash
# `make sanitize`: builds with ASan+UBSan (build-asan) and runs every test (but the packaging
# one), then builds with TSan (build-tsan) and runs the agent and controller tests. Both builds
# are -Og -g1 (CMakeLists.txt says why). Fails on a failing test and on any
# sanitizer report, including one from a daemon a test started (upkeep-agent and
# upkeep-controller are instrumented too; upkeep-sample-service, static for its Docker image,
# gets UBSan only): every process writes its reports to <build>/sanitizer-logs/, which is
# checked after the run.
#
#   scripts/sanitize.sh [asan|tsan]...   (default: both)
# Environment: JOBS (default nproc), CTEST_ARGS (extra ctest arguments, e.g. -R agent),
# TSAN_LABELS (ctest -L regex for the TSan run, default '^(agent|controller|sanitizers)$':
# the agent and controller tests, and the check of the TSan absl shim).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUPP=$ROOT/scripts/sanitizers
JOBS=${JOBS:-$(nproc)}
TSAN_LABELS=${TSAN_LABELS:-'^(agent|controller|sanitizers)$'}
read -r -a EXTRA <<<"${CTEST_ARGS:-}"

# Configures `dir` with -DUPKEEP_SANITIZE=`sanitizers` and builds what the tests selected by
# the ctest arguments that follow need: their executables (a test is named after its
# executable) and the binaries tests start. Benchmarks and the demo are not built.
build() {
  local dir=$1 sanitizers=$2; shift 2
  # Always (re)configure first: the target and test lists below must come from this tree, not
  # from an older configuration of the same directory.
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DUPKEEP_SANITIZE="$sanitizers" >/dev/null
  local known targets=()
  known=$(ninja -C "$dir" -t targets all | sed -n 's/^\([A-Za-z0-9_.-]*\): phony$/\1/p')
  for t in $( (cd "$dir" && ctest -N "$@" "${EXTRA[@]}") | sed -n 's/^ *Test *#[0-9]*: //p') \
           upkeep-agent upkeep-controller upkeep-sample-service upkeepctl upkeep-reaper; do
    grep -qx -- "$t" <<<"$known" && targets+=("$t")
  done
  local start=$SECONDS
  cmake --build "$dir" -j "$JOBS" --target "${targets[@]}"
  echo "sanitize: $dir built in $(( SECONDS - start ))s" >&2
}

# Runs ctest in `dir` with the given arguments, then fails if any process left a report.
run() {
  local dir=$1; shift
  local logs=$ROOT/$dir/sanitizer-logs
  rm -rf "$logs" && mkdir -p "$logs"
  local status=0 start=$SECONDS
  # Under upkeep-reaper (scripts/sanitizers/reaper.cc): whatever a test left running, e.g.
  # because a sanitizer halted it before its fixture could stop its daemons, is listed and
  # stopped when ctest is done, and fails the run.
  (cd "$dir" && "$ROOT/$dir/bin/upkeep-reaper" --fail-on-leftovers -- \
     ctest --output-on-failure -j "$JOBS" "$@" "${EXTRA[@]}") || status=$?
  echo "sanitize: tests in $dir ran in $(( SECONDS - start ))s" >&2
  # log_path appends .<pid> to the prefix; one file per process that reported.
  local reports
  reports=$(find "$logs" -type f | sort)
  if [ -n "$reports" ]; then
    for f in $reports; do
      echo "==== sanitizer report: $f" >&2
      cat "$f" >&2
    done
    echo "sanitize: $(echo "$reports" | wc -l) process(es) reported, see above" >&2
    status=1
  fi
  return $status
}

asan() {
  local dir=build-asan
  # Every test but the packaging one: it runs cpack and dpkg-deb over the whole install tree
  # (benchmarks and demo included, which this build leaves out) and executes none of our code.
  local select=(-LE '^packaging$')
  build "$dir" address,undefined "${select[@]}"
  # detect_stack_use_after_return: callbacks that outlive the frame they captured.
  # Leak checking stays on for our daemons: tests stop them with SIGTERM, so they exit
  # normally and LSan runs.
  ASAN_OPTIONS="log_path=$ROOT/$dir/sanitizer-logs/asan:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:abort_on_error=0" \
  LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0" \
  UBSAN_OPTIONS="log_path=$ROOT/$dir/sanitizer-logs/ubsan:print_stacktrace=1:halt_on_error=1:suppressions=$SUPP/ubsan.supp" \
    run "$dir" "${select[@]}"
}

tsan() {
  local dir=build-tsan
  build "$dir" thread -L "$TSAN_LABELS"
  # ignore_noninstrumented_modules: Debian's libraries are not instrumented; see tsan.supp.
  TSAN_OPTIONS="log_path=$ROOT/$dir/sanitizer-logs/tsan:halt_on_error=1:ignore_noninstrumented_modules=1:second_deadlock_stack=1:suppressions=$SUPP/tsan.supp:print_suppressions=0" \
    run "$dir" -L "$TSAN_LABELS"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(asan tsan)
for step in "${steps[@]}"; do
  start=$(date +%s)
  "$step"
  echo "sanitize: $step passed in $(( $(date +%s) - start ))s" >&2
done
