# Part "templates" of tests/systemd/run.sh: the package's template units, socket-proxyd@.socket
# and socket-proxyd@.service, with every instance form the docs give, each spelled as
# `systemd-escape --template=socket-proxyd@.socket ADDRESS` prints it and configured by
# /etc/socket-proxyd/INSTANCE.conf, INSTANCE as in the unit's name:
#   8092 (every address), 127.0.0.1:8093, [::1]:8094 (\x5b::1\x5d:8094), /run/spx-a.sock
#   (-run-spx\x2da.sock); each serves nginx's page; the IPv4 instance's OPTIONS holds a quoted
#   span (OPTIONS="--exit-idle-time='5min 20s' -c 50") that reaches the program whole;
# and a bad start: an instance without its conf, then with a bad TARGET, hammered by clients
# until systemd stops the socket (service-start-limit-hit); the journal names the file and what
# is wrong; after the fix, `systemctl restart` of the socket alone serves again.

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
  stop_container
  DIAG_UNITS=$diag_before
  echo "== templates: $((SECONDS - t0))s"
}
