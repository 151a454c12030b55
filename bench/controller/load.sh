#!/usr/bin/env bash
# Controller load: a controller on a temp data dir, one stack per simulated host, then
# agent_load with N agents. Prints a markdown row per N.
#   bench/controller/load.sh [BUILD_DIR] [N ...]        (default: build 1000)
# TLS=1: the controller serves mutual TLS with a fresh CA (upkeepctl tls) and every simulated
# agent connects with a certificate of its own (issued by agent_load). LOAD_ARGS="--channels 0"
# gives plaintext agents one connection each as well (what TLS agents always have).
# STORE=etcd: the controller runs as a replica on etcd (--store etcd) instead of SQLite, against
# an etcd cluster of ETCD_MEMBERS (default 3) members started here on loopback ports (Debian's
# etcd-server, plaintext on 127.0.0.1, etcd's default heartbeat/election timing, data in the run's
# temp dir), killed by pid at the end. The controller is the only replica: it elects itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}; shift || true
COUNTS=("${@:-1000}")
ETCD_PIDS=(); CPID=""
# Whatever happens, nothing started here outlives the script (by pid).
trap 'for p in ${CPID} ${ETCD_PIDS[@]+"${ETCD_PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done' EXIT
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
  STORE_ARGS=(); ETCD_PIDS=()
  if [ "${STORE:-sqlite}" = etcd ]; then
    MEMBERS=${ETCD_MEMBERS:-3}
    # Client and peer ports, all held at once while picked so none repeats.
    read -r -a PORTS <<< "$(python3 - "$MEMBERS" <<'PY'
import socket, sys
ss = []
for _ in range(2 * int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))
PY
)"
    CLUSTER=""; ENDPOINTS=""
    for ((i = 0; i < MEMBERS; i++)); do
      CLUSTER+="${CLUSTER:+,}m$i=http://127.0.0.1:${PORTS[$((MEMBERS + i))]}"
      ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:${PORTS[$i]}"
    done
    for ((i = 0; i < MEMBERS; i++)); do
      C="http://127.0.0.1:${PORTS[$i]}"; P="http://127.0.0.1:${PORTS[$((MEMBERS + i))]}"
      # --max-txn-ops / --max-request-bytes: one apply of every stack is one transaction.
      etcd --name "m$i" --data-dir "$DIR/etcd/m$i" --listen-client-urls "$C" \
          --advertise-client-urls "$C" --listen-peer-urls "$P" --initial-advertise-peer-urls "$P" \
          --initial-cluster "$CLUSTER" --initial-cluster-state new \
          --initial-cluster-token upkeep-load --max-txn-ops $((2 * N + 64)) \
          --max-request-bytes $((N * 1024 + 2097152)) --logger zap --log-level warn \
          --listen-metrics-urls "" --enable-pprof=false 2> "$DIR/etcd-m$i.log" &
      ETCD_PIDS+=($!)
    done
    for ((i = 0; i < MEMBERS; i++)); do
      for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:${PORTS[$i]}/health" 2>/dev/null | grep -q '"true"' && break
        sleep 0.1
      done
    done
    echo "etcd: $MEMBERS member(s) at $ENDPOINTS"
    STORE_ARGS=(--store etcd --etcd-endpoints "$ENDPOINTS")
  fi
  "$BUILD/bin/upkeep-controller" --data "$DIR/data" --listen "127.0.0.1:$PORT" \
      --manifests "$DIR/manifests" "${STORE_ARGS[@]}" "${TLS_ARGS[@]}" ${CONTROLLER_ARGS:-} \
      2> "$DIR/controller.log" &
  CPID=$!
  # Wait until every stack is applied (one Applied event each).
  for _ in $(seq 1 1200); do
    [ "$(grep -c "reason=Applied" "$DIR/controller.log" 2>/dev/null || true)" -ge "$N" ] && break
    sleep 0.1
  done
  echo "controller RSS with every stack applied, before any agent: $(awk '/VmRSS/ {printf "%.1f MB", $2 / 1024}' "/proc/$CPID/status")"
  "$BUILD/bench/agent_load" --controller "127.0.0.1:$PORT" --agents "$N" --seconds "${SECONDS_PER_RUN:-20}" \
      --controller_pid "$CPID" --period "${PERIOD:-5}" --broken_share "${BROKEN:-0.2}" \
      "${AGENT_TLS[@]}" ${LOAD_ARGS:-} || true
  kill "$CPID"; wait "$CPID" 2>/dev/null || true; CPID=""
  for p in ${ETCD_PIDS[@]+"${ETCD_PIDS[@]}"}; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ETCD_PIDS=()
  [ -n "${KEEP:-}" ] && echo "kept $DIR" || rm -rf "$DIR"
done
