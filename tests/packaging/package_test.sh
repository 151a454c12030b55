#!/usr/bin/env bash
# Builds the Debian packages (CPack, as `make deb` does) into a temporary directory, checks what
# each holds and says, and runs `systemd-analyze verify` on the systemd units they install.
# Usage: package_test.sh BUILD_DIR
set -euo pipefail
build="$1"
for tool in cpack dpkg-deb systemd-analyze; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool missing (scripts/deps.sh)"; exit 77; }
done
out="$(mktemp -d /tmp/upkeep-deb-XXXXXX)"
trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

(cd "$build" && cpack -G DEB -B "$out" --config CPackConfig.cmake >"$out/cpack.log" 2>&1) ||
  { cat "$out/cpack.log"; fail "cpack"; }

declare -A want=(
  [upkeep-controller]="./usr/bin/upkeep-controller ./usr/lib/systemd/system/upkeep-controller.service ./etc/default/upkeep-controller ./etc/upkeep/manifests/"
  [upkeep-agent]="./usr/bin/upkeep-agent ./usr/lib/systemd/system/upkeep-agent.service ./etc/default/upkeep-agent"
  [upkeepctl]="./usr/bin/upkeepctl ./usr/share/bash-completion/completions/upkeepctl"
)
root="$out/root"
mkdir -p "$root"
for pkg in "${!want[@]}"; do
  deb=$(ls "$out"/${pkg}_*_amd64.deb 2>/dev/null | head -1 || true)
  [ -n "$deb" ] || fail "no ${pkg}_*.deb in $out"
  [ "$(dpkg-deb -f "$deb" Package)" = "$pkg" ] || fail "$deb: Package is not $pkg"
  depends=$(dpkg-deb -f "$deb" Depends)
  grep -q libc6 <<<"$depends" || fail "$pkg: Depends lacks the shared libraries"
  if [ "$pkg" = upkeep-agent ] && grep -q "UPKEEP_STATIC_AGENT:BOOL=ON" "$build/CMakeCache.txt" &&
    grep -qx "UPKEEP_SANITIZE:STRING=" "$build/CMakeCache.txt"; then
    # gRPC, protobuf and abseil are linked into the agent (agent/CMakeLists.txt).
    ! grep -q libgrpc <<<"$depends" || fail "$pkg: static agent depends on libgrpc: $depends"
  else
    grep -q libgrpc <<<"$depends" || fail "$pkg: Depends lacks libgrpc"
  fi
  contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
  for path in ${want[$pkg]}; do
    grep -qxF "$path" <<<"$contents" || fail "$pkg lacks $path"
  done
  dpkg-deb -x "$deb" "$root"
  echo "ok $pkg: $(wc -l <<<"$contents") paths"
done

# Maintainer scripts and conffiles.
ctl="$out/ctl"
dpkg-deb -e "$(ls "$out"/upkeep-controller_*.deb)" "$ctl"
grep -q "adduser --system" "$ctl/postinst" || fail "controller postinst does not create its user"
grep -qx "/etc/default/upkeep-controller" "$ctl/conffiles" || fail "controller conffiles"
sh -n "$ctl/postinst" || fail "controller postinst does not parse"

# The units: what they promise, then systemd's own check (ExecStart pointed at the extracted
# binaries, since nothing is installed on this machine).
units="$root/usr/lib/systemd/system"
grep -qx "Restart=on-failure" "$units/upkeep-controller.service" || fail "controller Restart="
grep -qx "Restart=on-failure" "$units/upkeep-agent.service" || fail "agent Restart="
grep -qx "User=upkeep" "$units/upkeep-controller.service" || fail "controller user"
grep -qx "User=root" "$units/upkeep-agent.service" || fail "agent user"
grep -qx "StateDirectory=upkeep" "$units/upkeep-controller.service" || fail "controller state dir"
grep -qx "NoNewPrivileges=yes" "$units/upkeep-controller.service" || fail "controller hardening"
verify="$out/verify"
mkdir -p "$verify"
for u in "$units"/*.service; do
  sed "s|ExecStart=/usr/bin/|ExecStart=$root/usr/bin/|" "$u" >"$verify/$(basename "$u")"
done
systemd-analyze verify --man=no "$verify"/*.service || fail "systemd-analyze verify"
"$root/usr/bin/upkeepctl" completion bash | cmp -s - "$root/usr/share/bash-completion/completions/upkeepctl" ||
  fail "packaged completion differs from upkeepctl completion bash"
echo "PASS: packages and units"
