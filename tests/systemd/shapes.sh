# Part "shapes" of tests/systemd/run.sh: the unit recipes of systemd/recipes/, five shapes of
# systemd-socket-proxyd units that operators run, each installed from the package's examples with
# the commands of systemd/recipes/README.md (its "e2e: recipe-N" blocks), in one container, and
# checked with real clients:
#   1 inetd style (Accept=yes, StandardInput=socket, a Unix socket target): the client gets
#     exactly the backend's bytes and each instance exits 0. The same unit with ExecStart= the
#     reference (/lib/systemd/systemd-socket-proxyd) is kept beside it as the record of what that
#     does there: exit 1, its error line sent to the client as the response;
#   2 logs: those instances' lines are in the journal (its native socket), with -v too (recipe 2),
#     and with stdout or stderr the journal's stream; never in the client's bytes;
#   3 User=media (system user, home /nonexistent), JoinsNamespaceOf= with PrivateNetwork=,
#     PrivateTmp=, Type=notify: serves, runs as media in the other service's network namespace,
#     and nothing anywhere is written as media (nor by a bare `systemd-run -p User=media`);
#   4 a StopWhenUnneeded= backend that takes 2 s to listen, pulled in by Wants=: the first
#     client is served (--connect-timeout, no ExecStartPre= polling); with --exit-idle-time=3s
#     both units stop, and the next client starts both again and is served;
#   3 and 4: a backend killed is started again by systemd (Restart=) while the proxy keeps
#     running, and the next client is served;
#   5 templated instances (127.0.0.1:%i) behind a Unix socket with SocketGroup= and
#     SocketMode=0660: the file's group and mode, the service's user and group, a client in the
#     group served, one outside it refused by the file mode.
# Also: `systemd-analyze verify` prints nothing for any of the recipes' units.

shapes_readme=$repo/systemd/recipes/README.md
SHAPES_RECIPES=/usr/share/doc/socket-proxyd/examples/recipes
SHAPES_INETD_SOCK=/run/nginx-inetd.sock

# shapes_install N: runs the install block of recipe N from systemd/recipes/README.md.
shapes_install() {
  local block
  block=$(readme_block "$shapes_readme" "recipe-$1")
  [ -n "$block" ] || die "systemd/recipes/README.md has no recipe-$1 block"
  ct timeout 120 sh -euxc "$block" >"$work/recipe-$1.log" 2>&1 ||
    die "recipe $1: the README's install steps failed: $(cat "$work/recipe-$1.log")"
}

# shapes_cursor: the cursor of a marker entry written to the journal now. (Used with --cursor=,
# which includes it but no match does: journalctl 252 --after-cursor= with a match skips the
# first entry that matches.)
shapes_cursor() {
  local mark=shapes-mark-$RANDOM$RANDOM cursor i
  ct systemd-cat -t shapes-mark echo "$mark"
  for i in $(seq 50); do
    cursor=$(ct journalctl --no-pager -q -n 1 -o export SYSLOG_IDENTIFIER=shapes-mark \
      MESSAGE="$mark" | sed -n "s/^__CURSOR=//p")
    [ -z "$cursor" ] || break
    sleep 0.1
  done
  [ -n "$cursor" ] || die "no journal entry for the marker $mark"
  echo "$cursor"
}

# shapes_journal CURSOR ARGS...: the journal's messages since CURSOR that match ARGS.
shapes_journal() {
  local cursor=$1
  shift
  ct timeout 20 journalctl --no-pager -q -o cat --cursor="$cursor" "$@"
}

# shapes_raw PORT FILE: sends "GET /e2e.txt HTTP/1.0" to 127.0.0.1:PORT (bash's /dev/tcp) and
# saves every byte that comes back to FILE, until the connection ends (a reset included).
shapes_raw() {
  ct timeout 20 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf "GET /e2e.txt HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3
    cat <&3' sh "$1" >"$2" 2>"$2.err" || true
}

# shapes_same_bytes NAME FILE: FILE (what a client got through the proxy) is exactly what the
# backend sends for the same request (curl to nginx's Unix socket, the same request bytes), but
# for the Date: header.
shapes_same_bytes() {
  ct timeout 20 curl -sS -i --http1.0 -H 'User-Agent:' -H 'Accept:' --unix-socket \
    "$SHAPES_INETD_SOCK" http://localhost/e2e.txt >"$work/backend.raw" ||
    die "$1: curl to the backend's socket failed"
  cmp -s <(grep -av '^Date: ' "$2") <(grep -av '^Date: ' "$work/backend.raw") ||
    die "$1: the client got other bytes than the backend sends:"$'\n'"$(od -c "$2" | head -n 30)"
  [ "$(tail -c "$((${#shapes_token} + 1))" "$2")" = "$shapes_token" ] ||
    die "$1: the response does not end with the page"
}

# shapes_instances_done UNITGLOB: no instance of UNITGLOB is loaded any more (finished ones are
# unloaded; failed ones stay).
shapes_instances_done() {
  [ -z "$(ct systemctl list-units --all --no-legend --plain "$1")" ]
}

shapes_inactive() {
  local unit
  for unit in "$@"; do [ "$(prop ActiveState "$unit")" = inactive ] || return 1; done
}

# shapes_status_field PID FIELD: a field of /proc/PID/status in the container.
shapes_status_field() {
  ct cat "/proc/$1/status" | awk -v f="$2:" '$1 == f { $1 = ""; sub(/^ /, ""); print }'
}

# shapes_owned_by USER: the container's files owned by USER (outside /proc and /sys).
shapes_owned_by() {
  ct find / \( -path /proc -o -path /sys \) -prune -o -user "$1" -print
}

# ---------------------------------------------------------------------------------------------

shapes_inetd() {
  local c0 n accepted
  shapes_install 1
  wait_until 10 ct test -S "$SHAPES_INETD_SOCK" || die "shape 1: nginx did not make $SHAPES_INETD_SOCK"
  [ "$(prop SubState inetd-proxy.socket)" = listening ] || die "shape 1: the socket is not listening"
  accepted=$(prop NAccepted inetd-proxy.socket)
  c0=$(shapes_cursor)
  shapes_raw 8001 "$work/s1.raw"
  shapes_same_bytes "shape 1" "$work/s1.raw"
  ok "shape 1 (inetd, Accept=yes + StandardInput=socket, Unix socket target): the client got" \
    "exactly the backend's $(wc -c <"$work/s1.raw") bytes (Date: aside), and nothing else"
  n=$(ct timeout 20 curl -sS --fail -m 15 http://127.0.0.1:8001/big.bin | sha256sum)
  [ "$n" = "$(sha256sum <"$root/var/www/html/big.bin")" ] ||
    die "shape 1: the 4 MB file came through changed"
  wait_until 20 shapes_instances_done 'inetd-proxy@*' ||
    die "shape 1: instances left: $(ct systemctl list-units --all --no-legend --plain 'inetd-proxy@*')"
  [ "$(prop NAccepted inetd-proxy.socket)" = $((accepted + 2)) ] ||
    die "shape 1: the socket accepted $(prop NAccepted inetd-proxy.socket), not $((accepted + 2))"
  n=$(shapes_journal "$c0" -u 'inetd-proxy@*' | grep -c 'Deactivated successfully' || true)
  [ "$n" = 2 ] && ! shapes_journal "$c0" -u 'inetd-proxy@*' | grep -q 'Failed with result' ||
    die "shape 1: not every instance exited 0: $(shapes_journal "$c0" -u 'inetd-proxy@*')"
  ok "shape 1: a 4 MB file came through intact; both instances exited 0 (\"Deactivated" \
    "successfully\", none left loaded)"

  # Shape 2 on those connections: the lines are in the journal, by its native socket.
  local line
  wait_until 10 eval '[ "$(shapes_journal "$c0" SYSLOG_IDENTIFIER=socket-proxyd _TRANSPORT=journal \
    PRIORITY=6 | grep -c "^Forwarding connection on fd 0 to $SHAPES_INETD_SOCK; ")" = 2 ]' ||
    die "shape 2: the journal does not have both instances' start-up lines:" \
      "$(shapes_journal "$c0" SYSLOG_IDENTIFIER=socket-proxyd -o verbose)"
  line=$(shapes_journal "$c0" SYSLOG_IDENTIFIER=socket-proxyd | head -n 1)
  ok "shape 2: with stdout and stderr the client's connection, the proxy's lines are in the" \
    "journal by its native socket (_TRANSPORT=journal, PRIORITY=6), one per instance: \"$line\"" \
    "and none reached the client (above)"

  shapes_reference
  shapes_logs
}

# The same unit with the reference in ExecStart=, on port 8002: what systemd-socket-proxyd does.
shapes_reference() {
  local c0 got
  ct sh -euc '
    sed -e "s/^ListenStream=8001\$/ListenStream=8002/" -e "s/Port 8001/Port 8002/" \
      /etc/systemd/system/inetd-proxy.socket >/etc/systemd/system/inetd-reference.socket
    sed -e "s|^ExecStart=/usr/bin/socket-proxyd |ExecStart=/lib/systemd/systemd-socket-proxyd |" \
      -e "s/port 8001/port 8002/" \
      /etc/systemd/system/inetd-proxy@.service >/etc/systemd/system/inetd-reference@.service
    grep -q "^ExecStart=/lib/systemd/systemd-socket-proxyd --exit-idle-time=30s /run/nginx-inetd.sock\$" \
      /etc/systemd/system/inetd-reference@.service
    systemctl daemon-reload
    systemctl start inetd-reference.socket' || die "shape 1: could not set up the reference's unit"
  c0=$(shapes_cursor)
  shapes_raw 8002 "$work/ref.raw"
  wait_until 20 eval '[ -n "$(ct systemctl list-units --all --no-legend --plain --state=failed \
    "inetd-reference@*")" ]' || die "shape 1: the reference's instance did not fail"
  shapes_journal "$c0" -u 'inetd-reference@*' | grep -q 'Main process exited, code=exited, status=1/FAILURE' ||
    die "shape 1: the reference did not exit 1: $(shapes_journal "$c0" -u 'inetd-reference@*')"
  printf "Didn't get any sockets passed in.\n" | cmp -s - "$work/ref.raw" ||
    die "shape 1: the reference's client got other bytes than its error line:" \
      "$(od -c "$work/ref.raw" | head -n 10)"
  got=$(sed -z 's/\n/\\n/g' "$work/ref.raw")
  ok "shape 1, the reference in the same unit: exit 1, and the client's connection received" \
    "its error line as the response, $(wc -c <"$work/ref.raw") bytes: \"$got\", then a reset" \
    "(the request unread; the client saw: $(tr -d '\n' <"$work/ref.raw.err"))"
  ct systemctl reset-failed 'inetd-reference@*'
}

# Shape 2: -v, and stdout or stderr the journal's stream.
shapes_logs() {
  local c0 sent received line variant
  shapes_install 2
  c0=$(shapes_cursor)
  shapes_raw 8001 "$work/s2.raw"
  shapes_same_bytes "shape 2" "$work/s2.raw"
  sent=$(printf 'GET /e2e.txt HTTP/1.0\r\nHost: localhost\r\n\r\n' | wc -c)
  received=$(wc -c <"$work/s2.raw")
  wait_until 10 eval 'shapes_journal "$c0" SYSLOG_IDENTIFIER=socket-proxyd _TRANSPORT=journal \
    PRIORITY=7 | grep -qE "^127\.0\.0\.1:[0-9]+ -> $SHAPES_INETD_SOCK: $sent bytes sent, $received received, [0-9.]+s, closed\$"' ||
    die "shape 2: no per-connection line for $sent bytes sent, $received received:" \
      "$(shapes_journal "$c0" SYSLOG_IDENTIFIER=socket-proxyd -o verbose)"
  line=$(shapes_journal "$c0" SYSLOG_IDENTIFIER=socket-proxyd PRIORITY=7)
  ok "shape 2: with -v (recipe 2's drop-in) the per-connection line is in the journal at" \
    "PRIORITY=7, its byte counts those the client sent and got: \"$line\"; the client's bytes" \
    "are again exactly the backend's"

  # stderr the journal's stream; then stdout the journal's stream and stderr the connection (the
  # case JOURNAL_STREAM's dev:inode tells apart).
  for variant in "StandardError=journal:stdout" "StandardOutput=journal StandardError=socket:journal"; do
    ct sh -euc 'printf "[Service]\n%s\n" "$1" | tr " " "\n" \
        >/etc/systemd/system/inetd-proxy@.service.d/e2e.conf
      systemctl daemon-reload' sh "${variant%:*}"
    c0=$(shapes_cursor)
    shapes_raw 8001 "$work/s2.raw"
    shapes_same_bytes "shape 2 (${variant%:*})" "$work/s2.raw"
    wait_until 10 eval 'shapes_journal "$c0" SYSLOG_IDENTIFIER=socket-proxyd \
      _TRANSPORT="${variant#*:}" PRIORITY=7 | grep -q " -> $SHAPES_INETD_SOCK: "' ||
      die "shape 2 (${variant%:*}): no per-connection line by _TRANSPORT=${variant#*:}:" \
        "$(shapes_journal "$c0" SYSLOG_IDENTIFIER=socket-proxyd -o verbose)"
    ok "shape 2 with ${variant%:*}: the lines reach the journal (_TRANSPORT=${variant#*:})," \
      "the client gets exactly the backend's bytes"
  done
  ct rm /etc/systemd/system/inetd-proxy@.service.d/e2e.conf
  ct systemctl daemon-reload
}

shapes_named_user() {
  local pid server uid gid entry out
  shapes_install 3
  entry=$(ct getent passwd media) || die "shape 3: no user media"
  uid=$(cut -d: -f3 <<<"$entry")
  gid=$(cut -d: -f4 <<<"$entry")
  [ "$(cut -d: -f6 <<<"$entry")" = /nonexistent ] && [ "$uid" -lt 1000 ] &&
    ! ct test -e /nonexistent || die "shape 3: media is not a system user without a home: $entry"
  [ "$(prop SubState media-proxy.socket)" = listening ] && shapes_inactive media-proxy.service ||
    die "shape 3: media-proxy.socket does not wait for the first client"
  [ "$(ct timeout 20 curl -sS --fail -m 15 http://127.0.0.1:8096/e2e.txt)" = "$shapes_token" ] ||
    die "shape 3: curl http://127.0.0.1:8096/e2e.txt failed"
  [ "$(prop Type media-proxy.service)" = notify ] &&
    [ "$(prop ActiveState media-proxy.service)" = active ] ||
    die "shape 3: media-proxy.service is not an active Type=notify service"
  pid=$(prop MainPID media-proxy.service)
  server=$(prop MainPID media-server.service)
  [ "$(shapes_status_field "$pid" Uid)" = "$uid $uid $uid $uid" ] &&
    [ "$(shapes_status_field "$pid" Gid)" = "$gid $gid $gid $gid" ] ||
    die "shape 3: the proxy does not run as media: $(ct grep -E '^(Uid|Gid)' "/proc/$pid/status")"
  [ "$(ct readlink "/proc/$pid/exe")" = /usr/lib/socket-proxyd/deno ] ||
    die "shape 3: the main process is not the package's deno"
  ok "shape 3: curl through port 8096 works; media-proxy.service is Type=notify active, its" \
    "main process the package's deno as media (uid $uid, gid $gid; home /nonexistent, which" \
    "does not exist)"
  [ "$(netns "$pid")" = "$(netns "$server")" ] && [ "$(netns "$pid")" != "$(netns 1)" ] ||
    die "shape 3: the proxy is not in media-server's network namespace"
  ok "shape 3: the proxy is in media-server.service's private network namespace" \
    "($(netns "$pid"); the host's is $(netns 1))"
  out=$(ct timeout 60 systemd-run --quiet --wait --pipe -p User=media -p Group=media \
    /usr/bin/socket-proxyd --version 2>&1) || die "shape 3: socket-proxyd as media, bare: $out"
  out=$(shapes_owned_by media)
  [ -z "$out" ] && ! ct test -e /nonexistent ||
    die "shape 3: files were written as media: $out"
  ok "shape 3: nothing anywhere is owned by media (find /), after the proxy served and after a" \
    "bare \`systemd-run -p User=media socket-proxyd --version\`: Deno needs no home, no cache"
}

shapes_on_demand() {
  local t0 t1 proxy backend stopped
  shapes_install 4
  idle_dropin on-demand-proxy.service 3s
  [ "$(prop SubState on-demand-proxy.socket)" = listening ] &&
    shapes_inactive on-demand-proxy.service slow-backend.service &&
    [ "$(ct systemctl is-enabled slow-backend.service 2>&1)" = static ] ||
    die "shape 4: the socket should listen, both services be stopped, the backend not enabled"

  local round first_proxy=
  for round in first next; do
    t0=$(date +%s%N)
    [ "$(ct timeout 40 curl -sS --fail -m 35 http://127.0.0.1:8004/e2e.txt)" = "$shapes_token" ] ||
      die "shape 4: the $round client was not served"
    t1=$(date +%s%N)
    [ $(((t1 - t0) / 1000000)) -ge 2000 ] ||
      die "shape 4: answered in $(((t1 - t0) / 1000000)) ms: the backend did not make it wait"
    proxy=$(prop MainPID on-demand-proxy.service)
    backend=$(prop MainPID slow-backend.service)
    [ "$proxy" != 0 ] && [ "$backend" != 0 ] && [ "$proxy" != "$first_proxy" ] ||
      die "shape 4: the $round client did not start both units (proxy $proxy, backend $backend)"
    ok "shape 4: the $round client started on-demand-proxy.service (pid $proxy) and, by" \
      "Wants=, slow-backend.service (pid $backend), and was served in" \
      "$(((t1 - t0) / 1000000)) ms though the backend takes 2 s to listen (--connect-timeout," \
      "no ExecStartPre=)"
    [ "$round" = first ] || break
    first_proxy=$proxy
    t0=$SECONDS
    wait_until 20 shapes_inactive on-demand-proxy.service slow-backend.service ||
      die "shape 4: not both stopped after the idle time"
    stopped=$((SECONDS - t0))
    [ "$(prop Result on-demand-proxy.service)" = success ] && [ "$stopped" -ge 2 ] ||
      die "shape 4: the proxy's exit: $(prop Result on-demand-proxy.service) after ${stopped}s"
    ct timeout 20 journalctl --no-pager -q -o cat _PID="$proxy" |
      grep -q '^Exiting after 3s without connections\.$' ||
      die "shape 4: no idle exit in the journal of pid $proxy"
    ok "shape 4: after --exit-idle-time=3s (a drop-in) the proxy exited 0 and the" \
      "StopWhenUnneeded= backend stopped with it (both inactive ${stopped}s after the client)"
  done
}

shapes_templated() {
  local pid uid gid webgid st out code
  shapes_install 5
  ct sh -euc 'useradd --no-create-home --groups web-clients alice
    useradd --no-create-home bob
    systemctl enable --now port-proxy@80.socket 2>/dev/null' ||
    die "shape 5: could not add the clients or port-proxy@80.socket"
  st=$(ct stat -c '%U:%G %a %F' /run/port-proxy/8080.sock)
  [ "$st" = "root:web-clients 660 socket" ] || die "shape 5: /run/port-proxy/8080.sock is $st"
  ok "shape 5: port-proxy@8080.socket made /run/port-proxy/8080.sock, $st"
  [ "$(ct timeout 20 runuser -u alice -- curl -sS --fail -m 15 --unix-socket \
    /run/port-proxy/8080.sock http://localhost/e2e.txt)" = "$shapes_token" ] ||
    die "shape 5: alice (in web-clients) was not served through port-proxy@8080"
  ct timeout 20 runuser -u alice -- curl -sS --fail -m 15 --unix-socket /run/port-proxy/80.sock \
    http://localhost/ | grep -q 'Welcome to nginx!' ||
    die "shape 5: alice was not served through port-proxy@80"
  [[ $(prop StatusText port-proxy@8080.service) == "Forwarding to 127.0.0.1:8080: "* ]] &&
    [[ $(prop StatusText port-proxy@80.service) == "Forwarding to 127.0.0.1:80: "* ]] ||
    die "shape 5: the instances forward elsewhere: $(prop StatusText port-proxy@8080.service)," \
      "$(prop StatusText port-proxy@80.service)"
  ok "shape 5: alice, in web-clients, gets the pages through port-proxy@8080 (127.0.0.1:8080)" \
    "and port-proxy@80 (127.0.0.1:80): the instance name is the port"
  pid=$(prop MainPID port-proxy@8080.service)
  uid=$(ct id -u port-proxy)
  gid=$(ct id -g port-proxy)
  webgid=$(ct getent group web-clients | cut -d: -f3)
  [ "$(shapes_status_field "$pid" Uid)" = "$uid $uid $uid $uid" ] &&
    [ "$(shapes_status_field "$pid" Gid)" = "$gid $gid $gid $gid" ] &&
    [[ " $(shapes_status_field "$pid" Groups) " == *" $webgid "* ]] ||
    die "shape 5: the proxy is not port-proxy in web-clients:" \
      "$(ct grep -E '^(Uid|Gid|Groups)' "/proc/$pid/status")"
  ok "shape 5: the service runs as port-proxy (uid $uid, gid $gid), member of web-clients" \
    "($webgid): Groups $(shapes_status_field "$pid" Groups)"
  out=$(ct runuser -u bob -- perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Peer => $ARGV[0])
    or die "$!\n"' /run/port-proxy/8080.sock 2>&1) && die "shape 5: bob could connect"
  [ "$out" = "Permission denied" ] || die "shape 5: bob's connect() failed with: $out"
  code=0
  ct timeout 20 runuser -u bob -- curl -sS -m 5 -o /dev/null --unix-socket \
    /run/port-proxy/8080.sock http://localhost/ 2>/dev/null || code=$?
  [ "$code" = 7 ] || die "shape 5: bob's curl exited $code, not 7"
  ok "shape 5: bob, not in web-clients, is refused by the file mode (connect(): $out; curl" \
    "exit 7)"
}

shapes_verify() {
  local out
  out=$(ct timeout 60 systemd-analyze verify /etc/systemd/system/inetd-proxy.socket \
    inetd-proxy@1.service media-proxy.socket media-proxy.service media-server.service \
    on-demand-proxy.socket /etc/systemd/system/on-demand-proxy.service slow-backend.service \
    port-proxy@8080.socket port-proxy@8080.service 2>&1) ||
    die "systemd-analyze verify failed: $out"
  [ -z "$out" ] || die "systemd-analyze verify printed: $out"
  ok "systemd-analyze verify prints nothing for the recipes' 10 units"
}

# shapes_client PORT: one request to 127.0.0.1:PORT, answered with the test file.
shapes_client() {
  [ "$(ct timeout 40 curl -sS --fail -m 35 "http://127.0.0.1:$1/e2e.txt")" = "$shapes_token" ]
}

part_shapes() {
  local t0=$SECONDS diag_before=$DIAG_UNITS
  DIAG_UNITS="inetd-proxy.socket inetd-proxy@* media-proxy.socket media-proxy.service \
media-server.service on-demand-proxy.socket on-demand-proxy.service slow-backend.service \
port-proxy@8080.socket port-proxy@8080.service nginx.service"
  shapes_token=socket-proxyd-shapes-$RANDOM$RANDOM
  boot shapes
  install_package "$DEB"
  printf '%s\n' "$shapes_token" >"$root/var/www/html/e2e.txt"
  head -c 4000000 /dev/urandom >"$root/var/www/html/big.bin"
  ok "shapes: apt install ./$(basename "$DEB"); the recipes are in $SHAPES_RECIPES"
  shapes_inetd
  shapes_named_user
  check_crash_recovery "shape 3" media-proxy.service media-server.service shapes_client 8096
  shapes_on_demand
  check_crash_recovery "shape 4" on-demand-proxy.service slow-backend.service shapes_client 8004
  shapes_templated
  shapes_verify
  stop_container
  DIAG_UNITS=$diag_before
  echo "== shapes: $((SECONDS - t0))s"
}
