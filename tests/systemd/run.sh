#!/usr/bin/env bash
# End-to-end test of the example units in systemd/, on a real systemd with a real nginx.
#
# For each scenario (unix-path, namespace) it boots Debian bookworm's systemd as PID 1 in a fresh
# container (systemd-nspawn, private network), installs Deno, the program and the scenario's
# files by running the install blocks of systemd/README.md, and checks:
#   - statically: `systemd-analyze verify` prints nothing for the units, and
#     `systemd-analyze security --offline=true` rates the service at the level the README quotes
#     (at most 1.0); the man page is found and renders without warnings; and the two claims
#     the units' comments make about Deno hold (no MemoryDenyWriteExecute=, a cache directory);
#   - for real: the socket listens and the service starts on the first connection; curl gets
#     nginx's pages through it; the running proxy has the lock-down the unit asks for; network
#     namespaces are what the scenario says (the backend port unreachable from outside nginx's);
#     restarts while clients keep connecting refuse or fail no request; a stop lets a download
#     in flight finish; --exit-idle-time stops the service (with a watchdog running) and the
#     next connection starts it again.
#
# Needs root on Linux, on a host without systemd as PID 1 (as CI's machines); installs
# debootstrap and systemd-container with apt-get when they are missing. The root file system
# (~230 MB) is built once with debootstrap from the Debian mirror apt on this machine uses, and
# cached in $SOCKET_PROXYD_TEST_CACHE (default /var/cache/socket-proxyd-test-rootfs); every run
# boots a throw-away overlay of it. Prints one line per check that passes; exits non-zero with
# a message (and the container's logs) at the first that fails.
#
# Environment: DENO (the deno binary to install; default: the real binary behind `deno` on
# PATH, else behind `npx -y deno@2.9.6`), SOCKET_PROXYD_TEST_CACHE, SOCKET_PROXYD_TEST_MIRROR
# (a Debian mirror URL instead of apt's), SOCKET_PROXYD_TEST_TIMEOUT (seconds for the whole run,
# default 900).
set -euo pipefail
export LC_ALL=C

SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,nginx-light,curl,man-db
CACHE=${SOCKET_PROXYD_TEST_CACHE:-/var/cache/socket-proxyd-test-rootfs}
ROOTFS=$CACHE/$SUITE
STAMP="suite=$SUITE packages=$PACKAGES layout=1"
TIMEOUT=${SOCKET_PROXYD_TEST_TIMEOUT:-900}
DENO_VERSION=2.9.6
CONTAINER_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

repo=$(cd "$(dirname "$0")/../.." && pwd)
readme=$repo/systemd/README.md

checks=0
work=
root=
mounted=
nspawn_pid=
cpid=
cgroups=()
background=()
watchdog=

ok() {
  checks=$((checks + 1))
  printf 'ok %2d - %s\n' "$checks" "$*"
}

die() {
  printf '\nFAIL: %s\n' "$*" >&2
  exit 1
}

# wait_until SECONDS COMMAND...: runs COMMAND every 0.2s until it succeeds; fails after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# ct COMMAND...: runs COMMAND inside the container, with a clean environment.
ct() {
  nsenter --target="$cpid" --all env -i PATH="$CONTAINER_PATH" LANG=C.UTF-8 SYSTEMD_COLORS=0 \
    SYSTEMD_PAGER= "$@"
}

diagnostics() {
  {
    echo "---- container state at the failure"
    ct timeout 20 systemctl --no-pager --full status proxy-to-nginx.socket proxy-to-nginx.service \
      nginx.service 2>&1 | tail -n 60
    echo "---- journal (last 80 lines)"
    ct timeout 20 journalctl --no-pager -n 80 2>&1
    echo "---- end"
  } >&2 || true
}

stop_container() {
  if [ -n "$nspawn_pid" ]; then
    if kill -0 "$nspawn_pid" 2>/dev/null; then
      # systemd-nspawn turns SIGTERM into an orderly power-off of the container.
      kill -TERM "$nspawn_pid" 2>/dev/null || true
      wait_until 30 eval '! kill -0 '"$nspawn_pid" || kill -KILL "$nspawn_pid" 2>/dev/null || true
    fi
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  nspawn_pid=
  cpid=
  local cg dir pid
  for cg in "${cgroups[@]}"; do
    [ -d "$cg" ] || continue
    # Whatever the container left behind, deepest groups first.
    while IFS= read -r dir; do
      while IFS= read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$dir/cgroup.procs"
      wait_until 10 rmdir "$dir" || echo "warning: could not remove cgroup $dir" >&2
    done < <(find "$cg" -depth -type d)
  done
  cgroups=()
  if [ -n "$mounted" ]; then
    umount "$mounted" 2>/dev/null || umount -l "$mounted" 2>/dev/null || true
    mounted=
  fi
  if [ -n "$work" ]; then
    rm -rf --one-file-system "$work"
    work=
  fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [ "$status" -ne 0 ] && [ -n "$cpid" ] && [ -d "/proc/$cpid" ]; then diagnostics; fi
  local pid
  for pid in "${background[@]}"; do
    pkill -TERM -P "$pid" 2>/dev/null
    kill "$pid" 2>/dev/null
  done
  for pid in "${background[@]}"; do wait "$pid" 2>/dev/null; done
  stop_container
  if [ -n "$watchdog" ]; then
    kill "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
  fi
  exit "$status"
}

# ---------------------------------------------------------------------------------------------
# The host.

[ "$(id -u)" = 0 ] || die "must run as root (it boots a container)"
[ "$(uname -s)" = Linux ] || die "needs Linux"
[ -f "$readme" ] || die "no $readme"
if [ -d /run/systemd/system ]; then
  die "this host runs systemd; the test expects a host without it (as CI's machines) and manages \
cgroups itself. Run it in a VM or container without systemd."
fi

trap cleanup EXIT
trap 'die "interrupted"' INT TERM
(
  sleep "$TIMEOUT" &
  sleeper=$!
  trap 'kill $sleeper 2>/dev/null; exit 0' TERM
  wait "$sleeper"
  echo "FAIL: the whole run took longer than ${TIMEOUT}s" >&2
  kill -TERM $$
) &
watchdog=$!

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v nsenter >/dev/null || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq
  timeout 300 apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The real deno binary (not npx's launcher), to copy into the container.
if [ -n "${DENO:-}" ]; then
  deno_bin=$DENO
elif command -v deno >/dev/null; then
  deno_bin=$(deno eval 'console.log(Deno.execPath())')
else
  deno_bin=$(timeout 300 npx -y "deno@$DENO_VERSION" eval 'console.log(Deno.execPath())')
fi
deno_bin=$(readlink -f "$deno_bin")
[ -x "$deno_bin" ] || die "no deno binary at '$deno_bin'"
# (No `| head`: with pipefail, a writer that head leaves behind fails with SIGPIPE.)
deno_version=$("$deno_bin" --version)
deno_version=${deno_version%%$'\n'*}
echo "== deno: $deno_bin ($deno_version)"

# The Debian mirror apt uses here: the first "deb" source for $SUITE (deb822 or one-line).
debian_mirror() {
  if [ -n "${SOCKET_PROXYD_TEST_MIRROR:-}" ]; then
    echo "$SOCKET_PROXYD_TEST_MIRROR"
    return
  fi
  local files=()
  shopt -s nullglob
  files=(/etc/apt/sources.list.d/*.sources)
  if [ "${#files[@]}" -gt 0 ]; then
    awk -v suite="$SUITE" '
      function flush() {
        if (found) return
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && (" " suites " ") ~ ("[ \t]" suite "[ \t]") &&
            tolower(enabled) != "no" && uris != "") {
          split(uris, u, /[ \t]+/); print u[1]; found = 1; exit
        }
        types = suites = uris = enabled = ""
      }
      FNR == 1 && NR > 1 { flush() }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { key = tolower($1); value = $0; sub(/^[^:]*:[ \t]*/, "", value) }
      key == "types:" { types = value }
      key == "uris:" { uris = value }
      key == "suites:" { suites = value }
      key == "enabled:" { enabled = value }
      END { flush() }
    ' "${files[@]}"
  fi
  files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  shopt -u nullglob
  local file
  for file in "${files[@]}"; do
    [ -f "$file" ] || continue
    awk -v suite="$SUITE" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }
    ' "$file"
  done
}

build_rootfs() {
  if [ -d "$ROOTFS" ] && [ "$(cat "$ROOTFS.stamp" 2>/dev/null)" = "$STAMP" ]; then
    echo "== root file system: cached in $ROOTFS"
    return
  fi
  local mirror
  mirror=$(debian_mirror)
  mirror=${mirror%%$'\n'*}
  [ -n "$mirror" ] || die "found no Debian source for $SUITE in /etc/apt/sources.list*; set \
SOCKET_PROXYD_TEST_MIRROR"
  echo "== building the root file system in $ROOTFS (debootstrap $SUITE from apt's mirror)"
  mkdir -p "$CACHE"
  rm -rf --one-file-system "$ROOTFS.new" "$ROOTFS" "$ROOTFS.stamp"
  if ! timeout 900 debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS.new" \
    "$mirror" >"$CACHE/debootstrap.log" 2>&1; then
    tail -n 30 "$CACHE/debootstrap.log" >&2
    die "debootstrap failed (log: $CACHE/debootstrap.log)"
  fi
  rm -f "$ROOTFS.new"/var/cache/apt/archives/*.deb
  mv "$ROOTFS.new" "$ROOTFS"
  echo "$STAMP" >"$ROOTFS.stamp"
}

exec 9>"${CACHE%/}.lock"
flock -w 900 9 || die "another run holds ${CACHE%/}.lock"
build_rootfs

# ---------------------------------------------------------------------------------------------
# The container.

# The fenced block that follows the marker "<!-- e2e: NAME -->" in systemd/README.md.
readme_block() {
  awk -v marker="<!-- e2e: $1 -->" '
    $0 == marker { found = 1; next }
    found == 1 && /^```/ { found = 2; next }
    found == 2 && /^```/ { exit }
    found == 2 { print }
  ' "$readme"
}

container_pid() {
  local pid
  pid=$(pgrep -P "$nspawn_pid" -x systemd) || return 1
  pid=${pid%%$'\n'*}
  [ -n "$pid" ] && [ -S "/proc/$pid/root/run/systemd/private" ] || return 1
  cpid=$pid
}

boot() {
  local name=$1
  work=$(mktemp -d /var/tmp/socket-proxyd-e2e.XXXXXX)
  root=$work/root
  mkdir "$work/upper" "$work/overlay-work" "$root"
  if mount -t overlay overlay \
    -o "lowerdir=$ROOTFS,upperdir=$work/upper,workdir=$work/overlay-work" "$root" 2>/dev/null; then
    mounted=$root
  else
    cp -a "$ROOTFS/." "$root/"
  fi

  # A checkout of the project, and Deno, as the README's install steps expect them.
  mkdir -p "$root/usr/src/socket-proxyd"
  cp -r "$repo/main.ts" "$repo/src" "$repo/deno.json" "$repo/deno.lock" "$repo/systemd" \
    "$root/usr/src/socket-proxyd/"
  install -m 0755 "$deno_bin" "$root/usr/local/bin/deno"

  # The host has no systemd, so nobody gives the container a cgroup: make one and start nspawn
  # in it. Where the host mounts cgroup v2 beside v1 (hybrid), give the container v2 only, which
  # systemd's BPF firewall (IPAddressDeny=) needs.
  local cg=socket-proxyd-e2e-$$-$name unified=
  cgroups=()
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cgroups+=("/sys/fs/cgroup/$cg")
  else
    [ -d /sys/fs/cgroup/systemd ] && cgroups+=("/sys/fs/cgroup/systemd/$cg")
    [ -d /sys/fs/cgroup/unified ] && cgroups+=("/sys/fs/cgroup/unified/$cg") && unified=1
  fi
  [ "${#cgroups[@]}" -gt 0 ] || die "no cgroup hierarchy under /sys/fs/cgroup"
  mkdir "${cgroups[@]}"
  (
    for dir in "${cgroups[@]}"; do echo "$BASHPID" >"$dir/cgroup.procs"; done
    if [ -n "$unified" ]; then export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1; fi
    # --system-call-filter=bpf: let the container's systemd load its BPF firewall programs.
    exec systemd-nspawn --quiet --directory="$root" --machine="socket-proxyd-$name" --boot \
      --register=no --keep-unit --private-network --system-call-filter=bpf --console=passive
  ) >"$work/console.log" 2>&1 </dev/null &
  nspawn_pid=$!

  if ! wait_until 60 container_pid; then
    cat "$work/console.log" >&2
    die "$name: the container's systemd did not come up within 60s"
  fi
  local state
  state=$(ct timeout 120 systemctl is-system-running --wait 2>&1) || true
  case $state in
    running) ;;
    degraded) echo "note: the container's system is degraded:" \
      "$(ct systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')" ;;
    *) die "$name: the container's systemd did not finish booting ($state)" ;;
  esac
  local version
  version=$(ct systemctl --version)
  ok "$name: booted ${version%%$'\n'*} as PID 1 in a container"
}

# ---------------------------------------------------------------------------------------------
# The checks.

token=socket-proxyd-e2e-$RANDOM$RANDOM

# fetch PATH: prints what GET http://localhost:80/PATH returns, through the proxy.
fetch() {
  ct timeout 20 curl -sS --fail -m 15 "http://localhost:80/$1"
}

prop() {
  ct timeout 20 systemctl show -p "$1" --value "$2"
}

service_inactive() {
  [ "$(prop ActiveState proxy-to-nginx.service)" = inactive ]
}

# netns PID: the network namespace of the container's process PID.
netns() {
  ct readlink "/proc/$1/ns/net"
}

check_static() {
  local name=$1 out level
  out=$(ct timeout 60 systemd-analyze verify /etc/systemd/system/proxy-to-nginx.socket \
    /etc/systemd/system/proxy-to-nginx.service nginx.service 2>&1) ||
    die "$name: systemd-analyze verify failed: $out"
  [ -z "$out" ] || die "$name: systemd-analyze verify printed: $out"
  ok "$name: systemd-analyze verify prints nothing for proxy-to-nginx.{socket,service}" \
    "and nginx.service with the drop-in"

  out=$(ct timeout 60 systemd-analyze security --offline=true --no-pager \
    /etc/systemd/system/proxy-to-nginx.service 2>&1) ||
    die "$name: systemd-analyze security failed: $out"
  level=$(sed -n 's/.*Overall exposure level for proxy-to-nginx.service: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p' \
    <<<"$out")
  [ -n "$level" ] || die "$name: no exposure level in: $out"
  awk -v l="${level% *}" 'BEGIN { exit !(l <= 1.0) }' ||
    die "$name: exposure $level is above 1.0:"$'\n'"$out"
  grep -qE "$name/proxy-to-nginx\.service\`[ |]*${level% *} ${level#* }" "$readme" ||
    die "$name: systemd/README.md does not quote the exposure level $level for" \
      "$name/proxy-to-nginx.service"
  ok "$name: systemd-analyze security --offline=true: exposure $level, as the README says"
}

check_manpage() {
  local out
  out=$(ct man -w socket-proxyd 2>&1) || die "man -w socket-proxyd: $out"
  local warnings
  warnings=$(ct sh -c 'MANWIDTH=80 man --warnings socket-proxyd 2>&1 >/dev/null') || true
  [ -z "$warnings" ] || die "the man page renders with warnings: $warnings"
  # (Output is captured before grep -q sees it: with pipefail, a writer that grep -q leaves
  # behind would fail with SIGPIPE.)
  local page
  page=$(ct sh -c 'MANWIDTH=80 man socket-proxyd') || die "man socket-proxyd failed"
  grep -q 'connections-max' <<<"$page" || die "man socket-proxyd does not show the options"
  ok "man socket-proxyd finds $out and renders it without warnings"
}

check_firewall() {
  # The default site still listens on port 80 here: a client under IPAddressDeny=any must not
  # reach it, and one without must.
  ct timeout 30 systemd-run --quiet --wait --pipe curl -sS -o /dev/null -m 5 http://127.0.0.1:80/ ||
    die "curl in a transient service cannot reach nginx"
  if ct timeout 30 systemd-run --quiet --wait --pipe -p IPAddressDeny=any \
    curl -sS -o /dev/null -m 5 http://127.0.0.1:80/ 2>/dev/null; then
    die "IPAddressDeny= is not enforced in this container (no BPF firewall)"
  fi
  ok "the container's systemd enforces IPAddressDeny= (BPF firewall), so the units' IP lists are live"
}

check_mdwe() {
  local out
  out=$(ct timeout 60 systemd-run --quiet --wait --pipe -p Environment=DENO_DIR=/tmp/deno-e2e \
    /usr/local/bin/deno eval 'console.log(6 * 7)' 2>&1) || die "deno eval failed: $out"
  [ "$out" = 42 ] || die "deno eval printed: $out"
  if out=$(ct timeout 60 systemd-run --wait --pipe -p MemoryDenyWriteExecute=yes \
    -p Environment=DENO_DIR=/tmp/deno-e2e /usr/local/bin/deno eval 'console.log(6 * 7)' 2>&1); then
    die "Deno runs under MemoryDenyWriteExecute=yes: the units' comment that it cannot is wrong"
  fi
  ok "Deno cannot run under MemoryDenyWriteExecute=yes (V8 needs writable executable memory):" \
    "$(grep -m 1 -E 'Finished with result|Check failed|Fatal|error' <<<"$out" | cut -c1-90)"
}

check_cache_needed() {
  local out
  if out=$(ct timeout 60 systemd-run --quiet --wait --pipe -p DynamicUser=yes \
    -p ProtectSystem=strict /usr/local/bin/socket-proxyd --version 2>&1); then
    die "Deno starts without a writable DENO_DIR: the units' comment that it cannot is wrong"
  fi
  grep -q 'Could not resolve global Deno cache directory' <<<"$out" ||
    die "Deno without DENO_DIR failed otherwise than expected: $out"
  ok "without CacheDirectory= and DENO_DIR, Deno cannot start under DynamicUser=yes and" \
    "ProtectSystem=strict (\"Could not resolve global Deno cache directory\")"
}

install_scenario() {
  local name=$1 block
  block=$(readme_block install-program)
  [ -n "$block" ] || die "systemd/README.md has no install-program block"
  ct timeout 60 sh -euxc "cd /usr/src/socket-proxyd; $block" >"$work/install.log" 2>&1 ||
    die "the README's program install failed: $(cat "$work/install.log")"
  block=$(readme_block "install-$name")
  [ -n "$block" ] || die "systemd/README.md has no install-$name block"
  ct timeout 120 sh -euxc "cd /usr/src/socket-proxyd; $block" >>"$work/install.log" 2>&1 ||
    die "$name: the README's install steps failed: $(cat "$work/install.log")"
  printf '%s\n' "$token" >"$root/var/www/html/e2e.txt"
  head -c 24000000 /dev/urandom >"$root/var/www/html/big.bin"
  ok "$name: installed with the README's commands"
}

check_activation() {
  local name=$1 target=$2 page pid status
  [ "$(prop SubState proxy-to-nginx.socket)" = listening ] ||
    die "$name: proxy-to-nginx.socket is not listening"
  service_inactive || die "$name: proxy-to-nginx.service runs before any client came"
  ok "$name: proxy-to-nginx.socket listens on port 80; the service waits for the first client"

  local t0 t1
  t0=$(date +%s%N)
  page=$(ct timeout 20 curl -sS --fail -m 15 http://localhost:80/) ||
    die "$name: curl http://localhost:80/ failed"
  t1=$(date +%s%N)
  grep -q 'Welcome to nginx!' <<<"$page" || die "$name: curl http://localhost:80/ got: $page"
  [ "$(fetch e2e.txt)" = "$token" ] || die "$name: wrong content for /e2e.txt"
  ok "$name: curl http://localhost:80/ gets nginx's page through the proxy (first start, with" \
    "an empty Deno cache: $(((t1 - t0) / 1000000)) ms)"

  [ "$(prop ActiveState proxy-to-nginx.service)" = active ] ||
    die "$name: the service is not active after a client came"
  status=$(prop StatusText proxy-to-nginx.service)
  [[ $status == "Forwarding to $target: "* ]] || die "$name: unexpected status '$status'"
  pid=$(prop MainPID proxy-to-nginx.service)
  [ "$(ct readlink "/proc/$pid/exe")" = /usr/local/bin/deno ] ||
    die "$name: the main process is not deno: $(ct readlink "/proc/$pid/exe")"
  ok "$name: Type=notify: started on the first connection, main process deno (the wrapper" \
    "exec'd), status \"$status\""
}

check_lockdown() {
  local name=$1 pid st uid
  pid=$(prop MainPID proxy-to-nginx.service)
  st=$(ct cat "/proc/$pid/status")
  uid=$(awk '/^Uid:/ { print $2 }' <<<"$st")
  [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ] || die "$name: not a dynamic user: uid $uid"
  grep -q '^CapEff:[[:space:]]*0000000000000000$' <<<"$st" || die "$name: has capabilities"
  grep -q '^CapBnd:[[:space:]]*0000000000000000$' <<<"$st" || die "$name: capability bounding set"
  grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$st" || die "$name: NoNewPrivs is not set"
  grep -q '^Seccomp:[[:space:]]*2$' <<<"$st" || die "$name: no seccomp filter"
  [ "$(ct cat "/proc/$pid/uid_map" | awk '{print $1}' | tr '\n' ' ')" = "0 $uid " ] ||
    die "$name: not in a private user namespace: $(ct cat "/proc/$pid/uid_map")"
  [ -n "$(ct ls -A /var/cache/private/socket-proxyd/)" ] ||
    die "$name: Deno wrote nothing to its cache /var/cache/private/socket-proxyd"
  ok "$name: the proxy runs as dynamic user $uid in a user namespace, no capabilities," \
    "no new privileges, seccomp on; Deno's cache is in /var/cache/private/socket-proxyd"
}

check_restarts() {
  local name=$1 i before after loops=4 seconds=7 good bad
  for i in $(seq "$loops"); do
    ct timeout $((seconds + 30)) sh -c '
      end=$(($(date +%s) + '"$seconds"'))
      while [ "$(date +%s)" -lt "$end" ]; do
        if out=$(curl -sS --fail -m 15 http://localhost:80/e2e.txt 2>&1) && [ "$out" = "$1" ]; then
          echo ok
        else
          echo "failed: $out"
        fi
      done' sh "$token" >"$work/load.$i" 2>&1 &
    background+=($!)
  done
  sleep 1
  for i in 1 2 3; do
    before=$(prop MainPID proxy-to-nginx.service)
    ct timeout 60 systemctl restart proxy-to-nginx.service ||
      die "$name: systemctl restart failed"
    after=$(prop MainPID proxy-to-nginx.service)
    [ "$after" != 0 ] && [ "$after" != "$before" ] ||
      die "$name: restart $i did not start a new process ($before -> $after)"
    [ "$(prop SubState proxy-to-nginx.socket)" = running ] ||
      die "$name: the socket is not bound after restart $i"
    sleep 1.5
  done
  for i in "${background[@]}"; do wait "$i" || true; done
  background=()
  good=$(cat "$work"/load.* | grep -c '^ok$' || true)
  bad=$(cat "$work"/load.* | grep -vc '^ok$' || true)
  [ "$bad" = 0 ] || die "$name: $bad of $((good + bad)) requests failed during restarts:" \
    "$(grep -hv '^ok$' "$work"/load.* | sort | uniq -c)"
  [ "$good" -ge 20 ] || die "$name: only $good requests got through in ${seconds}s"
  [ "$(prop NRefused proxy-to-nginx.socket)" = 0 ] || die "$name: the socket refused connections"
  ok "$name: 3 restarts while $loops clients kept connecting: $good requests, none failed or" \
    "refused"
}

check_drain() {
  local name=$1 size fetcher pid out
  pid=$(prop MainPID proxy-to-nginx.service)
  # 24 MB at 4 MB/s: still in flight after a second, more than the kernel's buffers can hold.
  ct timeout 60 curl -sS --fail -m 50 --limit-rate 4M -o /dev/null -w '%{size_download}' \
    http://localhost:80/big.bin >"$work/drain.out" 2>&1 &
  fetcher=$!
  background+=("$fetcher")
  sleep 1
  ct timeout 60 systemctl restart proxy-to-nginx.service || die "$name: systemctl restart failed"
  wait "$fetcher" || die "$name: the download broke off at the stop: $(cat "$work/drain.out")"
  background=()
  size=$(cat "$work/drain.out")
  [ "$size" = 24000000 ] || die "$name: the download got $size of 24000000 bytes"
  out=$(ct timeout 20 journalctl --no-pager _PID="$pid")
  grep -q 'Received SIGTERM, stopping: no longer accepting; 1 connection(s) open' <<<"$out" ||
    die "$name: the journal shows no graceful stop of pid $pid with one connection open"
  ok "$name: a restart while a 24 MB download was in flight let it finish (graceful drain)"
}

check_idle() {
  local name=$1 execstart short first second started stopped out
  execstart=$(sed -n 's/^ExecStart=//p' "$repo/systemd/$name/proxy-to-nginx.service")
  short=${execstart/--exit-idle-time=5min/--exit-idle-time=5s}
  [ "$short" != "$execstart" ] || die "$name: ExecStart has no --exit-idle-time=5min: $execstart"
  # A drop-in, as an operator adapts the unit: a short idle time, and a watchdog that would
  # kill the proxy before it went idle if WATCHDOG=1 did not arrive.
  ct sh -euc 'mkdir -p /etc/systemd/system/proxy-to-nginx.service.d
    printf "[Service]\nExecStart=\nExecStart=%s\nWatchdogSec=2s\n" "$1" \
      >/etc/systemd/system/proxy-to-nginx.service.d/e2e.conf
    systemctl daemon-reload
    # (systemctl warns that the socket can still start it: that is the point.)
    systemctl stop proxy-to-nginx.service 2>/dev/null' sh "$short"
  service_inactive || die "$name: could not stop the service"
  [ "$(prop SubState proxy-to-nginx.socket)" = listening ] || die "$name: socket not listening"

  [ "$(fetch e2e.txt)" = "$token" ] || die "$name: no answer after the stop"
  first=$(prop MainPID proxy-to-nginx.service)
  [ "$first" != 0 ] || die "$name: the connection did not start the service"
  started=$SECONDS
  wait_until 30 service_inactive || die "$name: the service did not exit when idle"
  stopped=$SECONDS
  [ "$(prop Result proxy-to-nginx.service)" = success ] ||
    die "$name: the idle exit was not a success: $(prop Result proxy-to-nginx.service)"
  [ $((stopped - started)) -ge 4 ] || die "$name: exited after $((stopped - started))s, not 5s"
  out=$(ct timeout 20 journalctl --no-pager _PID="$first")
  grep -q 'Exiting after 5s without connections' <<<"$out" ||
    die "$name: no idle exit in the journal"
  [ "$(prop SubState proxy-to-nginx.socket)" = listening ] ||
    die "$name: the socket is not listening after the idle exit"
  ok "$name: --exit-idle-time=5s stopped the service (status 0, WatchdogSec=2s kept happy);" \
    "the socket stays bound"

  local t0 t1
  t0=$(date +%s%N)
  [ "$(fetch e2e.txt)" = "$token" ] || die "$name: no answer after the idle exit"
  t1=$(date +%s%N)
  second=$(prop MainPID proxy-to-nginx.service)
  [ "$second" != 0 ] && [ "$second" != "$first" ] ||
    die "$name: the next connection did not start a new process"
  ok "$name: the next connection started it again (pid $first, then $second) and was answered" \
    "in $(((t1 - t0) / 1000000)) ms, start-up included"
  ct rm -f /etc/systemd/system/proxy-to-nginx.service.d/e2e.conf
  ct systemctl daemon-reload
}

# ---------------------------------------------------------------------------------------------
# The scenarios.

scenario_unix_path() {
  local name=unix-path pid nginx
  boot "$name"
  check_firewall
  install_scenario "$name"
  check_static "$name"
  check_manpage
  check_mdwe
  check_cache_needed
  [ "$(ct stat -c '%U:%G %a' /run/nginx)" = "root:www-data 750" ] ||
    die "$name: /run/nginx is $(ct stat -c '%U:%G %a' /run/nginx), not root:www-data 750"
  ok "$name: nginx's socket directory /run/nginx is root:www-data 0750"
  check_activation "$name" /run/nginx/socket
  check_lockdown "$name"
  pid=$(prop MainPID proxy-to-nginx.service)
  nginx=$(prop MainPID nginx.service)
  grep -q '^Groups:.*\b33\b' <<<"$(ct cat "/proc/$pid/status")" ||
    die "$name: the proxy is not in group www-data"
  [ "$(netns "$pid")" != "$(netns 1)" ] && [ "$(netns "$pid")" != "$(netns "$nginx")" ] ||
    die "$name: the proxy is not in a network namespace of its own"
  [ "$(ct nsenter -t "$pid" -n cat /proc/net/dev | awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }')" = lo ] ||
    die "$name: the proxy's network namespace has more than a loopback device"
  ok "$name: the proxy is in group www-data and has a network namespace of its own with" \
    "loopback only (PrivateNetwork=yes), yet serves port 80"
  check_restarts "$name"
  check_drain "$name"
  check_idle "$name"
  stop_container
}

scenario_namespace() {
  local name=namespace pid nginx code
  boot "$name"
  install_scenario "$name"
  check_static "$name"
  check_activation "$name" 127.0.0.1:8080
  check_lockdown "$name"
  pid=$(prop MainPID proxy-to-nginx.service)
  nginx=$(prop MainPID nginx.service)
  [ "$(netns "$pid")" = "$(netns "$nginx")" ] ||
    die "$name: the proxy is not in nginx's network namespace"
  [ "$(netns "$pid")" != "$(netns 1)" ] ||
    die "$name: nginx and the proxy are in the container's main network namespace"
  ok "$name: the proxy shares nginx's network namespace ($(netns "$pid")), not the main one" \
    "($(netns 1))"
  code=0
  ct timeout 20 curl -sS -m 5 -o /dev/null http://127.0.0.1:8080/ 2>/dev/null || code=$?
  [ "$code" = 7 ] || die "$name: 127.0.0.1:8080 outside nginx's namespace: curl exit $code, not 7"
  ct timeout 20 nsenter -t "$nginx" -n curl -sS --fail -m 5 -o /dev/null http://127.0.0.1:8080/ ||
    die "$name: nginx does not answer on 127.0.0.1:8080 in its own namespace"
  ok "$name: 127.0.0.1:8080 answers inside nginx's namespace and is refused outside it"
  check_restarts "$name"
  check_drain "$name"
  check_idle "$name"
  stop_container
}

echo "== unix-path: port 80 -> nginx's Unix socket"
scenario_unix_path
echo "== namespace: port 80 -> nginx on 127.0.0.1:8080 in its private network namespace"
scenario_namespace
echo "== systemd e2e: all $checks checks passed in ${SECONDS}s"
