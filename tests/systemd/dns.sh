# Part "dns" of tests/systemd/run.sh: the DNS example (systemd/dns/), the man page's second
# scenario in UDP form, from the package's examples (installed with the commands of
# systemd/README.md), with dnsmasq and dig:
#   - statically: `systemd-analyze verify` prints nothing for the three units, and
#     `systemd-analyze security --offline=true` rates the proxy at the level the README quotes
#     (at most 1.0);
#   - for real: one socket unit listens on port 53 for UDP and TCP, and nothing runs; the first
#     query, over UDP and with no retry, starts dnsmasq and the proxy and is answered; a query
#     over TCP is answered by the same process; the proxy is locked down and shares dnsmasq's
#     network namespace, not the main one;
#   - three restarts of the proxy while four clients keep querying over UDP, one query at a
#     time with no retry: every query is answered, and the stopped processes' own counts add up
#     to as many datagrams forwarded and returned (and at most as many sessions), none dropped;
#     the socket's queue dropped nothing;
#   - with a drop-in --exit-idle-time=3s, the proxy exits only once the query's session has
#     been idle for --idle-timeout (5s) and then 3s more, and the next query starts it again;
#   - dnsmasq stopped: a query unanswered, the proxy's warning in the journal naming the target,
#     STATUS= counting it undeliverable; answered once dnsmasq is started again;
#   - dnsmasq killed while four clients keep querying: the queries lost and the time until all
#     are answered again; dnsmasq started again by systemd (Restart=), the proxy kept; a dnsmasq
#     that cannot start (a bad option in its conf), tried again and again while queries fail,
#     then the README's recovery, `systemctl restart proxy-to-dnsmasq.socket`, typed at once
#     after the fix.

DNS_README=$repo/systemd/README.md
DNS_SERVICE=proxy-to-dnsmasq.service
DNS_SOCKET=proxy-to-dnsmasq.socket
DNS_BACKEND=dnsmasq-private.service

# A name only this run's dnsmasq knows (from /etc/hosts, with domain=internal), and its address.
dns_host=e2e-$RANDOM$RANDOM
dns_name=$dns_host.internal
dns_address=192.0.2.$((RANDOM % 200 + 1))

# query [DIG-OPTION...]: asks for $dns_name on port 53 of the container, once, no retry; prints
# the answer's addresses.
query() {
  ct timeout 30 dig +short +tries=1 +timeout=15 "$@" "$dns_name" A
}

dns_install() {
  local block
  block=$(readme_block "$DNS_README" install-dns)
  [ -n "$block" ] || die "dns: systemd/README.md has no install-dns block"
  printf '%s %s\n' "$dns_address" "$dns_host" >>"$root/etc/hosts"
  ct timeout 120 sh -euxc "$block" >"$work/install.log" 2>&1 ||
    die "dns: the README's install steps failed: $(cat "$work/install.log")"
  ok "dns: installed from the package's examples with the README's commands"
}

dns_static() {
  local out level
  out=$(ct timeout 60 systemd-analyze verify "/etc/systemd/system/$DNS_SOCKET" \
    "/etc/systemd/system/$DNS_SERVICE" "/etc/systemd/system/$DNS_BACKEND" 2>&1) ||
    die "dns: systemd-analyze verify failed: $out"
  [ -z "$out" ] || die "dns: systemd-analyze verify printed: $out"
  ok "dns: systemd-analyze verify prints nothing for $DNS_SOCKET, $DNS_SERVICE, $DNS_BACKEND"

  out=$(ct timeout 60 systemd-analyze security --offline=true --no-pager \
    "/etc/systemd/system/$DNS_SERVICE" 2>&1) || die "dns: systemd-analyze security failed: $out"
  level=$(sed -n "s/.*Overall exposure level for $DNS_SERVICE: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p" \
    <<<"$out")
  [ -n "$level" ] || die "dns: no exposure level in: $out"
  awk -v l="${level% *}" 'BEGIN { exit !(l <= 1.0) }' ||
    die "dns: exposure $level is above 1.0:"$'\n'"$out"
  grep -qE "dns/$DNS_SERVICE\`[ |]*${level% *} ${level#* }" "$DNS_README" ||
    die "dns: systemd/README.md does not quote the exposure level $level for dns/$DNS_SERVICE"
  ok "dns: systemd-analyze security --offline=true: $DNS_SERVICE exposure $level, as the" \
    "README says"
}

# The socket unit's listeners, as systemctl shows them: "53 (Stream) 53 (Datagram)".
dns_listen() {
  prop Listen "$DNS_SOCKET" | tr '\n' ' '
}

# dns_status_counts COUNTS: the proxy's STATUS= line ends with these session and datagram counts.
dns_status_counts() {
  [[ $(prop StatusText "$DNS_SERVICE") == "Forwarding to 127.0.0.1:53: "*" session(s) open, $1" ]]
}

dns_first_query() {
  local answer t0 t1 status pid
  [ "$(prop SubState "$DNS_SOCKET")" = listening ] || die "dns: $DNS_SOCKET is not listening"
  [[ $(dns_listen) == *"[::]:53 (Stream)"*"[::]:53 (Datagram)"* ]] ||
    die "dns: $DNS_SOCKET listens on: $(dns_listen)"
  [ "$(prop ActiveState "$DNS_SERVICE")" = inactive ] && [ "$(prop ActiveState "$DNS_BACKEND")" = inactive ] ||
    die "dns: the proxy or dnsmasq runs before any query came"
  ok "dns: $DNS_SOCKET listens on [::]:53 for TCP and UDP; neither the proxy nor dnsmasq runs yet"

  t0=$(date +%s%N)
  answer=$(query @127.0.0.1) || die "dns: the first query (UDP, no retry) got no answer: $answer"
  t1=$(date +%s%N)
  [ "$answer" = "$dns_address" ] || die "dns: the first query got '$answer', not $dns_address"
  [ "$(prop ActiveState "$DNS_SERVICE")" = active ] && [ "$(prop ActiveState "$DNS_BACKEND")" = active ] ||
    die "dns: the first query did not leave the proxy and dnsmasq running"
  pid=$(prop MainPID "$DNS_SERVICE")
  [ "$(ct readlink "/proc/$pid/exe")" = /usr/lib/socket-proxyd/deno ] ||
    die "dns: the main process is not the package's deno: $(ct readlink "/proc/$pid/exe")"
  ok "dns: the first query, over UDP with no retry, started dnsmasq and the proxy and was" \
    "answered ($dns_name A $answer, $(((t1 - t0) / 1000000)) ms, start-up included)"

  answer=$(query +tcp @127.0.0.1) || die "dns: the query over TCP failed: $answer"
  [ "$answer" = "$dns_address" ] || die "dns: the query over TCP got '$answer'"
  answer=$(query @::1) || die "dns: the query over UDP from ::1 failed: $answer"
  [ "$answer" = "$dns_address" ] || die "dns: the query from ::1 got '$answer'"
  [ "$(prop MainPID "$DNS_SERVICE")" = "$pid" ] || die "dns: the proxy was started again"
  # (STATUS= follows the counts within a quarter of a second.)
  wait_until 5 dns_status_counts "2 served, datagrams 2 forwarded, 2 returned, 0 dropped" ||
    die "dns: unexpected status '$(prop StatusText "$DNS_SERVICE")'"
  status=$(prop StatusText "$DNS_SERVICE")
  ok "dns: the same process answers over TCP (dig +tcp) and over UDP from ::1; status" \
    "\"$status\""
}

dns_namespaces() {
  local pid backend
  pid=$(prop MainPID "$DNS_SERVICE")
  backend=$(prop MainPID "$DNS_BACKEND")
  [ "$(ct readlink "/proc/$backend/exe")" = /usr/sbin/dnsmasq ] || die "dns: $DNS_BACKEND is not dnsmasq"
  [ "$(netns "$pid")" = "$(netns "$backend")" ] || die "dns: the proxy is not in dnsmasq's network namespace"
  [ "$(netns "$pid")" != "$(netns 1)" ] || die "dns: dnsmasq is in the container's main network namespace"
  [ "$(ct nsenter -t "$backend" -n cat /proc/net/dev | awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }')" = lo ] ||
    die "dns: dnsmasq's network namespace has more than a loopback device"
  [ "$(ct timeout 30 nsenter -t "$backend" -n dig +short +tries=1 +timeout=5 @127.0.0.1 "$dns_name" A)" = "$dns_address" ] ||
    die "dns: dnsmasq does not answer on 127.0.0.1:53 in its own namespace"
  grep -q '^CapEff:[[:space:]]*0000000000000400$' <<<"$(ct cat "/proc/$backend/status")" ||
    die "dns: dnsmasq has other capabilities than CAP_NET_BIND_SERVICE"
  ok "dns: the proxy shares dnsmasq's network namespace ($(netns "$pid"), loopback only; dnsmasq" \
    "answers on 127.0.0.1:53 there, with CAP_NET_BIND_SERVICE only), not the main one ($(netns 1))"
}

# dns_loops SECONDS N: N clients, each querying again and again for SECONDS, one query at a
# time, no retry; every query is a line in $work/dns.* ("ok MSEC" with dig's query time, or
# "failed: ...").
dns_loops() {
  local seconds=$1 n=$2 i
  rm -f "$work"/dns.*
  for i in $(seq "$n"); do
    ct timeout $((seconds + 60)) sh -c '
      end=$(($(date +%s) + $1))
      while [ "$(date +%s)" -lt "$end" ]; do
        out=$(dig +noall +answer +stats +tries=1 +timeout=15 @127.0.0.1 "$2" A 2>&1)
        answer=$(printf "%s\n" "$out" | awk "\$4 == \"A\" { print \$5 }")
        msec=$(printf "%s\n" "$out" | sed -n "s/^;; Query time: \([0-9]*\) msec$/\1/p")
        if [ "$answer" = "$3" ] && [ -n "$msec" ]; then echo "ok $msec"
        else echo "failed: $out"; fi
      done' sh "$seconds" "$dns_name" "$dns_address" >"$work/dns.$i" 2>&1 &
    background+=($!)
  done
}

# stop_counts PID: "SESSIONS FORWARDED RETURNED DROPPED" from the stop line of proxy PID.
stop_counts() {
  ct timeout 20 journalctl --no-pager -o cat _PID="$1" | sed -n \
    's/^Stopped: .*; 0 session(s) open, \([0-9]*\) served, datagrams \([0-9]*\) forwarded, \([0-9]*\) returned, \([0-9]*\) dropped, none cut off\.$/\1 \2 \3 \4/p'
}

# The drops counter of the container's UDP socket on port 53 (/proc/net/udp6).
socket_drops() {
  ct cat /proc/net/udp6 | awk '$2 ~ /:0035$/ { print $NF }'
}

dns_restarts() {
  local pid pids=() i s f r d queries answers waited slowest sessions=0 forwarded=0 returned=0 dropped=0 counts drops
  drops=$(socket_drops)
  [ -n "$drops" ] || die "dns: no UDP socket on port 53 in /proc/net/udp6"
  # A fresh process, so that the stopped processes' counts are the loops' queries only.
  ct timeout 60 systemctl restart "$DNS_SERVICE" || die "dns: systemctl restart failed"
  pids+=("$(prop MainPID "$DNS_SERVICE")")
  dns_loops 8 4
  sleep 1
  for i in 1 2 3; do
    ct timeout 60 systemctl restart "$DNS_SERVICE" || die "dns: systemctl restart $i failed"
    pid=$(prop MainPID "$DNS_SERVICE")
    [ "$pid" != 0 ] && [ "$pid" != "${pids[-1]}" ] ||
      die "dns: restart $i did not start a new process (${pids[-1]} -> $pid)"
    pids+=("$pid")
    sleep 1.5
  done
  for pid in "${background[@]}"; do wait "$pid" || true; done
  background=()
  # (systemctl warns that the socket can still start it.)
  ct timeout 60 systemctl stop "$DNS_SERVICE" 2>/dev/null || die "dns: systemctl stop failed"

  queries=$(cat "$work"/dns.* | wc -l)
  answers=$(cat "$work"/dns.* | grep -c '^ok [0-9]*$' || true)
  [ "$answers" = "$queries" ] || die "dns: $((queries - answers)) of $queries queries failed:" \
    "$(grep -hv '^ok [0-9]*$' "$work"/dns.* | sort | uniq -c)"
  read -r waited slowest < <(cat "$work"/dns.* | awk '$2 >= 250 { n++ } $2 > max { max = $2 }
    END { print n + 0, max + 0 }')
  for pid in "${pids[@]}"; do
    wait_until 10 eval '[ -n "$(stop_counts '"$pid"')" ]' ||
      die "dns: no stop line with every session answered from proxy $pid:" \
        "$(ct journalctl --no-pager -o cat _PID="$pid" | tail -n 3)"
    read -r counts < <(stop_counts "$pid")
    read -r s f r d <<<"$counts"
    # Every process that was restarted served queries of the loops before its restart.
    [ "$pid" = "${pids[-1]}" ] || [ "$f" -gt 0 ] || die "dns: proxy $pid served no query"
    sessions=$((sessions + s)) forwarded=$((forwarded + f)) returned=$((returned + r))
    dropped=$((dropped + d))
  done
  # (A session per query, but for the odd query that a client sent from the port of an earlier
  # one still open.)
  [ "$forwarded $returned $dropped" = "$queries $queries 0" ] && [ "$sessions" -le "$queries" ] ||
    die "dns: $queries queries answered, but the proxies (${pids[*]}) counted $sessions" \
      "sessions, $forwarded forwarded, $returned returned, $dropped dropped"
  [ "$(socket_drops)" = "$drops" ] || die "dns: the socket's queue dropped $(($(socket_drops) - drops))"
  [ "$(prop NRefused "$DNS_SOCKET")" = 0 ] || die "dns: the socket refused connections"
  ok "dns: 3 restarts while 4 clients kept querying over UDP: $queries queries, $answers" \
    "answered (in up to $slowest ms; $waited took 250 ms or more); the" \
    "${#pids[@]} proxies counted $sessions sessions, $forwarded forwarded, $returned returned," \
    "0 dropped; the socket's queue dropped none"
}

dns_inactive() {
  [ "$(prop ActiveState "$DNS_SERVICE")" = inactive ]
}

dns_idle() {
  local first second started stopped answer
  idle_dropin "$DNS_SERVICE" 3s
  dns_inactive || die "dns: the proxy runs after the stop"
  answer=$(query @127.0.0.1) || die "dns: no answer from a stopped proxy: $answer"
  [ "$answer" = "$dns_address" ] || die "dns: got '$answer'"
  first=$(prop MainPID "$DNS_SERVICE")
  started=$SECONDS
  wait_until 30 dns_inactive || die "dns: the proxy did not exit when idle"
  stopped=$SECONDS
  [ "$(prop Result "$DNS_SERVICE")" = success ] ||
    die "dns: the idle exit was not a success: $(prop Result "$DNS_SERVICE")"
  # The query's session stays open for --idle-timeout=5s; only then do the 3s begin.
  [ $((stopped - started)) -ge 7 ] || die "dns: exited after $((stopped - started))s, not 5s + 3s"
  grep -q 'Exiting after 3s without connections' <<<"$(ct journalctl --no-pager _PID="$first")" ||
    die "dns: no idle exit in the journal"
  answer=$(query @127.0.0.1) || die "dns: no answer after the idle exit: $answer"
  [ "$answer" = "$dns_address" ] || die "dns: got '$answer' after the idle exit"
  second=$(prop MainPID "$DNS_SERVICE")
  [ "$second" != 0 ] && [ "$second" != "$first" ] || die "dns: the next query started no new process"
  ok "dns: with --exit-idle-time=3s the proxy exited 0 $((stopped - started))s after a query" \
    "(its session open for --idle-timeout=5s, then 3s idle); the next query started it again" \
    "(pid $first, then $second) and was answered"
  ct rm -f "/etc/systemd/system/$DNS_SERVICE.d/e2e.conf"
  ct systemctl daemon-reload
}

# dns_timed_loops SECONDS N: N clients, each querying again and again for SECONDS, one query at a
# time, no retry, 2 s timeout; each query is a line "END_NS ok" or "END_NS failed" in $work/dnst.*.
dns_timed_loops() {
  local seconds=$1 n=$2 i
  rm -f "$work"/dnst.*
  for i in $(seq "$n"); do
    ct timeout $((seconds + 60)) sh -c '
      end=$(($(date +%s) + $1))
      while [ "$(date +%s)" -lt "$end" ]; do
        answer=$(dig +short +tries=1 +timeout=2 @127.0.0.1 "$2" A 2>&1)
        if [ "$answer" = "$3" ]; then echo "$(date +%s%N) ok"; else echo "$(date +%s%N) failed"; fi
      done' sh "$seconds" "$dns_name" "$dns_address" >"$work/dnst.$i" 2>&1 &
    background+=($!)
  done
}

# dns_proxy_warning PID: the proxy's warning (journal priority) that a datagram did not reach
# dnsmasq, if it wrote one.
dns_proxy_warning() {
  ct timeout 20 journalctl --no-pager -o cat -p warning _PID="$1" |
    grep -F -m 1 "Failed to deliver a datagram to 127.0.0.1:53"
}

# dns_dead_backend: dnsmasq stopped while the proxy runs (the operator's `kill -9` without the
# restart): a query gets no answer, the proxy's journal says why at warning priority, naming the
# target, and STATUS= counts the datagram undeliverable; dnsmasq started again, the next query
# is answered.
dns_dead_backend() {
  local pid line status
  dns_client || die "dns: not served before dnsmasq was stopped"
  pid=$(sprop MainPID "$DNS_SERVICE")
  sctl stop "$DNS_BACKEND" || die "dns: could not stop $DNS_BACKEND"
  dns_client && die "dns: answered with dnsmasq stopped"
  wait_until 10 dns_proxy_warning "$pid" ||
    die "dns: no warning in the proxy's journal: $(ct journalctl --no-pager -o cat _PID="$pid" | tail -n 5)"
  line=$(dns_proxy_warning "$pid")
  wait_until 5 eval '[[ "$(sprop StatusText "$DNS_SERVICE")" == *undeliverable* ]]' ||
    die "dns: STATUS= counts nothing undeliverable: $(sprop StatusText "$DNS_SERVICE")"
  status=$(sprop StatusText "$DNS_SERVICE")
  [ "$(sprop MainPID "$DNS_SERVICE")" = "$pid" ] || die "dns: the proxy did not keep running"
  sctl start "$DNS_BACKEND" || die "dns: could not start $DNS_BACKEND again"
  dns_client || die "dns: not answered once dnsmasq was started again"
  ok "dns: dnsmasq stopped: no answer, and the proxy's journal said at warning priority" \
    "\"$line\"; STATUS= \"$status\"; dnsmasq started again, the next query was answered"
}

# dns_crash: dnsmasq killed (SIGKILL) while four clients keep querying: systemd starts it again a
# second later (Restart=), into the namespace the proxy holds, and the proxy keeps running.
# Counts the queries lost and the time until every client is answered again.
dns_crash() {
  local proxy backend killed pid queries lost first_ok recovered file
  ct timeout 60 systemctl start "$DNS_SERVICE" || die "dns: could not start $DNS_SERVICE"
  proxy=$(prop MainPID "$DNS_SERVICE")
  backend=$(prop MainPID "$DNS_BACKEND")
  dns_timed_loops 12 4
  sleep 3
  killed=$(date +%s%N)
  ct sh -c 'kill -KILL "$1"' sh "$backend"
  for pid in "${background[@]}"; do wait "$pid" || true; done
  background=()
  queries=$(cat "$work"/dnst.* | wc -l)
  lost=$(cat "$work"/dnst.* | grep -c ' failed$' || true)
  # When each client was answered again: its first answer after the kill; the last of these.
  recovered=0
  for file in "$work"/dnst.*; do
    first_ok=$(awk -v k="$killed" '$1 > k && $2 == "ok" { print $1; exit }' "$file")
    [ -n "$first_ok" ] || die "dns: a client got no answer after dnsmasq was killed: $(tail -n 3 "$file")"
    [ "$first_ok" -le "$recovered" ] || recovered=$first_ok
  done
  [ "$(prop MainPID "$DNS_SERVICE")" = "$proxy" ] || die "dns: the proxy did not keep running"
  [ "$(prop MainPID "$DNS_BACKEND")" != "$backend" ] && [ "$(prop ActiveState "$DNS_BACKEND")" = active ] ||
    die "dns: dnsmasq was not started again"
  # At most two per client: the query in flight at the kill, and one sent in the second before
  # dnsmasq was back (each lost query costs its client dig's 2 s timeout).
  [ "$lost" -le 8 ] || die "dns: $lost of $queries queries lost to the crash"
  ok "dns: kill -9 of dnsmasq while 4 clients kept querying (dig +tries=1 +timeout=2): systemd" \
    "started it again (pid $backend -> $(prop MainPID "$DNS_BACKEND"), Restart=) and the proxy kept" \
    "running (pid $proxy); $lost of $queries queries lost; every client answered again" \
    "$(((recovered - killed) / 1000000)) ms after the kill (a lost query's 2 s timeout included)"
}

# dns_client: one query, answered correctly (for the recovery checks).
dns_client() {
  [ "$(ct timeout 10 dig +short +tries=1 +timeout=2 @127.0.0.1 "$dns_name" A)" = "$dns_address" ]
}

part_dns() {
  echo "== dns: port 53 (UDP and TCP) -> dnsmasq on 127.0.0.1:53 in its private network namespace"
  DIAG_UNITS="$DNS_SOCKET $DNS_SERVICE $DNS_BACKEND"
  boot dns
  install_package "$DEB"
  dns_install
  dns_static
  dns_first_query
  check_lockdown dns "$DNS_SERVICE"
  dns_namespaces
  dns_restarts
  dns_idle
  dns_crash
  dns_dead_backend
  check_crash_recovery dns "$DNS_SERVICE" "$DNS_BACKEND" dns_client
  check_fix_recovery dns "$DNS_SOCKET" "$DNS_BACKEND" \
    'echo no-such-option-e2e >>/etc/dnsmasq-private.conf' \
    'sed -i /^no-such-option-e2e$/d /etc/dnsmasq-private.conf' dns_client
  stop_container
}
