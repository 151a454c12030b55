#!/usr/bin/env bash
# Installs the Debian packages upkeep needs to build, test and demo, when missing.
# Idempotent: does nothing (and needs no root) when everything is installed.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libyaml-dev nlohmann-json3-dev libcurl4-openssl-dev libcpp-httplib-dev
  libspdlog-dev libsqlite3-dev libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
  clang libclang-rt-14-dev
  nginx docker.io docker-compose monit curl iproute2 procps
  etcd-server golang-etcd-server-dev
  chromium chromium-driver python3-selenium libnss3-tools python3-grpcio python3-grpc-tools python3-protobuf
  dpkg-dev systemd
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
