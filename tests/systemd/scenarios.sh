# Part "scenarios" of tests/systemd/run.sh: both scenarios of systemd-socket-proxyd(8), from the
# package's example units (installed with the commands of systemd/README.md), checked end to end:
#   - statically: `systemd-analyze verify` prints nothing for the units, and
#     `systemd-analyze security --offline=true` rates the service at the level the README quotes
#     (at most 1.0); the man page is found and renders without warnings; the claims the units'
#     comments make about Deno hold (no MemoryDenyWriteExecute=, no cache directory needed);
#   - for real: the socket listens and the service starts on the first connection; curl gets
#     nginx's pages through it; the running proxy has the lock-down the unit asks for and wrote
#     nothing; network namespaces are what the scenario says (the backend port unreachable from
#     outside nginx's); restarts while clients keep connecting refuse or fail no request; a stop
#     lets a download in flight finish; --exit-idle-time stops the service (with a watchdog
#     running) and the next connection starts it again;
#   - recovery: nginx killed is started again by systemd (the drop-in's Restart=) while the
#     proxy keeps running, and the next client is served; nginx unable to start (a bad
#     configuration), tried again and again while clients fail, then the README's
#     `systemctl restart proxy-to-nginx.socket` typed at once after the fix.

readme=$repo/systemd/README.md
EXAMPLES=/usr/share/doc/socket-proxyd/examples

token=socket-proxyd-e2e-$RANDOM$RANDOM

# fetch PATH: prints what GET http://localhost:80/PATH returns, through the proxy.
fetch() {
  ct timeout 20 curl -sS --fail -m 15 "http://localhost:80/$1"
}

prop() {
  ct timeout 20 systemctl show -p "$1" --value "$2"
}

# scenario_client: one request through port 80, answered with the test file (5 s at most).
scenario_client() {
  [ "$(ct timeout 10 curl -sS --fail -m 5 http://localhost:80/e2e.txt)" = "$token" ]
}

# check_recovery NAME: nginx killed, and nginx unable to start until fixed (see lib.sh).
check_recovery() {
  local name=$1
  check_crash_recovery "$name" proxy-to-nginx.service nginx.service scenario_client
  check_fix_recovery "$name" proxy-to-nginx.socket nginx.service \
    'echo "this is not nginx" >/etc/nginx/conf.d/e2e-broken.conf' \
    'rm /etc/nginx/conf.d/e2e-broken.conf' scenario_client
}

service_inactive() {
  [ "$(prop ActiveState proxy-to-nginx.service)" = inactive ]
}

# netns PID: the network namespace of the container's process PID.
netns() {
  ct readlink "/proc/$1/ns/net"
}

check_static() {
  local name=$1 out level
  out=$(ct timeout 60 systemd-analyze verify /etc/systemd/system/proxy-to-nginx.socket \
    /etc/systemd/system/proxy-to-nginx.service nginx.service 2>&1) ||
    die "$name: systemd-analyze verify failed: $out"
  [ -z "$out" ] || die "$name: systemd-analyze verify printed: $out"
  ok "$name: systemd-analyze verify prints nothing for proxy-to-nginx.{socket,service}" \
    "and nginx.service with the drop-in"

  out=$(ct timeout 60 systemd-analyze security --offline=true --no-pager \
    /etc/systemd/system/proxy-to-nginx.service 2>&1) ||
    die "$name: systemd-analyze security failed: $out"
  level=$(sed -n 's/.*Overall exposure level for proxy-to-nginx.service: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p' \
    <<<"$out")
  [ -n "$level" ] || die "$name: no exposure level in: $out"
  awk -v l="${level% *}" 'BEGIN { exit !(l <= 1.0) }' ||
    die "$name: exposure $level is above 1.0:"$'\n'"$out"
  grep -qE "$name/proxy-to-nginx\.service\`[ |]*${level% *} ${level#* }" "$readme" ||
    die "$name: systemd/README.md does not quote the exposure level $level for" \
      "$name/proxy-to-nginx.service"
  ok "$name: systemd-analyze security --offline=true: exposure $level, as the README says"
}

check_manpage() {
  local out
  out=$(ct man -w socket-proxyd 2>&1) || die "man -w socket-proxyd: $out"
  local warnings
  warnings=$(ct sh -c 'MANWIDTH=80 man --warnings socket-proxyd 2>&1 >/dev/null') || true
  [ -z "$warnings" ] || die "the man page renders with warnings: $warnings"
  # (Output is captured before grep -q sees it: with pipefail, a writer that grep -q leaves
  # behind would fail with SIGPIPE.)
  local page
  page=$(ct sh -c 'MANWIDTH=80 man socket-proxyd') || die "man socket-proxyd failed"
  grep -q 'connections-max' <<<"$page" || die "man socket-proxyd does not show the options"
  ok "man socket-proxyd finds $out and renders it without warnings"
}

check_firewall() {
  # The default site still listens on port 80 here: a client under IPAddressDeny=any must not
  # reach it, and one without must.
  ct timeout 30 systemd-run --quiet --wait --pipe curl -sS -o /dev/null -m 5 http://127.0.0.1:80/ ||
    die "curl in a transient service cannot reach nginx"
  if ct timeout 30 systemd-run --quiet --wait --pipe -p IPAddressDeny=any \
    curl -sS -o /dev/null -m 5 http://127.0.0.1:80/ 2>/dev/null; then
    die "IPAddressDeny= is not enforced in this container (no BPF firewall)"
  fi
  ok "the container's systemd enforces IPAddressDeny= (BPF firewall), so the units' IP lists are live"
}

check_mdwe() {
  local out
  out=$(ct timeout 60 systemd-run --quiet --wait --pipe /usr/bin/socket-proxyd --version 2>&1) ||
    die "socket-proxyd --version failed: $out"
  [[ $out == "socket-proxyd "* ]] || die "socket-proxyd --version printed: $out"
  if out=$(ct timeout 60 systemd-run --wait --pipe -p MemoryDenyWriteExecute=yes \
    /usr/bin/socket-proxyd --version 2>&1); then
    die "Deno runs under MemoryDenyWriteExecute=yes: the units' comment that it cannot is wrong"
  fi
  ok "Deno cannot run under MemoryDenyWriteExecute=yes (V8 needs writable executable memory):" \
    "$(grep -m 1 -E 'Finished with result|Check failed|Fatal|error' <<<"$out" | cut -c1-90)"
}

check_no_cache_needed() {
  local out
  out=$(ct timeout 60 systemd-run --quiet --wait --pipe -p DynamicUser=yes -p ProtectSystem=strict \
    -p ProtectHome=yes /usr/bin/socket-proxyd --version 2>&1) ||
    die "socket-proxyd cannot start under DynamicUser=yes and ProtectSystem=strict: $out"
  [[ $out == "socket-proxyd "* ]] || die "socket-proxyd --version printed: $out"
  ok "the packaged program starts under DynamicUser=yes, ProtectSystem=strict, ProtectHome=yes" \
    "with no CacheDirectory= (Deno keeps no cache)"
}

install_scenario() {
  local name=$1 block
  block=$(readme_block "$readme" "install-$name")
  [ -n "$block" ] || die "systemd/README.md has no install-$name block"
  ct timeout 120 sh -euxc "$block" >"$work/install.log" 2>&1 ||
    die "$name: the README's install steps failed: $(cat "$work/install.log")"
  serve_test_files
  ok "$name: installed from the package's examples with the README's commands"
}

# serve_test_files: the pages the checks fetch through the proxy, in nginx's document root.
serve_test_files() {
  printf '%s\n' "$token" >"$root/var/www/html/e2e.txt"
  head -c 24000000 /dev/urandom >"$root/var/www/html/big.bin"
}

# check_activation NAME TARGET [DENO]: DENO is the main process's executable (default: the
# package's).
check_activation() {
  local name=$1 target=$2 deno=${3:-/usr/lib/socket-proxyd/deno} page pid status
  [ "$(prop SubState proxy-to-nginx.socket)" = listening ] ||
    die "$name: proxy-to-nginx.socket is not listening"
  service_inactive || die "$name: proxy-to-nginx.service runs before any client came"
  ok "$name: proxy-to-nginx.socket listens on port 80; the service waits for the first client"

  local t0 t1
  t0=$(date +%s%N)
  page=$(ct timeout 20 curl -sS --fail -m 15 http://localhost:80/) ||
    die "$name: curl http://localhost:80/ failed"
  t1=$(date +%s%N)
  grep -q 'Welcome to nginx!' <<<"$page" || die "$name: curl http://localhost:80/ got: $page"
  [ "$(fetch e2e.txt)" = "$token" ] || die "$name: wrong content for /e2e.txt"
  ok "$name: curl http://localhost:80/ gets nginx's page through the proxy (first start:" \
    "$(((t1 - t0) / 1000000)) ms)"

  [ "$(prop ActiveState proxy-to-nginx.service)" = active ] ||
    die "$name: the service is not active after a client came"
  status=$(prop StatusText proxy-to-nginx.service)
  [[ $status == "Forwarding to $target: "* ]] || die "$name: unexpected status '$status'"
  pid=$(prop MainPID proxy-to-nginx.service)
  [ "$(ct readlink "/proc/$pid/exe")" = "$deno" ] ||
    die "$name: the main process is not $deno: $(ct readlink "/proc/$pid/exe")"
  ok "$name: Type=notify: started on the first connection, main process $deno (the" \
    "wrapper exec'd), status \"$status\""
}

# check_lockdown NAME [SERVICE]: the running proxy of SERVICE (proxy-to-nginx.service) is locked down.
check_lockdown() {
  local name=$1 service=${2:-proxy-to-nginx.service} pid st uid
  pid=$(prop MainPID "$service")
  st=$(ct cat "/proc/$pid/status")
  uid=$(awk '/^Uid:/ { print $2 }' <<<"$st")
  [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ] || die "$name: not a dynamic user: uid $uid"
  grep -q '^CapEff:[[:space:]]*0000000000000000$' <<<"$st" || die "$name: has capabilities"
  grep -q '^CapBnd:[[:space:]]*0000000000000000$' <<<"$st" || die "$name: capability bounding set"
  grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$st" || die "$name: NoNewPrivs is not set"
  grep -q '^Seccomp:[[:space:]]*2$' <<<"$st" || die "$name: no seccomp filter"
  [ "$(ct cat "/proc/$pid/uid_map" | awk '{print $1}' | tr '\n' ' ')" = "0 $uid " ] ||
    die "$name: not in a private user namespace: $(ct cat "/proc/$pid/uid_map")"
  ! ct test -e /var/cache/private/socket-proxyd || die "$name: something made a cache directory"
  ok "$name: the proxy runs as dynamic user $uid in a user namespace, no capabilities," \
    "no new privileges, seccomp on, and keeps no cache"
}

# loops SECONDS N URL...: N clients per URL, each requesting it again and again for SECONDS;
# every answer lands in $work/loop.* as "ok" or "failed: ...".
loops() {
  local seconds=$1 n=$2 url i
  shift 2
  rm -f "$work"/loop.*
  for url in "$@"; do
    for i in $(seq "$n"); do
      ct timeout $((seconds + 30)) sh -c '
        end=$(($(date +%s) + $1))
        while [ "$(date +%s)" -lt "$end" ]; do
          if out=$(curl -sS --fail -m 15 "$2" 2>&1) && [ "$out" = "$3" ]; then echo ok
          else echo "failed: $out"; fi
        done' sh "$seconds" "$url" "$token" >"$work/loop.$RANDOM$i" 2>&1 &
      background+=($!)
    done
  done
}

# loops_done: waits for the loops; sets $served to how many requests were answered; fails on any
# failure. (Not in a $(...): a subshell cannot wait for the loops, which are not its children.)
loops_done() {
  local pid bad
  for pid in "${background[@]}"; do wait "$pid" || true; done
  background=()
  served=$(cat "$work"/loop.* | grep -c '^ok$' || true)
  bad=$(cat "$work"/loop.* | grep -vc '^ok$' || true)
  [ "$bad" = 0 ] || die "$bad of $((served + bad)) requests failed:" \
    "$(grep -hv '^ok$' "$work"/loop.* | sort | uniq -c)"
}

check_restarts() {
  local name=$1 i before after
  loops 7 4 http://localhost:80/e2e.txt
  sleep 1
  for i in 1 2 3; do
    before=$(prop MainPID proxy-to-nginx.service)
    ct timeout 60 systemctl restart proxy-to-nginx.service ||
      die "$name: systemctl restart failed"
    after=$(prop MainPID proxy-to-nginx.service)
    [ "$after" != 0 ] && [ "$after" != "$before" ] ||
      die "$name: restart $i did not start a new process ($before -> $after)"
    [ "$(prop SubState proxy-to-nginx.socket)" = running ] ||
      die "$name: the socket is not bound after restart $i"
    sleep 1.5
  done
  loops_done
  [ "$served" -ge 20 ] || die "$name: only $served requests got through in 7s"
  [ "$(prop NRefused proxy-to-nginx.socket)" = 0 ] || die "$name: the socket refused connections"
  ok "$name: 3 restarts while 4 clients kept connecting: $served requests, none failed or refused"
}

check_drain() {
  local name=$1 size fetcher pid out
  pid=$(prop MainPID proxy-to-nginx.service)
  # 24 MB at 4 MB/s: still in flight after a second, more than the kernel's buffers can hold.
  ct timeout 60 curl -sS --fail -m 50 --limit-rate 4M -o /dev/null -w '%{size_download}' \
    http://localhost:80/big.bin >"$work/drain.out" 2>&1 &
  fetcher=$!
  background+=("$fetcher")
  sleep 1
  ct timeout 60 systemctl restart proxy-to-nginx.service || die "$name: systemctl restart failed"
  wait "$fetcher" || die "$name: the download broke off at the stop: $(cat "$work/drain.out")"
  background=()
  size=$(cat "$work/drain.out")
  [ "$size" = 24000000 ] || die "$name: the download got $size of 24000000 bytes"
  out=$(ct timeout 20 journalctl --no-pager _PID="$pid")
  grep -q 'Received SIGTERM, stopping: no longer accepting; 1 connection(s) open' <<<"$out" ||
    die "$name: the journal shows no graceful stop of pid $pid with one connection open"
  ok "$name: a restart while a 24 MB download was in flight let it finish (graceful drain)"
}

# idle_dropin SERVICE SPAN [LINE...]: a drop-in for SERVICE, as an operator adapts a unit, whose
# ExecStart= is the unit's with --exit-idle-time=5min made SPAN, plus LINEs; then daemon-reload.
idle_dropin() {
  local service=$1 span=$2 execstart short
  shift 2
  execstart=$(ct sed -n 's/^ExecStart=//p' "/etc/systemd/system/$service")
  short=${execstart/--exit-idle-time=5min/--exit-idle-time=$span}
  [ "$short" != "$execstart" ] || die "$service: ExecStart= has no --exit-idle-time=5min"
  ct sh -euc 'file=/etc/systemd/system/$1.d/e2e.conf
    mkdir -p "${file%/*}"
    printf "[Service]\nExecStart=\nExecStart=%s\n" "$2" >"$file"
    shift 2
    for line; do printf "%s\n" "$line" >>"$file"; done
    systemctl daemon-reload' sh "$service" "$short" "$@"
}

check_idle() {
  local name=$1 first second started stopped out
  # A short idle time, and a watchdog that would kill the proxy before it went idle if
  # WATCHDOG=1 did not arrive.
  idle_dropin proxy-to-nginx.service 5s WatchdogSec=2s
  # (systemctl warns that the socket can still start it: that is the point.)
  ct systemctl stop proxy-to-nginx.service 2>/dev/null
  service_inactive || die "$name: could not stop the service"
  [ "$(prop SubState proxy-to-nginx.socket)" = listening ] || die "$name: socket not listening"

  [ "$(fetch e2e.txt)" = "$token" ] || die "$name: no answer after the stop"
  first=$(prop MainPID proxy-to-nginx.service)
  [ "$first" != 0 ] || die "$name: the connection did not start the service"
  started=$SECONDS
  wait_until 30 service_inactive || die "$name: the service did not exit when idle"
  stopped=$SECONDS
  [ "$(prop Result proxy-to-nginx.service)" = success ] ||
    die "$name: the idle exit was not a success: $(prop Result proxy-to-nginx.service)"
  [ $((stopped - started)) -ge 4 ] || die "$name: exited after $((stopped - started))s, not 5s"
  out=$(ct timeout 20 journalctl --no-pager _PID="$first")
  grep -q 'Exiting after 5s without connections' <<<"$out" ||
    die "$name: no idle exit in the journal"
  [ "$(prop SubState proxy-to-nginx.socket)" = listening ] ||
    die "$name: the socket is not listening after the idle exit"
  ok "$name: --exit-idle-time=5s stopped the service (status 0, WatchdogSec=2s kept happy);" \
    "the socket stays bound"

  local t0 t1
  t0=$(date +%s%N)
  [ "$(fetch e2e.txt)" = "$token" ] || die "$name: no answer after the idle exit"
  t1=$(date +%s%N)
  second=$(prop MainPID proxy-to-nginx.service)
  [ "$second" != 0 ] && [ "$second" != "$first" ] ||
    die "$name: the next connection did not start a new process"
  ok "$name: the next connection started it again (pid $first, then $second) and was answered" \
    "in $(((t1 - t0) / 1000000)) ms, start-up included"
  ct rm -f /etc/systemd/system/proxy-to-nginx.service.d/e2e.conf
  ct systemctl daemon-reload
}

# ---------------------------------------------------------------------------------------------
# The scenarios.

scenario_unix_path() {
  local name=unix-path
  boot "$name"
  check_firewall
  install_package "$DEB"
  ok "$name: apt install ./$(basename "$DEB") in a container without Deno or Node"
  install_scenario "$name"
  check_static "$name"
  check_manpage
  check_mdwe
  check_no_cache_needed
  [ "$(ct stat -c '%U:%G %a' /run/nginx)" = "root:www-data 750" ] ||
    die "$name: /run/nginx is $(ct stat -c '%U:%G %a' /run/nginx), not root:www-data 750"
  ok "$name: nginx's socket directory /run/nginx is root:www-data 0750"
  check_activation "$name" /run/nginx/socket
  check_lockdown "$name"
  check_unix_path_isolation
  check_restarts "$name"
  check_drain "$name"
  check_idle "$name"
  check_recovery "$name"
  stop_container
}

# check_unix_path_isolation: the unix-path proxy's group and network namespace.
check_unix_path_isolation() {
  local name=unix-path pid nginx
  pid=$(prop MainPID proxy-to-nginx.service)
  nginx=$(prop MainPID nginx.service)
  grep -q '^Groups:.*\b33\b' <<<"$(ct cat "/proc/$pid/status")" ||
    die "$name: the proxy is not in group www-data"
  [ "$(netns "$pid")" != "$(netns 1)" ] && [ "$(netns "$pid")" != "$(netns "$nginx")" ] ||
    die "$name: the proxy is not in a network namespace of its own"
  [ "$(ct nsenter -t "$pid" -n cat /proc/net/dev | awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }')" = lo ] ||
    die "$name: the proxy's network namespace has more than a loopback device"
  ok "$name: the proxy is in group www-data and has a network namespace of its own with" \
    "loopback only (PrivateNetwork=yes), yet serves port 80"
}

scenario_namespace() {
  local name=namespace
  boot "$name"
  install_package "$DEB"
  install_scenario "$name"
  check_static "$name"
  check_activation "$name" 127.0.0.1:8080
  check_lockdown "$name"
  check_namespace_isolation
  check_restarts "$name"
  check_drain "$name"
  check_idle "$name"
  check_recovery "$name"
  stop_container
}

# check_namespace_isolation: the namespace proxy is in nginx's network namespace, nginx's port
# only there.
check_namespace_isolation() {
  local name=namespace pid nginx code
  pid=$(prop MainPID proxy-to-nginx.service)
  nginx=$(prop MainPID nginx.service)
  [ "$(netns "$pid")" = "$(netns "$nginx")" ] ||
    die "$name: the proxy is not in nginx's network namespace"
  [ "$(netns "$pid")" != "$(netns 1)" ] ||
    die "$name: nginx and the proxy are in the container's main network namespace"
  ok "$name: the proxy shares nginx's network namespace ($(netns "$pid")), not the main one" \
    "($(netns 1))"
  code=0
  ct timeout 20 curl -sS -m 5 -o /dev/null http://127.0.0.1:8080/ 2>/dev/null || code=$?
  [ "$code" = 7 ] || die "$name: 127.0.0.1:8080 outside nginx's namespace: curl exit $code, not 7"
  ct timeout 20 nsenter -t "$nginx" -n curl -sS --fail -m 5 -o /dev/null http://127.0.0.1:8080/ ||
    die "$name: nginx does not answer on 127.0.0.1:8080 in its own namespace"
  ok "$name: 127.0.0.1:8080 answers inside nginx's namespace and is refused outside it"
}

part_scenarios() {
  echo "== unix-path: port 80 -> nginx's Unix socket"
  scenario_unix_path
  echo "== namespace: port 80 -> nginx on 127.0.0.1:8080 in its private network namespace"
  scenario_namespace
}
