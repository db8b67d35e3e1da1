#!/usr/bin/env bash
# Installs what the integration tests drive, from Debian's packages, when it is missing:
# systemd-socket-activate (systemd), python3, nginx, haproxy, ss (iproute2), pgrep (procps).
set -euo pipefail
missing=()
command -v systemd-socket-activate >/dev/null || missing+=(systemd)
command -v python3 >/dev/null || missing+=(python3)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v ss >/dev/null || missing+=(iproute2)
command -v pgrep >/dev/null || missing+=(procps)
# The datagram tests: dnsmasq, dig, kdig, and unshare/nsenter for a network namespace.
[ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
command -v kdig >/dev/null || missing+=(knot-dnsutils)
command -v nsenter >/dev/null || missing+=(util-linux)
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need: ${missing[*]}. Install them (apt-get install ${missing[*]}) or run as root." >&2
  exit 1
fi
echo "Installing ${missing[*]} from Debian's packages..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packaged services must not hold the ports or run beside the tests.
for service in nginx haproxy; do
  pkill -x "$service" 2>/dev/null || true
done
