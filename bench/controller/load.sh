#!/usr/bin/env bash
# Controller load: a controller on a temp data dir, one stack per simulated host, then
# agent_load with N agents. Prints a markdown row per N.
#   bench/controller/load.sh [BUILD_DIR] [N ...]        (default: build 1000)
# TLS=1: the controller serves mutual TLS with a fresh CA (upkeepctl tls) and every simulated
# agent connects with a certificate of its own (issued by agent_load). LOAD_ARGS="--channels 0"
# gives plaintext agents one connection each as well (what TLS agents always have).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}; shift || true
COUNTS=("${@:-1000}")
for N in "${COUNTS[@]}"; do
  DIR=$(mktemp -d /tmp/upkeep-load-XXXXXX)
  mkdir -p "$DIR/manifests"
  python3 - "$DIR/manifests" "$N" <<'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
# 500 stacks per file: a manifest file may not exceed 1 MiB.
for start in range(0, n, 500):
    with open(f"{d}/stacks-{start:06d}.yaml", "w") as f:
        for i in range(start, min(n, start + 500)):
            f.write(f"""---
apiVersion: upkeep/v1
kind: Stack
metadata: {{name: load-{i}}}
spec:
  hosts: [load-{i}]
  runtime: process
  services:
    - {{name: backend, process: {{command: [backend]}}, port: 8002}}
  policy: {{restartBudget: {{max: 1000, window: 1m}}, backoff: {{initial: 1ms, max: 1ms}}, maxActionsPerMinute: 1000}}
""")
PY
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  TLS_ARGS=(); AGENT_TLS=()
  if [ -n "${TLS:-}" ]; then
    "$BUILD/bin/upkeepctl" tls init --dir "$DIR/pki" >/dev/null
    "$BUILD/bin/upkeepctl" tls issue --dir "$DIR/pki" --controller load --san 127.0.0.1 >/dev/null
    TLS_ARGS=(--tls-cert "$DIR/pki/controller-load.crt" --tls-key "$DIR/pki/controller-load.key"
              --tls-ca "$DIR/pki/ca.crt")
    AGENT_TLS=(--tls_dir "$DIR/pki")
  fi
  "$BUILD/bin/upkeep-controller" --data "$DIR/data" --listen "127.0.0.1:$PORT" \
      --manifests "$DIR/manifests" "${TLS_ARGS[@]}" ${CONTROLLER_ARGS:-} 2> "$DIR/controller.log" &
  CPID=$!
  # Wait until every stack is applied (one Applied event each).
  for _ in $(seq 1 1200); do
    [ "$(grep -c "reason=Applied" "$DIR/controller.log" 2>/dev/null || true)" -ge "$N" ] && break
    sleep 0.1
  done
  "$BUILD/bench/agent_load" --controller "127.0.0.1:$PORT" --agents "$N" --seconds "${SECONDS_PER_RUN:-20}" \
      --controller_pid "$CPID" --period "${PERIOD:-5}" --broken_share "${BROKEN:-0.2}" \
      "${AGENT_TLS[@]}" ${LOAD_ARGS:-} || true
  kill "$CPID"; wait "$CPID" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $DIR" || rm -rf "$DIR"
done
