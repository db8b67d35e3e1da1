# Part "transparent" of tests/systemd/run.sh: the --transparent example (systemd/transparent/),
# installed from the package's examples with the commands of systemd/README.md, with a client in
# a network namespace of its own, linked to the container's (10.53.0.2 and fd53::2 there, the
# container 10.53.0.1 and fd53::1), and dnsmasq logging every query with the client's address:
#   - statically: `systemd-analyze verify` prints nothing for the units, and
#     `systemd-analyze security --offline=true` rates the proxy and dnsmasq at the levels the
#     README quotes;
#   - for real: the client's first query (UDP, IPv4, no retry) starts dnsmasq and the proxy and is
#     answered; a query over IPv6 by the second socket too; dnsmasq's journal names the client's
#     own addresses, never 127.0.0.1 or ::1; the proxy runs as a dynamic user with CAP_NET_ADMIN
#     as its only capability (bounding set included), no new privileges, seccomp on, in dnsmasq's
#     network namespace, where the route back is;
#   - without CAP_NET_ADMIN (a drop-in that empties AmbientCapabilities=) the proxy fails at
#     start-up, exit status 1, and its journal names AmbientCapabilities=CAP_NET_ADMIN;
#   - without the route (a drop-in that empties dnsmasq's ExecStartPre=) dnsmasq still sees the
#     client, no answer comes back, and the proxy's journal says once which route fixes it; with
#     the drop-in gone, the next query is answered again;
#   - TCP (dig +tcp, both sockets listen for it too): answered, and dnsmasq logs the clients' own
#     addresses;
#   - recovery, as for every example pair (lib.sh): dnsmasq killed under queries is restarted by
#     systemd and the proxy keeps running; with dnsmasq's configuration broken, the socket keeps
#     listening while dnsmasq is tried again and again, and once fixed, `systemctl restart
#     transparent-proxy.socket` typed at once serves the next query.

TP_README=$repo/systemd/README.md
TP_SERVICE=transparent-proxy.service
TP_SOCKETS="transparent-proxy.socket transparent-proxy-ipv6.socket"
TP_BACKEND=dnsmasq-transparent.service

# A name only this run's dnsmasq knows (from /etc/hosts, with domain=internal), and its address.
tp_host=e2e-$RANDOM$RANDOM
tp_name=$tp_host.internal
tp_address=192.0.2.$((RANDOM % 200 + 1))

# tp_query SERVER [DIG-OPTION...]: asks for $tp_name on port 5300 of SERVER from the client's
# namespace, once, no retry; prints the answer's addresses.
tp_query() {
  local server=$1
  shift
  ct timeout 30 ip netns exec client dig +short +tries=1 +timeout=10 -p 5300 "$@" "@$server" \
    "$tp_name" A
}

# tp_download_iproute2 DIR: iproute2 and what it needs beyond the container's packages, into DIR.
tp_download_iproute2() {
  timeout 300 apt-get -q -o Dir::State::status="$root/var/lib/dpkg/status" \
    -o Dir::Cache::archives="$1" -o Debug::NoLocking=1 install --download-only -y \
    --no-install-recommends iproute2 >"$work/apt-download.log" 2>&1
}

# The container has no iproute2: its packages, as apt on the host computes them against the
# container's package state (the same Debian release), installed there with apt.
tp_iproute2() {
  local debs=$work/debs
  mkdir -p "$debs/partial"
  if ! ct test -x /sbin/ip; then
    # (With the host's package lists; fetched first on a machine that has none yet.)
    tp_download_iproute2 "$debs" || { timeout 300 apt-get update -qq && tp_download_iproute2 "$debs"; } ||
      die "transparent: could not download iproute2: $(cat "$work/apt-download.log")"
    mkdir -p "$root/var/tmp/debs"
    cp "$debs"/*.deb "$root/var/tmp/debs/"
    ct timeout 300 sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y /var/tmp/debs/*.deb' \
      >"$work/apt-iproute2.log" 2>&1 ||
      die "transparent: apt install iproute2 failed: $(cat "$work/apt-iproute2.log")"
  fi
  ct test -x /sbin/ip || die "transparent: no /sbin/ip in the container"
}

tp_install() {
  local block
  block=$(readme_block "$TP_README" install-transparent)
  [ -n "$block" ] || die "transparent: systemd/README.md has no install-transparent block"
  printf '%s %s\n' "$tp_address" "$tp_host" >>"$root/etc/hosts"
  ct timeout 120 sh -euxc "$block" >"$work/install.log" 2>&1 ||
    die "transparent: the README's install steps failed: $(cat "$work/install.log")"
  ok "transparent: installed from the package's examples with the README's commands"
}

# tp_exposure UNIT: the exposure level `systemd-analyze security --offline=true` gives UNIT,
# which the README must quote for transparent/UNIT.
tp_exposure() {
  local out level
  out=$(ct timeout 60 systemd-analyze security --offline=true --no-pager \
    "/etc/systemd/system/$1" 2>&1) || die "transparent: systemd-analyze security failed: $out"
  level=$(sed -n "s/.*Overall exposure level for $1: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p" <<<"$out")
  [ -n "$level" ] || die "transparent: no exposure level in: $out"
  grep -qE "transparent/$1\`[ |]*${level% *} ${level#* }" "$TP_README" ||
    die "transparent: systemd/README.md does not quote the exposure level $level for" \
      "transparent/$1:"$'\n'"$out"
  echo "$level"
}

tp_static() {
  local out unit files=() proxy backend
  for unit in $TP_SOCKETS $TP_SERVICE $TP_BACKEND; do files+=("/etc/systemd/system/$unit"); done
  out=$(ct timeout 60 systemd-analyze verify "${files[@]}" 2>&1) ||
    die "transparent: systemd-analyze verify failed: $out"
  [ -z "$out" ] || die "transparent: systemd-analyze verify printed: $out"
  ok "transparent: systemd-analyze verify prints nothing for $TP_SOCKETS $TP_SERVICE $TP_BACKEND"
  proxy=$(tp_exposure "$TP_SERVICE")
  backend=$(tp_exposure "$TP_BACKEND")
  awk -v l="${proxy% *}" 'BEGIN { exit !(l <= 2.0) }' ||
    die "transparent: the proxy's exposure $proxy is above 2.0"
  ok "transparent: systemd-analyze security --offline=true: $TP_SERVICE $proxy, $TP_BACKEND" \
    "$backend, as the README says"
}

# The client's namespace, linked to the container's main one.
tp_client() {
  ct sh -euc '
    ip netns add client
    ip link add vhost type veth peer name vclient netns client
    ip addr add 10.53.0.1/24 dev vhost
    ip -6 addr add fd53::1/64 dev vhost nodad
    ip link set vhost up
    ip -n client link set lo up
    ip -n client addr add 10.53.0.2/24 dev vclient
    ip -n client -6 addr add fd53::2/64 dev vclient nodad
    ip -n client link set vclient up' >"$work/netns.log" 2>&1 ||
    die "transparent: could not make the client's namespace: $(cat "$work/netns.log")"
}

# dnsmasq's journal lines for queries of $tp_name: "query[A] NAME from ADDRESS". (Read whole,
# then searched: a `grep -q` that stops reading fails the pipeline under pipefail.)
tp_logged() {
  local journal
  journal=$(ct timeout 20 journalctl --no-pager -o cat -u "$TP_BACKEND")
  grep -F "query[A] $tp_name from" <<<"$journal" || true
}

# tp_logged_from ADDRESS: dnsmasq logged a query of $tp_name from ADDRESS.
tp_logged_from() {
  grep -qxF "query[A] $tp_name from $1" <<<"$(tp_logged)"
}

# Whether dnsmasq saw a query of $tp_name from a loopback address, the proxy's own.
tp_logged_loopback() {
  grep -qE 'from (127\.0\.0\.1|::1)$' <<<"$(tp_logged)"
}

# tp_routes PID: the local routing table of PID's network namespace.
tp_routes() {
  ct nsenter -t "$1" -n ip route show table local
}

tp_first_query() {
  local answer pid backend st
  for unit in $TP_SOCKETS; do
    [ "$(prop SubState "$unit")" = listening ] || die "transparent: $unit is not listening"
  done
  [ "$(prop ActiveState "$TP_SERVICE")" = inactive ] ||
    die "transparent: the proxy runs before any query came"
  answer=$(tp_query 10.53.0.1) || die "transparent: the first query got no answer: $answer"
  [ "$answer" = "$tp_address" ] || die "transparent: the first query got '$answer'"
  answer=$(tp_query fd53::1) || die "transparent: the query over IPv6 got no answer: $answer"
  [ "$answer" = "$tp_address" ] || die "transparent: the query over IPv6 got '$answer'"
  wait_until 10 tp_logged_from 10.53.0.2 && wait_until 10 tp_logged_from fd53::2 ||
    die "transparent: dnsmasq did not log the clients' addresses:"$'\n'"$(tp_logged)"
  ! tp_logged_loopback || die "transparent: dnsmasq saw the proxy's address:"$'\n'"$(tp_logged)"
  ok "transparent: from the client's namespace, the first query (UDP, no retry) started dnsmasq" \
    "and the proxy and was answered ($tp_name A $answer), over IPv4 and IPv6; dnsmasq logged" \
    "them as from 10.53.0.2 and fd53::2, the client's own addresses"

  pid=$(prop MainPID "$TP_SERVICE")
  backend=$(prop MainPID "$TP_BACKEND")
  [ "$(ct readlink "/proc/$pid/exe")" = /usr/lib/socket-proxyd/deno ] ||
    die "transparent: the main process is not the package's deno"
  st=$(ct cat "/proc/$pid/status")
  uid=$(awk '/^Uid:/ { print $2 }' <<<"$st")
  [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ] || die "transparent: not a dynamic user: uid $uid"
  grep -q '^CapEff:[[:space:]]*0000000000001000$' <<<"$st" &&
    grep -q '^CapBnd:[[:space:]]*0000000000001000$' <<<"$st" ||
    die "transparent: capabilities other than CAP_NET_ADMIN: $(grep ^Cap <<<"$st")"
  grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$st" && grep -q '^Seccomp:[[:space:]]*2$' <<<"$st" ||
    die "transparent: no NoNewPrivs or no seccomp filter"
  [ "$(netns "$pid")" = "$(netns "$backend")" ] && [ "$(netns "$pid")" != "$(netns 1)" ] ||
    die "transparent: the proxy is not in dnsmasq's own network namespace"
  grep -q '^local default dev lo' <<<"$(tp_routes "$backend")" ||
    die "transparent: no route back in dnsmasq's namespace: $(tp_routes "$backend")"
  ok "transparent: the proxy runs as dynamic user $uid with CAP_NET_ADMIN its only capability" \
    "(effective and bounding), no new privileges, seccomp on, in dnsmasq's network namespace" \
    "($(netns "$pid"), not $(netns 1)), which has the route back"
}

# tp_dropin UNIT CONTENT: a drop-in e2e.conf for UNIT; the units are stopped and reloaded.
tp_dropin() {
  ct sh -euc 'mkdir -p "/etc/systemd/system/$1.d"
    printf "%s\n" "$2" >"/etc/systemd/system/$1.d/e2e.conf"' sh "$1" "$2"
  tp_restart
}

# tp_dropin_gone UNIT: without the drop-in again.
tp_dropin_gone() {
  ct rm -f "/etc/systemd/system/$1.d/e2e.conf"
  tp_restart
}

# Stops the proxy and dnsmasq (so that their namespace goes) and restarts the sockets.
tp_restart() {
  # (systemctl warns that the sockets can still start the proxy.)
  ct timeout 60 systemctl stop "$TP_SERVICE" "$TP_BACKEND" 2>/dev/null
  ct systemctl daemon-reload
  # shellcheck disable=SC2086 # A list of units.
  ct timeout 60 systemctl reset-failed $TP_SOCKETS "$TP_SERVICE" "$TP_BACKEND" 2>/dev/null || true
  # shellcheck disable=SC2086 # A list of units.
  ct timeout 60 systemctl restart $TP_SOCKETS || die "transparent: the sockets did not restart"
}

# The journal's cursor now, for tp_journal_since.
tp_cursor() {
  ct timeout 20 journalctl --no-pager -n 0 --show-cursor | sed -n 's/^-- cursor: //p'
}

# tp_journal_since CURSOR: the proxy's journal lines (and systemd's about it) after CURSOR.
tp_journal_since() {
  ct timeout 20 journalctl --no-pager -o cat -u "$TP_SERVICE" --after-cursor="$1"
}

# tp_refused DROPIN: with the proxy's drop-in DROPIN it fails at start-up, exit status 1, the
# journal naming AmbientCapabilities=CAP_NET_ADMIN, having served nothing.
tp_refused() {
  local since journal
  since=$(tp_cursor)
  [ -n "$since" ] || die "transparent: no journal cursor"
  tp_dropin "$TP_SERVICE" "$1"
  ct timeout 60 systemctl start "$TP_SERVICE" 2>/dev/null && die "transparent: started with $1"
  # (Restart=on-failure starts it again meanwhile: each start fails the same way.)
  wait_until 20 eval 'grep -q "Main process exited, code=exited, status=1/FAILURE" <<<"$(tp_journal_since "'"$since"'")"' ||
    die "transparent: no exit status 1 with $1:"$'\n'"$(tp_journal_since "$since")"
  journal=$(tp_journal_since "$since")
  grep -q -- '--transparent needs the capability CAP_NET_ADMIN.*Give the unit AmbientCapabilities=CAP_NET_ADMIN' \
    <<<"$journal" || die "transparent: no message naming the capability:"$'\n'"$journal"
  ! grep -q '^Forwarding ' <<<"$journal" || die "transparent: it served with $1:"$'\n'"$journal"
  tp_dropin_gone "$TP_SERVICE"
}

tp_no_capability() {
  tp_refused $'[Service]\nAmbientCapabilities='
  ok "transparent: without AmbientCapabilities=CAP_NET_ADMIN the proxy failed at start-up, exit" \
    "status 1, its journal saying \"--transparent needs the capability CAP_NET_ADMIN ... Give" \
    "the unit AmbientCapabilities=CAP_NET_ADMIN ...\""
  tp_refused $'[Service]\nPrivateUsers=yes'
  ok "transparent: with PrivateUsers=yes too (the capability then misses the network namespace)"
}

# tp_sessions_done N: the proxy's status says no session is open, N served.
tp_sessions_done() {
  [[ $(prop StatusText "$TP_SERVICE") == *"; 0 session(s) open, $1 served,"* ]]
}

# tp_hint PID: how many times proxy PID wrote the hint.
tp_hint() {
  local journal
  journal=$(ct timeout 20 journalctl --no-pager -o cat _PID="$1")
  grep -c 'Replies do not come back' <<<"$journal" || true
}

tp_no_route() {
  local answer pid hint seen
  tp_dropin "$TP_BACKEND" $'[Service]\nExecStartPre='
  seen=$(grep -c . <<<"$(tp_logged)")
  answer=$(tp_query 10.53.0.1) && die "transparent: an answer came back without the route: $answer"
  wait_until 10 eval '[ "$(grep -c . <<<"$(tp_logged)")" -gt '"$seen"' ]' &&
    grep -qxF "query[A] $tp_name from 10.53.0.2" <<<"$(tp_logged | tail -n 1)" ||
    die "transparent: dnsmasq did not see the query from 10.53.0.2:"$'\n'"$(tp_logged)"
  pid=$(prop MainPID "$TP_SERVICE")
  [ "$pid" != 0 ] || die "transparent: the proxy did not start"
  ! grep -q '^local default' <<<"$(tp_routes "$pid")" ||
    die "transparent: the route is there despite the drop-in"
  # The query's session ends after --idle-timeout=5s without an answer: then the hint.
  wait_until 20 eval '[ "$(tp_hint '"$pid"')" = 1 ]' ||
    die "transparent: no hint in the proxy's journal: $(ct journalctl --no-pager -o cat _PID="$pid")"
  hint=$(grep 'Replies do not come back' <<<"$(ct journalctl --no-pager -o cat _PID="$pid")")
  grep -qF '`ip route add local default dev lo`' <<<"$hint" || die "transparent: the hint: $hint"
  tp_query 10.53.0.1 >/dev/null && die "transparent: an answer came back without the route"
  # Once the second query's session has ended too, still the one hint.
  wait_until 20 tp_sessions_done 2 || die "transparent: status '$(prop StatusText "$TP_SERVICE")'"
  [ "$(tp_hint "$pid")" = 1 ] || die "transparent: the hint was written $(tp_hint "$pid") times"
  tp_dropin_gone "$TP_BACKEND"
  answer=$(tp_query 10.53.0.1) || die "transparent: no answer once the route is back: $answer"
  [ "$answer" = "$tp_address" ] || die "transparent: got '$answer' once the route is back"
  ok "transparent: without the route (dnsmasq's ExecStartPre= emptied) dnsmasq saw the query" \
    "from 10.53.0.2, no answer came back, and the proxy's journal said once: \"${hint:0:200}...\";" \
    "with the route, answered again"
}

tp_tcp() {
  local answer lines
  lines=$(tp_logged)
  answer=$(tp_query 10.53.0.1 +tcp) || die "transparent: no answer over TCP: $answer"
  [ "$answer" = "$tp_address" ] || die "transparent: got '$answer' over TCP"
  answer=$(tp_query fd53::1 +tcp) || die "transparent: no answer over TCP and IPv6: $answer"
  [ "$answer" = "$tp_address" ] || die "transparent: got '$answer' over TCP and IPv6"
  # The two new lines in dnsmasq's journal: the TCP queries, from the client's addresses.
  wait_until 10 eval '[ "$(tp_logged | tail -n +'"$(($(grep -c . <<<"$lines") + 1))"' | sort | tr "\n" " ")" = "query[A] $tp_name from 10.53.0.2 query[A] $tp_name from fd53::2 " ]' ||
    die "transparent: dnsmasq did not log the TCP clients' addresses:"$'\n'"$(tp_logged)"
  ok "transparent: over TCP (dig +tcp), IPv4 and IPv6, answered; dnsmasq logged the client's" \
    "own addresses, 10.53.0.2 and fd53::2"
}

# tp_answered: one UDP query from the client's namespace, answered with $tp_address (5 s, no
# retry: the first query after the socket's restart waits for dnsmasq's start, then the proxy's).
tp_answered() {
  [ "$(ct timeout 15 ip netns exec client dig +short +tries=1 +timeout=5 -p 5300 @10.53.0.1 \
    "$tp_name" A)" = "$tp_address" ]
}

tp_recovery() {
  check_crash_recovery transparent "$TP_SERVICE" "$TP_BACKEND" tp_answered
  check_fix_recovery transparent transparent-proxy.socket "$TP_BACKEND" \
    'echo no-such-option-e2e >>/etc/dnsmasq-transparent.conf' \
    'sed -i /^no-such-option-e2e$/d /etc/dnsmasq-transparent.conf' tp_answered
}

part_transparent() {
  echo "== transparent: port 5300 -> dnsmasq in its private namespace, from each client's own address"
  DIAG_UNITS="$TP_SOCKETS $TP_SERVICE $TP_BACKEND"
  boot transparent
  install_package "$DEB"
  tp_iproute2
  tp_install
  tp_static
  tp_client
  tp_first_query
  tp_no_capability
  tp_no_route
  tp_tcp
  tp_recovery
  stop_container
}
