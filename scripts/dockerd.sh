#!/usr/bin/env bash
# A PRIVATE dockerd for tests and benchmarks: its own data root, exec root, pidfile and socket
# under DIR, no bridge and no iptables changes (containers use --network host).
#
#   scripts/dockerd.sh start DIR   # starts dockerd, waits (deadline) until DIR/docker.sock answers /_ping
#   scripts/dockerd.sh stop DIR    # SIGTERM to exactly the pid in DIR/docker.pid, waits, then SIGKILL
#
# Inside a network namespace of a test's own: `nsenter --net=/run/netns/NAME scripts/dockerd.sh
# start DIR` (not `ip netns exec`, which remounts /sys and hides the cgroup hierarchy dockerd
# needs). --bridge=none only drops the default bridge: a user-defined network (`docker network
# create --subnet ...`) still gives containers addresses of their own, in that namespace only
# (tests/support/docker/netns_dockerd.h).
#
# The exec root is a short directory (/tmp/upk-XXXX, recorded in DIR/exec-root) because
# containerd's unix socket paths must stay under ~108 bytes. Log: DIR/dockerd.log.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z "$cmd" || -z "$dir" ]]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
dockerd=${DOCKERD:-/usr/sbin/dockerd}
timeout_s=${DOCKERD_START_TIMEOUT:-30}

stop() {
  local pidfile=$dir/docker.pid
  if [[ -f "$pidfile" ]]; then
    local pid
    pid=$(cat "$pidfile")
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$pid" 2>/dev/null; then
        echo "dockerd $pid did not stop in 15s; SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -f "$pidfile"
  fi
  if [[ -f "$dir/exec-root" ]]; then
    local exec_root
    exec_root=$(cat "$dir/exec-root")
    # Mounts left behind by a killed daemon would make rm fail; unmount what is under it.
    if [[ -d "$exec_root" ]]; then
      grep -o " $exec_root[^ ]*" /proc/self/mounts 2>/dev/null | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
      done || true
      rm -rf "$exec_root" 2>/dev/null || true
    fi
    rm -f "$dir/exec-root"
  fi
  if [[ -d "$dir/data" ]]; then
    grep -o " $dir/data[^ ]*" /proc/self/mounts 2>/dev/null | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done || true
  fi
}

start() {
  if [[ ! -x "$dockerd" ]]; then
    echo "dockerd not found at $dockerd" >&2
    exit 1
  fi
  if [[ -f "$dir/docker.pid" ]] && kill -0 "$(cat "$dir/docker.pid")" 2>/dev/null; then
    echo "dockerd already running in $dir (pid $(cat "$dir/docker.pid"))" >&2
    exit 1
  fi
  local exec_root
  if [[ -f "$dir/exec-root" ]]; then
    exec_root=$(cat "$dir/exec-root")
    mkdir -p "$exec_root"
  else
    exec_root=$(mktemp -d /tmp/upk-XXXXXX)
    echo "$exec_root" > "$dir/exec-root"
  fi
  mkdir -p "$dir/data"
  local sock=$dir/docker.sock
  if (( ${#sock} > 100 )); then
    echo "socket path too long for a unix socket: $sock" >&2
    exit 1
  fi
  rm -f "$sock"
  # setsid: its own session, so a test's process-group kill does not take it down early.
  setsid "$dockerd" \
    --data-root "$dir/data" \
    --exec-root "$exec_root" \
    --pidfile "$dir/docker.pid" \
    -H "unix://$sock" \
    --bridge=none --iptables=false --ip6tables=false \
    >>"$dir/dockerd.log" 2>&1 </dev/null &
  local pid=$!
  local deadline=$((SECONDS + timeout_s))
  while (( SECONDS < deadline )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "dockerd exited during start; last lines of $dir/dockerd.log:" >&2
      tail -n 20 "$dir/dockerd.log" >&2 || true
      exit 1
    fi
    if [[ -S "$sock" ]] &&
       [[ "$(curl -s --max-time 1 --unix-socket "$sock" http://d/_ping 2>/dev/null)" == "OK" ]]; then
      # The pidfile is written by dockerd; make sure it is there for stop.
      [[ -f "$dir/docker.pid" ]] || echo "$pid" > "$dir/docker.pid"
      echo "dockerd pid $pid socket $sock"
      exit 0
    fi
    sleep 0.05
  done
  echo "dockerd did not answer /_ping within ${timeout_s}s; see $dir/dockerd.log" >&2
  kill -TERM "$pid" 2>/dev/null || true
  exit 1
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
