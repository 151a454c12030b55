#!/bin/bash
# The agent's link launcher (RULE_LAUNCH_LINK of upkeep-agent, agent/CMakeLists.txt): runs the
# link command CMake wrote with every shared library named in UPKEEP_AGENT_STATIC_LIBS replaced
# by the static archive beside it when Debian ships one (libgrpc.so.29.0.0 -> libgrpc.a, -lre2 ->
# libre2.a), the archives in one --start-group (they refer to each other in every order).
# Why and the figures: docs/agent.md, "Footprint". The other targets (controller, tests) keep
# the shared libraries.
#
#   static_link.sh 'grpc++ grpc gpr upb ... absl_*' <the link command...>
set -euo pipefail
patterns="$1"
shift
libdirs=()  # the -L directories seen so far: where -lNAME is looked up

# Prints DIR/libNAME.a if NAME matches one of the patterns and the archive exists.
static_for() {
  local name="$1" dir="$2" p
  for p in $patterns; do
    # shellcheck disable=SC2053  # $p is a glob on purpose (absl_*)
    if [[ "$name" == $p && -f "$dir/lib$name.a" ]]; then
      echo "$dir/lib$name.a"
      return 0
    fi
  done
  return 1
}

out=()
grouped=0
for arg in "$@"; do
  archive=""
  if [[ "$arg" =~ ^-L(.+)$ ]]; then
    libdirs+=("${BASH_REMATCH[1]}")
  elif [[ "$arg" =~ ^(/.+)/lib([^/]+)\.so(\.[0-9.]+)?$ ]]; then
    archive=$(static_for "${BASH_REMATCH[2]}" "${BASH_REMATCH[1]}") || true
  elif [[ "$arg" =~ ^-l(.+)$ ]]; then
    for dir in "${libdirs[@]}"; do
      archive=$(static_for "${BASH_REMATCH[1]}" "$dir") && break || true
    done
  fi
  if [[ -n "$archive" ]]; then
    if [[ $grouped == 0 ]]; then
      out+=("-Wl,--start-group")
      grouped=1
    fi
    out+=("$archive")
  else
    out+=("$arg")
  fi
done
if [[ $grouped == 1 ]]; then
  out+=("-Wl,--end-group")
fi
exec "${out[@]}"
