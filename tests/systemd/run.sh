#!/usr/bin/env bash
# End-to-end tests on a real systemd, with the Debian package, real nginx and real clients.
#
# Boots Debian 12's systemd 252 as PID 1 in throw-away containers (systemd-nspawn, private
# network; see lib.sh) that have neither Deno nor Node, installs the package built by
# `deno task deb` with `apt install ./socket-proxyd_VERSION_amd64.deb`, and runs these parts:
#   scenarios  both scenarios of systemd-socket-proxyd(8) from the installed example units:
#              static checks, activation, lock-down, namespaces, restarts under load, graceful
#              drain, idle exit and restart; nginx killed, nginx broken and the documented
#              recovery (scenarios.sh)
#   package    upgrade in place to the next version while clients keep connecting; remove and
#              purge leave nothing behind (package.sh)
#   startup    connect() to first byte through a freshly started proxy, in the units and bare,
#              beside systemd-socket-proxyd (startup.sh)
#   shapes     the unit shapes operators write: inetd style, logs, a user without a home, a
#              backend stopped when unneeded, templated instances (shapes.sh)
#   templates  the package's template units with every instance form (PORT, IPv4:PORT,
#              [IPv6]:PORT, a Unix path) and its conf; a missing or bad conf, and the recovery;
#              datagram sockets with the drop-ins of systemd/datagram/ (templates.sh)
#   user       the package's user units (systemctl --user) for a lingering user: a port and a
#              path under %t, readiness, lock-down, the exact write grants, a bad conf and its
#              recovery, logs through the journal's socket, the README's URL unit, the rootless
#              podman recipe with podman (user.sh)
#   limits     systemd's own test of systemd-socket-proxyd (TEST-74-AUX-UTILS.socket-proxyd.sh),
#              re-written and run against the package with only ExecStart= changed; a burst of
#              200 clients against -c 4 --when-full=wait (limits.sh)
#   source     the from-source install of systemd/README.md, once (source.sh)
#   dns        the DNS example: port 53, UDP and TCP, through one proxy to dnsmasq in its private
#              network namespace; the first query, restarts under queries; dnsmasq killed under
#              queries (what is lost), a broken dnsmasq and the documented recovery (dns.sh)
#   archive    the release archive (deno task archive) unpacked into /opt, without the package:
#              both scenarios with their ExecStart= pointed there, checked as above (archive.sh)
#   transparent  the --transparent example: a client in a network namespace of its own, dnsmasq
#              logging its own address; without the capability, without the route back
#              (transparent.sh)
# Prints one line per check that passes; exits non-zero with a message (and the container's
# state and journal) at the first that fails.
#
# usage: tests/systemd/run.sh [PART...]          (default: all, in the order above)
#
# Environment: SOCKET_PROXYD_DEB (the package to test; default: the one dist/SHA256SUMS names
# for amd64, so run `deno task deb` first), SOCKET_PROXYD_ARCHIVE (the archive; default: the
# x86_64 one dist/SHA256SUMS names, `deno task archive`), SOCKET_PROXYD_TEST_CACHE,
# SOCKET_PROXYD_TEST_MIRROR, SOCKET_PROXYD_TEST_TIMEOUT (seconds for the whole run, default
# 2700). Needs root on a Linux host without systemd as PID 1, as CI's machines; `deno` on PATH
# (the package build for the upgrade test, the source install).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/systemd/lib.sh
source "$here/lib.sh"

all=(scenarios package startup shapes templates user limits source dns archive transparent)
parts=("$@")
[ "${#parts[@]}" -gt 0 ] || parts=("${all[@]}")
# Every part defines part_NAME; later parts use the checks of earlier ones.
for part in "${all[@]}"; do
  # shellcheck source=/dev/null
  [ ! -f "$here/$part.sh" ] || source "$here/$part.sh"
done
for part in "${parts[@]}"; do
  declare -F "part_$part" >/dev/null || die "no part '$part' (tests/systemd/$part.sh)"
done

DEB=${SOCKET_PROXYD_DEB:-}
if [ -z "$DEB" ]; then
  name=$(awk '$2 ~ /^socket-proxyd_.*_amd64\.deb$/ { print $2 }' "$repo/dist/SHA256SUMS" 2>/dev/null)
  DEB=$repo/dist/$name
fi
[ -f "$DEB" ] || die "no package to test at '$DEB': run deno task deb first"
(cd "$(dirname "$DEB")" && grep -F " $(basename "$DEB")" SHA256SUMS | sha256sum -c --quiet) ||
  die "$DEB does not match its SHA256SUMS"
DEB_VERSION=$(dpkg-deb -f "$DEB" Version)
echo "== package: $DEB ($DEB_VERSION)"

host_setup
for part in "${parts[@]}"; do
  echo "== $part"
  "part_$part"
done
echo "== systemd e2e: all $checks checks passed in ${SECONDS}s"
