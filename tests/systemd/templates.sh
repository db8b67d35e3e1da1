# Part "templates" of tests/systemd/run.sh: the package's template units, socket-proxyd@.socket
# and socket-proxyd@.service, with every instance form the docs give, each spelled as
# `systemd-escape --template=socket-proxyd@.socket ADDRESS` prints it and configured by
# /etc/socket-proxyd/INSTANCE.conf, INSTANCE as in the unit's name:
#   8092 (every address), 127.0.0.1:8093, [::1]:8094 (\x5b::1\x5d:8094), /run/spx-a.sock
#   (-run-spx\x2da.sock); each serves nginx's page; the IPv4 instance's OPTIONS holds a quoted
#   span (OPTIONS="--exit-idle-time='5min 20s' -c 50") that reaches the program whole;
# and a bad start: an instance without its conf, then with a bad TARGET, hammered by clients
# until systemd stops the socket (service-start-limit-hit); the journal names the file and what
# is wrong; after the fix, `systemctl restart` of the socket alone serves again; and datagram
# sockets on a port (UDP and TCP), an IPv4 address and port (UDP only) and a path (a Unix
# datagram socket), with the drop-ins of systemd/datagram/.

TEMPLATES_TARGET=127.0.0.1:80

# templates_unit ADDRESS: the socket unit's name for ADDRESS, as systemd-escape prints it.
templates_unit() {
  ct systemd-escape --template=socket-proxyd@.socket "$1"
}

# templates_get ADDRESS: the page through the instance listening on ADDRESS.
templates_get() {
  case $1 in
    /*) ct timeout 20 curl -sS --fail -m 15 --unix-socket "$1" http://localhost/e2e.txt ;;
    *:*) ct timeout 20 curl -sS --fail -m 15 "http://$1/e2e.txt" ;;
    *) ct timeout 20 curl -sS --fail -m 15 "http://127.0.0.1:$1/e2e.txt" ;;
  esac
}

# templates_conf INSTANCE TEXT: writes /etc/socket-proxyd/INSTANCE.conf.
templates_conf() {
  printf '%s\n' "$2" >"$root/etc/socket-proxyd/$1.conf"
}

templates_forms() {
  local address unit instance options line pid
  for address in 8092 127.0.0.1:8093 '[::1]:8094' /run/spx-a.sock; do
    unit=$(templates_unit "$address")
    instance=${unit#socket-proxyd@}
    instance=${instance%.socket}
    options=
    [ "$address" != 127.0.0.1:8093 ] || options="OPTIONS=\"--exit-idle-time='5min 20s' -c 50\""
    templates_conf "$instance" "TARGET=$TEMPLATES_TARGET"$'\n'"$options"
    ct systemctl enable --now "$unit" >/dev/null 2>&1 || die "$address: could not enable $unit"
    [ "$(templates_get "$address")" = "$templates_token" ] ||
      die "$address: not served through $unit"
    pid=$(prop MainPID "${unit%.socket}.service")
    wait_until 10 eval 'ct timeout 20 journalctl --no-pager -q -o cat _PID="$pid" | grep -q "^Forwarding "' ||
      die "$address: no start-up line in the journal"
    line=$(ct timeout 20 journalctl --no-pager -q -o cat _PID="$pid" | grep -m 1 '^Forwarding ')
    ok "$address: $unit, configured by /etc/socket-proxyd/$instance.conf, serves the page;" \
      "the proxy says: \"$line\""
    case $unit in
      *:*) [[ $line == *'(fd 3, "unknown")'* ]] ||
        die "$address: the unit's name, with ':', was taken for a name: $line" ;;
      *) [[ $line == *"(fd 3, \"$unit\")"* ]] ||
        die "$address: the fd is not named after the unit: $line" ;;
    esac
    [ "$address" != 127.0.0.1:8093 ] ||
      [[ $line == *"at most 50 connections, exiting after 5min 20s idle." ]] ||
      die "$address: OPTIONS did not reach the program whole: $line"
  done
  ok "LISTEN_FDNAMES: the port and path instances' fds are named after their units; where the unit's name" \
    "holds ':' (two names for one fd) the fd is served as \"unknown\"; the quoted span in" \
    "OPTIONS= reached the program as one word (\"exiting after 5min 20s idle\")"
}

# templates_hammer ADDRESS N: N clients, one after the other, each allowed 3 s.
templates_hammer() {
  local i
  for i in $(seq "$2"); do
    ct timeout 10 curl -s -o /dev/null -m 3 "http://$1/e2e.txt" || true
  done
}

# templates_broken ADDRESS CONF EXPECTED: with CONF (or no file if empty), clients get nothing,
# systemd stops the socket after the failed starts, and the journal has the line EXPECTED.
templates_broken() {
  local address=$1 conf=$2 expected=$3 unit instance c0 n shown
  unit=$(templates_unit "$address")
  instance=${unit#socket-proxyd@}
  instance=${instance%.socket}
  rm -f "$root/etc/socket-proxyd/$instance.conf"
  [ -z "$conf" ] || templates_conf "$instance" "$conf"
  c0=$(shapes_cursor)
  ct systemctl restart "$unit" || die "$address: could not (re)start $unit"
  templates_hammer "$address" 10
  wait_until 30 eval '[ "$(prop ActiveState "$unit")" = failed ]' ||
    die "$address: $unit is $(prop ActiveState "$unit") after the failed starts"
  [ "$(prop Result "$unit")" = service-start-limit-hit ] ||
    die "$address: $unit failed with $(prop Result "$unit")"
  wait_until 10 eval 'shapes_journal "$c0" -u "${unit%.socket}.service" | grep -qxF -- "$expected"' ||
    die "$address: the journal lacks \"$expected\": $(shapes_journal "$c0" -u "${unit%.socket}.service")"
  n=$(shapes_journal "$c0" -u "${unit%.socket}.service" | grep -cxF -- "$expected")
  shown=${conf:-(no conf)}
  ok "$address ${shown//$'\n'/; }: 10 clients in a row got nothing; after $n failed starts" \
    "systemd stopped $unit (service-start-limit-hit); the journal says \"$expected\""
}

templates_recovery() {
  local address='[::1]:8095' unit instance file
  unit=$(templates_unit "$address")
  instance=${unit#socket-proxyd@}
  instance=${instance%.socket}
  file=/etc/socket-proxyd/$instance.conf
  ct systemctl enable "$unit" >/dev/null 2>&1 || die "could not enable $unit"
  templates_broken "$address" "" "Cannot read the configuration file $file: it does not exist. It sets TARGET= (where clients go) and OPTIONS=; see socket-proxyd(8)."
  templates_broken "$address" "TARGET=127.0.0.1:99999" \
    "$file: Invalid target \"127.0.0.1:99999\": port \"99999\" is not a number from 1 to 65535."
  templates_broken "$address" $'TARGET=127.0.0.1:80\nOPTIONS=--exit-idle-time=5min 20s' \
    "$file: Too many parameters: exactly one target expected, got 20s 127.0.0.1:80. OPTIONS= is split into words at blanks, so quote a value with blanks, e.g. OPTIONS=\"--exit-idle-time='5min 20s'\"."
  templates_conf "$instance" "TARGET=$TEMPLATES_TARGET"
  ct systemctl restart "$unit" || die "$address: systemctl restart $unit failed after the fix"
  [ "$(templates_get "$address")" = "$templates_token" ] ||
    die "$address: not served after the fix and systemctl restart $unit"
  ok "$address: conf fixed, \`systemctl restart $unit\` (no reset-failed): served at once"
}

# templates_datagram: the datagram drop-ins of systemd/datagram/ (from the package's examples,
# with the README's commands) on three instances, each to a real backend: a port for DNS over
# UDP and TCP to dnsmasq (stream-and-datagram.conf), an IPv4 address and port for UDP alone with
# TARGET=127.0.0.1:* (datagram-only.conf), and a Unix datagram socket at a path to a UDP echo
# server (datagram-only.conf).
templates_datagram() {
  local block answer pid reply
  ct systemd-run --quiet --unit=e2e-dnsmasq /usr/sbin/dnsmasq --keep-in-foreground \
    --conf-file=/dev/null --port=5300 --listen-address=127.0.0.1 --bind-interfaces --no-resolv \
    --address=/templates.internal/192.0.2.53 --user=root --pid-file= ||
    die "datagram: could not start dnsmasq on 127.0.0.1:5300"
  ct systemd-run --quiet --unit=e2e-udp-echo /usr/bin/socat UDP4-RECVFROM:7007,bind=127.0.0.1,fork \
    SYSTEM:cat || die "datagram: could not start the UDP echo server on 127.0.0.1:7007"
  block=$(readme_block "$repo/systemd/README.md" install-datagram)
  [ -n "$block" ] || die "datagram: systemd/README.md has no install-datagram block"
  ct timeout 120 sh -euxc "$block" >"$work/install.log" 2>&1 ||
    die "datagram: the README's install steps failed: $(cat "$work/install.log")"
  wait_until 10 eval 'ct dig +short +tries=1 +timeout=2 -p 5300 @127.0.0.1 templates.internal A | grep -qx 192.0.2.53' ||
    die "datagram: dnsmasq does not answer on 127.0.0.1:5300"

  answer=$(ct timeout 20 dig +short +tries=1 +timeout=10 -p 5353 @127.0.0.1 templates.internal A)
  [ "$answer" = 192.0.2.53 ] || die "datagram: 5353, UDP: got '$answer'"
  pid=$(prop MainPID socket-proxyd@5353.service)
  answer=$(ct timeout 20 dig +short +tries=1 +timeout=10 +tcp -p 5353 @127.0.0.1 templates.internal A)
  [ "$answer" = 192.0.2.53 ] || die "datagram: 5353, TCP: got '$answer'"
  [ "$(prop MainPID socket-proxyd@5353.service)" = "$pid" ] || die "datagram: 5353: a second process"
  [[ $(prop Listen socket-proxyd@5353.socket | tr '\n' ' ') == *"[::]:5353 (Stream)"*"[::]:5353 (Datagram)"* ]] ||
    die "datagram: socket-proxyd@5353.socket listens on $(prop Listen socket-proxyd@5353.socket)"
  ok "datagram: socket-proxyd@5353.socket with stream-and-datagram.conf: one proxy (pid $pid)" \
    "answers DNS over UDP and TCP from dnsmasq; status \"$(prop StatusText socket-proxyd@5353.service)\""

  answer=$(ct timeout 20 dig +short +tries=1 +timeout=10 -p 5300 @127.0.0.2 templates.internal A)
  [ "$answer" = 192.0.2.53 ] || die "datagram: 127.0.0.2:5300, UDP: got '$answer'"
  ! ct timeout 20 dig +short +tries=1 +timeout=3 +tcp -p 5300 @127.0.0.2 templates.internal A >/dev/null 2>&1 ||
    die "datagram: 127.0.0.2:5300 answers over TCP too"
  [ "$(prop Listen socket-proxyd@127.0.0.2:5300.socket)" = "127.0.0.2:5300 (Datagram)" ] ||
    die "datagram: socket-proxyd@127.0.0.2:5300.socket listens on $(prop Listen socket-proxyd@127.0.0.2:5300.socket)"
  ok "datagram: socket-proxyd@127.0.0.2:5300.socket with datagram-only.conf and" \
    "TARGET=127.0.0.1:*: UDP only, to port 5300 of 127.0.0.1"

  # A Unix datagram client is answered at its own address: a socket file the proxy's dynamic user
  # may write to (umask 0), outside its private /tmp.
  reply=$(ct timeout 20 sh -c 'umask 0; printf "hello over a Unix datagram socket" |
    socat -t 5 - UNIX-SENDTO:/run/dg.sock,bind=/run/e2e-dg-client.sock; rm -f /run/e2e-dg-client.sock')
  [ "$reply" = "hello over a Unix datagram socket" ] || die "datagram: /run/dg.sock: got '$reply'"
  [ "$(prop Listen socket-proxyd@-run-dg.sock.socket)" = "/run/dg.sock (Datagram)" ] ||
    die "datagram: the path instance listens on $(prop Listen socket-proxyd@-run-dg.sock.socket)"
  ok "datagram: socket-proxyd@-run-dg.sock.socket with datagram-only.conf: a Unix" \
    "datagram client of /run/dg.sock gets the UDP echo server's reply"
  ct systemctl stop e2e-dnsmasq.service e2e-udp-echo.service
}

part_templates() {
  local t0=$SECONDS diag_before=$DIAG_UNITS
  DIAG_UNITS="socket-proxyd@* nginx.service"
  templates_token=socket-proxyd-templates-$RANDOM$RANDOM
  boot templates
  install_package "$DEB"
  printf '%s\n' "$templates_token" >"$root/var/www/html/e2e.txt"
  ok "templates: apt install ./$(basename "$DEB")"
  templates_forms
  templates_recovery
  templates_datagram
  stop_container
  DIAG_UNITS=$diag_before
  echo "== templates: $((SECONDS - t0))s"
}
