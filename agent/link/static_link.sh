#!/bin/bash
# The agent's link launcher (RULE_LAUNCH_LINK of upkeep-agent, agent/CMakeLists.txt): runs the
# link command CMake wrote with every shared library named in UPKEEP_STATIC_LIBS replaced by
# Debian's static archive beside it (libgrpc.so.29.0.0 -> libgrpc.a, -lre2 -> libre2.a), the
# archives in one --start-group (they refer to each other in every order), --gc-sections on.
# Why and the figures: docs/agent.md, "Footprint". The other targets (controller, tests) keep
# the shared libraries.
#
#   static_link.sh 'grpc++ grpc gpr upb ... absl_*' <the link command...>
set -euo pipefail
patterns="$1"
shift
libdir=/usr/lib/x86_64-linux-gnu

# Prints the static archive for a library name if it is one of ours and exists.
static_for() {
  local name="$1" p
  for p in $patterns; do
    # shellcheck disable=SC2053  # $p is a glob on purpose (absl_*)
    if [[ "$name" == $p && -f "$libdir/lib$name.a" ]]; then
      echo "$libdir/lib$name.a"
      return 0
    fi
  done
  return 1
}

out=()
grouped=0
for arg in "$@"; do
  name=""
  if [[ "$arg" =~ ^$libdir/lib(.+)\.so(\.[0-9.]+)?$ ]]; then
    name="${BASH_REMATCH[1]}"
  elif [[ "$arg" =~ ^-l(.+)$ ]]; then
    name="${BASH_REMATCH[1]}"
  fi
  if [[ -n "$name" ]] && archive=$(static_for "$name"); then
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
