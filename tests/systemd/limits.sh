# Part "limits" of tests/systemd/run.sh: the connection limits on a real systemd, with the package.
#   upstream  the steps and assertions of systemd's own test of systemd-socket-proxyd
#             (test/units/TEST-74-AUX-UTILS.socket-proxyd.sh in systemd/systemd), run against
#             the package with only ExecStart= changed: an echo backend on a Unix socket, a
#             socket unit on port 12345; "hello", "world" and 64 KiB of base64 come back; with
#             --connections-max=1 and one connection held, the next client gets nothing, and
#             right after it returns `journalctl --sync` and `journalctl --grep "Hit connection
#             limit"` find the refusal; the soft LimitNOFILE= is raised to the hard one; the
#             held connection still works; once it is closed a client is served again.
#             Re-written here, not copied. Adapted where a tool is missing from the container
#             (Debian 12 minbase with systemd, curl and nginx-light): the backend is a socket unit
#             with Accept=yes running cat (upstream: socat UNIX-LISTEN:...,fork EXEC:cat) and the
#             client is bash's /dev/tcp with head -c (upstream: a Python script), to 127.0.0.1
#             (upstream: localhost, which nothing resolves in the container).
#   burst     200 clients at once against -c 4 --when-full=wait: every one is served, none is
#             refused, the backend never has more than 4 at once (it counts them itself), and
#             STATUS= counts the waiting clients.

LIMITS_SOCK=/tmp/test-proxyd-backend.sock
LIMITS_PORT=12345

# limits_backend NAME PATH-OR-PORT COMMAND: an Accept=yes socket unit NAME.socket listening on
# PATH-OR-PORT whose instances run COMMAND with the connection as stdin and stdout.
limits_backend() {
  ct tee "/run/systemd/system/$1.socket" >/dev/null <<EOF
[Socket]
ListenStream=$2
Accept=yes
EOF
  ct tee "/run/systemd/system/$1@.service" >/dev/null <<EOF
[Service]
StandardInput=socket
StandardOutput=socket
StandardError=journal
ExecStart=$3
EOF
}

# limits_proxy TYPE OPTIONS...: the unit test-proxyd.{socket,service} on port 12345, forwarding
# to the backend's socket with the package's socket-proxyd and OPTIONS, with Type=TYPE (simple,
# as upstream's, or notify, for STATUS=), (re)started.
limits_proxy() {
  local type=$1
  shift
  ct systemctl stop test-proxyd.socket test-proxyd.service 2>/dev/null || true
  ct tee /run/systemd/system/test-proxyd.socket >/dev/null <<EOF
[Socket]
ListenStream=$LIMITS_PORT
EOF
  ct tee /run/systemd/system/test-proxyd.service >/dev/null <<EOF
[Service]
Type=$type
LimitNOFILE=1024:8192
ExecStart=/usr/bin/socket-proxyd $* $LIMITS_SOCK
EOF
  ct systemctl daemon-reload
  ct systemctl start test-proxyd.socket || die "test-proxyd.socket did not start"
}

# The script run in the container for the upstream steps: every step's output is in its log.
limits_upstream_script() {
  cat <<'EOF'
set -eux -o pipefail
assert_eq() {
  if [ "$1" != "$2" ]; then
    echo "FAIL: expected '$2', got '$1'" >&2
    exit 1
  fi
}
# proxy_echo: sends stdin to port 12345 and prints as many bytes as came back before the end.
proxy_echo() {
  local data
  data=$(mktemp)
  cat >"$data"
  timeout 15 bash -c 'exec 3<>/dev/tcp/127.0.0.1/12345
    cat "$1" >&3 &
    head -c "$(stat -c %s "$1")" <&3' sh "$data" || true
  rm -f "$data"
}
case $1 in
forwarding)
  assert_eq "$(echo -n hello | proxy_echo)" hello
  assert_eq "$(echo -n world | proxy_echo)" world
  LARGE_DATA=$(dd if=/dev/urandom bs=1024 count=64 status=none | base64)
  assert_eq "$(echo -n "$LARGE_DATA" | proxy_echo)" "$LARGE_DATA"
  ;;
limit)
  exec {HELD}<>/dev/tcp/127.0.0.1/12345
  echo -n held >&"$HELD"
  read -r -N 4 -t 15 REPLY <&"$HELD"
  assert_eq "$REPLY" held
  assert_eq "$(echo -n refused | proxy_echo)" ""
  journalctl --sync
  journalctl -q --no-pager -u test-proxyd.service --grep "Hit connection limit"
  pid=$(systemctl show -p MainPID --value test-proxyd.service)
  assert_eq "$(awk '/^Max open files/ { print $4 " " $5 }' "/proc/$pid/limits")" "8192 8192"
  echo -n more >&"$HELD"
  read -r -N 4 -t 15 REPLY <&"$HELD"
  assert_eq "$REPLY" more
  exec {HELD}>&-
  served=
  for _ in $(seq 150); do
    if [ "$(echo -n again | proxy_echo)" = again ]; then served=1 && break; fi
    sleep 0.1
  done
  assert_eq "$served" 1
  ;;
esac
EOF
}

# limits_run NAME STEP: runs STEP of the upstream script in the container; dies with its log.
limits_run() {
  limits_upstream_script >"$root/var/tmp/limits-upstream.sh"
  ct timeout 120 bash /var/tmp/limits-upstream.sh "$2" >"$work/$1.log" 2>&1 ||
    die "$1 failed:"$'\n'"$(tail -n 40 "$work/$1.log")"
}

limits_upstream() {
  limits_backend test-proxyd-backend "$LIMITS_SOCK" /bin/cat
  ct systemctl daemon-reload
  ct systemctl start test-proxyd-backend.socket || die "the echo backend did not start"
  limits_proxy simple
  limits_run upstream-forwarding forwarding
  ok "upstream: hello, world and 64 KiB of base64 come back through ExecStart=/usr/bin/socket-proxyd"
  limits_proxy simple --connections-max=1
  limits_run upstream-limit limit
  ok "upstream: --connections-max=1 with one held: the next client gets nothing; right after it" \
    "returns, journalctl --sync and --grep \"Hit connection limit\" find the refusal"
  ok "upstream: LimitNOFILE=1024:8192 is 8192:8192 in the proxy; the held connection still" \
    "works; once closed, a client is served again"
}

# The backend of the burst: each instance counts itself in and out (under a lock) before its
# connection closes, and logs the count, so the most it logged is the most connections it had.
LIMITS_COUNTING='exec 9>>/var/tmp/burst.lock
flock 9; n=$(($(cat /var/tmp/burst.now 2>/dev/null || echo 0) + 1)); echo $n >/var/tmp/burst.now
echo $n >>/var/tmp/burst.log; flock -u 9
sleep 0.05; cat
flock 9; echo $(($(cat /var/tmp/burst.now) - 1)) >/var/tmp/burst.now; flock -u 9'

limits_burst() {
  local clients=200 served statuses most status invocation waited
  ct systemctl stop test-proxyd.socket test-proxyd.service test-proxyd-backend.socket
  ct rm -f /var/tmp/burst.now /var/tmp/burst.log /var/tmp/burst.lock /var/tmp/burst.out
  ct tee /var/tmp/burst-backend.sh >/dev/null <<<"$LIMITS_COUNTING"
  limits_backend test-proxyd-backend "$LIMITS_SOCK" "/bin/sh /var/tmp/burst-backend.sh"
  limits_proxy notify -c 4 --when-full=wait
  ct systemctl start test-proxyd-backend.socket || die "the counting backend did not start"
  # The proxy is started by the first connection; the burst comes once it serves.
  [ "$(ct timeout 15 bash -c 'exec 3<>/dev/tcp/127.0.0.1/12345; printf x >&3; head -c 1 <&3')" = x ] ||
    die "burst: the first client was not served"
  ct bash -c 'for i in $(seq 1 '"$clients"'); do
      timeout 120 bash -c "exec 3<>/dev/tcp/127.0.0.1/12345; printf x >&3; printf \"%s\\n\" \"\$(head -c 1 <&3)\"" &
    done >/var/tmp/burst.out 2>&1; wait' &
  local burst=$!
  invocation=$(ct systemctl show -p InvocationID --value test-proxyd.service)
  statuses=
  while kill -0 "$burst" 2>/dev/null; do
    status=$(ct systemctl show -p StatusText --value test-proxyd.service)
    statuses+=$status$'\n'
    sleep 0.2
  done
  wait "$burst" || die "burst: the clients failed: $(tail -n 5 "$root/var/tmp/burst.out")"
  served=$(grep -c '^x$' "$root/var/tmp/burst.out" || true)
  [ "$served" = "$clients" ] || die "burst: $served of $clients clients got their byte back:" \
    "$(sort "$root/var/tmp/burst.out" | uniq -c)"
  most=$(sort -n "$root/var/tmp/burst.log" | tail -n 1)
  [ "$most" -le 4 ] || die "burst: the backend had $most connections at once"
  grep -qE ': [1-4] active, [1-9][0-9]* waiting' <<<"$statuses" ||
    die "burst: STATUS= never showed clients waiting:"$'\n'"$statuses"
  waited=$(grep -oE '[0-9]+ waiting' <<<"$statuses" | sort -n | tail -n 1)
  wait_until 10 eval "[ \"\$(ct systemctl show -p StatusText --value test-proxyd.service)\" = \
'Forwarding to $LIMITS_SOCK: 0 active, 0 waiting, $((clients + 1)) served' ]" ||
    die "burst: STATUS= at the end: $(ct systemctl show -p StatusText --value test-proxyd.service)"
  ! ct journalctl -q --no-pager "_SYSTEMD_INVOCATION_ID=$invocation" --grep "refus" ||
    die "burst: a client was refused"
  ct systemctl stop test-proxyd.socket test-proxyd.service
  ct journalctl -q --no-pager "_SYSTEMD_INVOCATION_ID=$invocation" --grep \
    "Stopped: $((clients + 1)) connection\\(s\\) served, none cut off\\.$" >/dev/null ||
    die "burst: no stop line with $((clients + 1)) served and none refused"
  ok "burst: $clients clients at once against -c 4 --when-full=wait: all served, 0 refused," \
    "at most $most at the backend at once; STATUS= showed up to $waited"
}

part_limits() {
  local t0=$SECONDS diag_before=$DIAG_UNITS
  DIAG_UNITS="test-proxyd.socket test-proxyd.service test-proxyd-backend.socket"
  boot limits
  install_package "$DEB"
  ok "limits: apt install ./$(basename "$DEB")"
  limits_upstream
  limits_burst
  stop_container
  DIAG_UNITS=$diag_before
  echo "== limits: $((SECONDS - t0))s"
}
