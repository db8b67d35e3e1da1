# Shared by the tests that boot a real systemd: sourced by tests/systemd/run.sh and its parts.
#
# It builds a Debian 12 root file system once with debootstrap (cached in
# $SOCKET_PROXYD_TEST_CACHE, default /var/cache/socket-proxyd-test-rootfs), boots systemd as
# PID 1 in a throw-away overlay of it under systemd-nspawn (`boot NAME`), runs commands inside
# (`ct COMMAND...`), and counts checks (`ok MESSAGE`; `die MESSAGE` fails the run and prints the
# container's state and journal). `host_setup` checks the host, installs debootstrap and
# systemd-container if missing, arms the whole-run timeout and builds or finds the file system.
#
# Variables a part may use: $root (the booted container's root, from the host), $work (a
# scratch directory on the host, removed with the container), $cpid, $DIAG_UNITS (the units whose
# status a failure prints), background+=(PID) for host processes to stop at the end,
# scratch+=(DIR) for host directories to remove at the end.

SUITE=bookworm
# libpam-systemd, dbus-user-session: a user manager for a lingering user (part "user");
# podman, containernetworking-plugins, uidmap, slirp4netns, catatonit, busybox-static: the
# rootless podman recipe, with an image made on the spot from busybox (nothing is pulled);
# socat: Unix datagram clients.
PACKAGES=systemd,systemd-sysv,dbus,nginx-light,curl,man-db,dnsmasq-base,bind9-dnsutils,\
libpam-systemd,dbus-user-session,podman,containernetworking-plugins,uidmap,slirp4netns,catatonit,\
busybox-static,socat
CACHE=${SOCKET_PROXYD_TEST_CACHE:-/var/cache/socket-proxyd-test-rootfs}
STAMP="suite=$SUITE packages=$PACKAGES layout=2"
# One directory per package set, so that checkouts with different sets (branches) sharing the
# cache never rebuild each other's.
ROOTFS=$CACHE/$SUITE-$(printf '%s' "$STAMP" | sha256sum | cut -c 1-12)
TIMEOUT=${SOCKET_PROXYD_TEST_TIMEOUT:-2700}
CONTAINER_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DIAG_UNITS="proxy-to-nginx.socket proxy-to-nginx.service nginx.service"

checks=0
work=
root=
mounted=
nspawn_pid=
cpid=
cgroups=()
background=()
scratch=()
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
    # shellcheck disable=SC2086 # A list of units.
    ct timeout 20 systemctl --no-pager --full status $DIAG_UNITS 2>&1 | tail -n 60
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
  for dir in "${scratch[@]}"; do rm -rf --one-file-system "$dir"; done
  if [ -n "$watchdog" ]; then
    kill "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
  fi
  exit "$status"
}


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
  # podman's system units, which the package enables, fail at boot in a container whose root is
  # an overlay ("'overlay' is not supported over overlayfs"); the tests use rootless podman only.
  chroot "$ROOTFS.new" systemctl disable --quiet podman.service podman.socket \
    podman-restart.service podman-auto-update.timer || die "could not disable podman's system units"
  mv "$ROOTFS.new" "$ROOTFS"
  echo "$STAMP" >"$ROOTFS.stamp"
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

# host_setup: everything the host needs before the first boot.
host_setup() {
  [ "$(id -u)" = 0 ] || die "must run as root (it boots a container)"
  [ "$(uname -s)" = Linux ] || die "needs Linux"
  if [ -d /run/systemd/system ]; then
    die "this host runs systemd; the test expects a host without it (as CI's machines) and \
manages cgroups itself. Run it in a VM or container without systemd."
  fi

  trap cleanup EXIT
  trap 'die "interrupted"' INT TERM

  local need=()
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v systemd-nspawn >/dev/null || need+=(systemd-container)
  command -v nsenter >/dev/null || need+=(util-linux)
  if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq
    timeout 300 apt-get install -y -qq "${need[@]}" >/dev/null
  fi

  exec 9>"${CACHE%/}.lock"
  flock -w 900 9 || die "another run holds ${CACHE%/}.lock"
  # The whole run's time counts from here, not from the wait for another run.
  (
    sleep "$TIMEOUT" &
    sleeper=$!
    trap 'kill $sleeper 2>/dev/null; exit 0' TERM
    wait "$sleeper"
    echo "FAIL: the whole run took longer than ${TIMEOUT}s" >&2
    kill -TERM $$
  ) &
  watchdog=$!
  build_rootfs
}

# readme_block FILE NAME: the fenced block that follows the marker "<!-- e2e: NAME -->" in FILE.
readme_block() {
  awk -v marker="<!-- e2e: $2 -->" '
    $0 == marker { found = 1; next }
    found == 1 && /^```/ { found = 2; next }
    found == 2 && /^```/ { exit }
    found == 2 { print }
  ' "$1"
}

# install_package DEB: copies DEB into the container and installs it with apt, as an operator
# does (`apt install ./FILE.deb`); the container has no network, so apt resolves dependencies
# from what is installed.
install_package() {
  local name
  name=$(basename "$1")
  cp "$1" "$root/var/tmp/$name"  # (/tmp is the container's own tmpfs)
  ct timeout 300 env DEBIAN_FRONTEND=noninteractive apt-get install -y "/var/tmp/$name" \
    >"$work/apt-$name.log" 2>&1 || die "apt install ./$name failed: $(cat "$work/apt-$name.log")"
}

# The service manager the recovery checks below talk to: the container's system manager, or a
# user's (`SYSTEMCTL=(runuser -u USER -- env XDG_RUNTIME_DIR=... systemctl --user)`).
SYSTEMCTL=(systemctl)

# sctl ARG...: systemctl of $SYSTEMCTL's manager, in the container.
sctl() {
  ct timeout 60 "${SYSTEMCTL[@]}" "$@"
}

# sprop PROPERTY UNIT: one property of UNIT in $SYSTEMCTL's manager.
sprop() {
  sctl show -p "$1" --value "$2"
}

# check_crash_recovery NAME PROXY BACKEND CLIENT...: kills BACKEND's main process (SIGKILL) while
# PROXY serves: systemd must start BACKEND again by itself (Restart=) while PROXY keeps running,
# and the next client, CLIENT (a command that succeeds when served), must be served at its first
# try.
check_crash_recovery() {
  local name=$1 proxy=$2 backend=$3 p0 b0 b1 t0 t1
  shift 3
  "$@" >/dev/null 2>&1 || die "$name: the client is not served before the crash: $("$@" 2>&1)"
  p0=$(sprop MainPID "$proxy")
  b0=$(sprop MainPID "$backend")
  [ "$p0" != 0 ] && [ "$b0" != 0 ] || die "$name: $proxy ($p0) or $backend ($b0) is not running"
  t0=$(date +%s%N)
  ct sh -c 'kill -KILL "$1"' sh "$b0"
  wait_until 60 eval '[ "$(sprop ActiveState "$backend")" = active ] &&
    b1=$(sprop MainPID "$backend") && [ "$b1" != 0 ] && [ "$b1" != "$b0" ]' ||
    die "$name: $backend was not started again: $(sprop ActiveState "$backend")"
  t1=$(date +%s%N)
  [ "$(sprop MainPID "$proxy")" = "$p0" ] || die "$name: $proxy did not keep running"
  "$@" >/dev/null 2>&1 || die "$name: the first client after the crash was not served: $("$@" 2>&1)"
  ok "$name: kill -9 of $backend (pid $b0): systemd started it again by itself (pid $b1," \
    "$(((t1 - t0) / 1000000)) ms after the kill, Restart=); $proxy kept running (pid $p0), and" \
    "the next client was served at its first try"
}

# check_fix_recovery NAME SOCKET BACKEND BREAK FIX CLIENT...: runs the shell command BREAK (which
# makes BACKEND fail to start) in the container and kills BACKEND: systemd tries it again and
# again, the clients meanwhile (CLIENT) fail, and the socket keeps listening; then FIX, and at
# once `systemctl restart SOCKET`, the documented recovery: the next client must be served.
check_fix_recovery() {
  local name=$1 socket=$2 backend=$3 break=$4 fix=$5 pid clients=0 failed=0 restarts
  shift 5
  ct sh -euc "$break" || die "$name: could not break $backend"
  pid=$(sprop MainPID "$backend")
  [ "$pid" = 0 ] || ct sh -c 'kill -KILL "$1"' sh "$pid"
  restarts=$(sprop NRestarts "$backend")
  until [ "$(sprop NRestarts "$backend")" -ge $((restarts + 3)) ]; do
    [ "$clients" -lt 60 ] || die "$name: $backend is not being restarted: $(sprop ActiveState "$backend")"
    "$@" >/dev/null 2>&1 || failed=$((failed + 1))
    clients=$((clients + 1))
  done
  [ "$failed" -gt 0 ] || die "$name: $clients clients were served while $backend was broken"
  [ "$(sprop ActiveState "$socket")" = active ] ||
    die "$name: $socket is $(sprop ActiveState "$socket") ($(sprop Result "$socket")) meanwhile"
  restarts=$(($(sprop NRestarts "$backend") - restarts))
  ct sh -euc "$fix" || die "$name: could not fix $backend"
  sctl restart "$socket" || die "$name: systemctl restart $socket failed right after the fix"
  "$@" >/dev/null 2>&1 ||
    die "$name: not served after the fix and an immediate restart of $socket: $("$@" 2>&1)" \
      "($backend: $(sprop ActiveState "$backend"), $(sprop Result "$backend"))"
  ok "$name: with $backend broken, systemd tried it again and again ($restarts restarts) while" \
    "$failed of $clients clients failed and $socket kept listening; fixed," \
    "\`systemctl restart $socket\` typed at once served the next client"
}
