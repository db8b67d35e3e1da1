#!/usr/bin/env bash
# Checks, before any test runs, for the tools the tests drive. As root, installs the missing ones
# from Debian's packages; otherwise names them all in one line and exits 1.
#
#   tool                     Debian package
#   systemd-socket-activate  systemd
#   python3                  python3
#   nginx                    nginx-light
#   haproxy                  haproxy
#   ss                       iproute2
#   pgrep                    procps
#   dnsmasq, dig, kdig       dnsmasq-base, bind9-dnsutils, knot-dnsutils (datagram tests)
#   nsenter                  util-linux
#
# Installing nginx-light or haproxy on a machine run by systemd also enables and starts their
# services (nginx on port 80). Those, and any nginx or haproxy already running, are left alone:
# each test starts its own instance with its own configuration, pid file and free loopback port,
# and stops it by its pid (tests/integration/consumers.ts).
set -euo pipefail
# The datagram tests use dnsmasq, dig, kdig, and unshare/nsenter for a network namespace.
tools=(
  systemd-socket-activate:systemd python3:python3 nginx:nginx-light haproxy:haproxy ss:iproute2
  pgrep:procps dnsmasq:dnsmasq-base dig:bind9-dnsutils kdig:knot-dnsutils nsenter:util-linux
)
missing=() packages=()
for entry in "${tools[@]}"; do
  command -v "${entry%%:*}" >/dev/null && continue
  [ "${entry%%:*}" = dnsmasq ] && [ -x /usr/sbin/dnsmasq ] && continue # Not on a user's PATH.
  missing+=("${entry%%:*}") packages+=("${entry#*:}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need ${missing[*]}, missing here: run them as root to install them, or apt-get install ${packages[*]}" >&2
  exit 1
fi
echo "Installing ${packages[*]} from Debian's packages for ${missing[*]}..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
