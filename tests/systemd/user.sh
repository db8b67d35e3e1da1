# Part "user" of tests/systemd/run.sh: socket-proxyd in a user's own service manager
# (systemctl --user), from the package's user units, for a lingering user, alice:
#   - the template socket-proxyd@.socket/.service of /usr/lib/systemd/user, enabled by alice
#     for a port (8123) and for a Unix socket under %t (/run/user/UID/spx.sock), each configured
#     by ~/.config/socket-proxyd/INSTANCE.conf: a client gets the backend's reply (a plain user
#     service: busybox httpd, and a socat bridge to it on a Unix socket for the path instance);
#     the service reaches active (its READY=1 reached the user manager's notification socket);
#     the process names itself socket-proxyd; it runs with the lock-down the unit claims a user
#     manager can enforce (and the settings the unit leaves out are shown to have no effect
#     there); `systemd-analyze --user security` rates it as systemd/README.md says;
#   - what the wrapper lets Deno write there: exactly the notification socket NOTIFY_SOCKET
#     names and the journal's socket (a probe run in the program's place, in the real unit);
#   - a bad conf stops the instance after the failed starts, with a journal line naming the file;
#     once fixed, one `systemctl --user restart` of the socket serves again (both instances);
#   - an inetd-style user unit (Accept=yes, StandardInput=socket): its log line reaches the
#     journal through the journal's socket, never the client;
#   - the README's unit form of the line for running from a URL (--allow-write=${NOTIFY_SOCKET}),
#     as a user unit, with the bundle served over HTTP: active and serving;
#   - recipe 6 (systemd/recipes/6-rootless-podman), installed by alice with the recipe's
#     commands: a client gets the reply of a container that rootless podman publishes on
#     loopback; a killed container is started again by systemd while the proxy keeps running;
#     after --exit-idle-time the proxy exits and the container is stopped and removed; a
#     container that cannot start (its image gone), then the recipe's recovery typed at once.
# The container has no network: the image is made on the spot from busybox (busybox httpd) and
# tagged with the name the recipe uses, so podman never pulls.

USER_NAME=alice
USER_TOKEN=socket-proxyd-user-$RANDOM$RANDOM
# (Not in /tmp or /var/tmp: the unit has PrivateTmp=yes.)
USER_PROBE=/usr/local/lib/grant_probe.js
# Where the backend, a plain user service, serves ~/www: TCP, and a Unix socket under %t.
USER_BACKEND=127.0.0.1:18081

# as_user SCRIPT [ARG...]: runs the shell SCRIPT as alice, in her home, with her manager's
# environment (XDG_RUNTIME_DIR).
as_user() {
  local script=$1
  shift
  ct timeout 120 runuser -u "$USER_NAME" -- env HOME="/home/$USER_NAME" \
    XDG_RUNTIME_DIR="/run/user/$user_uid" sh -euc "cd; $script" sh "$@"
}

# user_get ADDRESS: the test file through the instance listening on ADDRESS (a port or a path).
user_get() {
  case $1 in
    /*) ct timeout 20 curl -sS --fail -m 10 --unix-socket "$1" http://localhost/e2e.txt ;;
    *) ct timeout 20 curl -sS --fail -m 10 "http://127.0.0.1:$1/e2e.txt" ;;
  esac
}

# user_served ADDRESS: the instance on ADDRESS answers with the test file.
user_served() {
  [ "$(user_get "$1")" = "$USER_TOKEN" ]
}

# user_unit ADDRESS: the template socket's name for ADDRESS; user_instance ADDRESS: its instance.
user_unit() {
  ct systemd-escape --template=socket-proxyd@.socket "$1"
}
user_instance() {
  local unit
  unit=$(user_unit "$1")
  unit=${unit#socket-proxyd@}
  echo "${unit%.socket}"
}

# user_manager: alice, lingering: her service manager runs with nobody logged in.
user_manager() {
  # systemd-nspawn puts a FIFO over /proc/kmsg; a user manager cannot mount over it, and so
  # cannot start a service with ProtectKernelLogs=yes ("Failed to mount ... /proc/kmsg: No such
  # file or directory"). A host has the kernel's file there, which the manager masks fine:
  # restore that.
  ct umount /proc/kmsg
  [ "$(ct stat -c %F /proc/kmsg)" = "regular empty file" ] || die "user: /proc/kmsg is $(ct stat -c %F /proc/kmsg)"
  ct useradd --create-home --shell /bin/sh "$USER_NAME"
  user_uid=$(ct id -u "$USER_NAME")
  ct loginctl enable-linger "$USER_NAME"
  wait_until 30 ct test -S "/run/user/$user_uid/systemd/private" ||
    die "user: no user manager for $USER_NAME after enable-linger"
  SYSTEMCTL=(runuser -u "$USER_NAME" -- env "XDG_RUNTIME_DIR=/run/user/$user_uid" systemctl --user)
  wait_until 30 eval '[ "$(sctl is-system-running 2>/dev/null)" = running ]' ||
    die "user: alice's manager is $(sctl is-system-running 2>&1)"
  ok "user: loginctl enable-linger $USER_NAME: her user manager runs (user@$user_uid.service)" \
    "with nobody logged in"
}

# user_backends: the backends, plain user services of alice's.
user_backends() {
  # The backend: busybox httpd as a plain user service, and a socat bridge to it on a Unix
  # socket in alice's runtime directory (%t).
  as_user 'mkdir -p www .config/systemd/user
    printf "%s\n" "$1" >www/e2e.txt
    printf "[Service]\nExecStart=/bin/busybox httpd -f -p %s -h %%h/www\n" "$2" \
      >.config/systemd/user/e2e-web.service
    printf "[Service]\nExecStart=/usr/bin/socat UNIX-LISTEN:%%t/backend.sock,fork,mode=600 TCP:%s\n" "$2" \
      >.config/systemd/user/e2e-bridge.service
    systemctl --user daemon-reload
    systemctl --user start e2e-web.service e2e-bridge.service' "$USER_TOKEN" "$USER_BACKEND"
  wait_until 10 eval '[ "$(ct curl -sS -m 5 "http://$USER_BACKEND/e2e.txt")" = "$USER_TOKEN" ]' ||
    die "user: the backend does not serve on $USER_BACKEND"
  wait_until 10 ct test -S "/run/user/$user_uid/backend.sock" || die "user: no backend.sock"
}

# user_template ADDRESS TARGET: alice enables the instance for ADDRESS with its conf; a client is
# served, the service is active, and the process is socket-proxyd's.
user_template() {
  local address=$1 target=$2 unit instance pid status comm cmdline
  unit=$(user_unit "$address")
  instance=$(user_instance "$address")
  as_user 'mkdir -p .config/socket-proxyd
    printf "TARGET=%s\n" "$2" >".config/socket-proxyd/$1.conf"
    systemctl --user enable --now "$3"' "$instance" "$target" "$unit" >/dev/null 2>&1 ||
    die "user: $address: systemctl --user enable --now $unit failed"
  [ "$(sprop FragmentPath "$unit")" = /usr/lib/systemd/user/socket-proxyd@.socket ] ||
    die "user: $unit is not the package's: $(sprop FragmentPath "$unit")"
  [ "$(sprop SubState "${unit%.socket}.service")" != running ] ||
    die "user: $address: the service runs before any client came"
  user_served "$address" || die "user: $address: not served: $(user_get "$address" 2>&1)"
  [ "$(sprop ActiveState "${unit%.socket}.service")" = active ] ||
    die "user: $address: the service is $(sprop ActiveState "${unit%.socket}.service") (no READY=1?)"
  status=$(sprop StatusText "${unit%.socket}.service")
  [[ $status == "Forwarding to $target: "* ]] || die "user: $address: status '$status'"
  pid=$(sprop MainPID "${unit%.socket}.service")
  [ "$(ct readlink "/proc/$pid/exe")" = /usr/lib/socket-proxyd/deno ] ||
    die "user: $address: the main process is $(ct readlink "/proc/$pid/exe")"
  comm=$(ct cat "/proc/$pid/comm")
  cmdline=$(ct sh -c 'tr "\0" " " <"/proc/$1/cmdline"' sh "$pid" | sed 's/ *$//')
  # prctl(PR_SET_NAME) names the process; its command line stays the one systemd ran.
  [ "$comm" = socket-proxyd ] && [[ $cmdline == "/usr/lib/socket-proxyd/deno run "*" /usr/lib/socket-proxyd/socket-proxyd.js "* ]] ||
    die "user: $address: the process is named '$comm', its command line '$cmdline'"
  ok "user: $address: alice enabled $unit (/usr/lib/systemd/user) with" \
    "~/.config/socket-proxyd/$instance.conf; curl got the backend's reply; the service is" \
    "active (READY=1 reached /run/user/$user_uid/systemd/notify), status \"$status\"; the" \
    "process, the package's deno running its bundle, names itself socket-proxyd (ps -e, top)"
}

# mount_options MOUNTS PATH: the options of the mount PATH is on, from MOUNTS ("MOUNTPOINT OPTIONS"
# lines of a mountinfo): the one with the longest mount point that holds PATH.
mount_options() {
  awk -v path="$2" '{ p = $1 == "/" ? "/" : $1 "/" }
    (path "/" ~ "^" p) && length($1) >= best { best = length($1); options = $2 }
    END { print options }' <<<"$1"
}

# user_verify: `systemd-analyze --user verify` prints nothing for the user templates' instances.
user_verify() {
  local out
  out=$(as_user 'systemd-analyze --user verify --man=no socket-proxyd@8123.socket \
    socket-proxyd@8123.service socket-proxyd@-run-user-1000-spx.sock.socket 2>&1')
  [ -z "$out" ] || die "user: systemd-analyze --user verify printed: $out"
  ok "user: systemd-analyze --user verify prints nothing for socket-proxyd@8123.{socket,service}" \
    "and the path instance's socket"
}

# user_lockdown PID: the running proxy has the lock-down of the user template.
user_lockdown() {
  local pid=$1 manager st ns mounts out level
  manager=$(prop MainPID "user@$user_uid.service")
  st=$(ct cat "/proc/$pid/status")
  [ "$(awk '/^Uid:/ { print $2 }' <<<"$st")" = "$user_uid" ] || die "user: the proxy is not alice"
  grep -q '^CapEff:[[:space:]]*0000000000000000$' <<<"$st" || die "user: the proxy has capabilities"
  grep -q '^CapBnd:[[:space:]]*0000000000000000$' <<<"$st" || die "user: its bounding set is not empty"
  grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$st" || die "user: NoNewPrivs is not set"
  grep -q '^Seccomp:[[:space:]]*2$' <<<"$st" || die "user: no seccomp filter"
  [ "$(ct cat "/proc/$pid/uid_map" | awk '{ print $1, $2, $3 }')" = "$user_uid $user_uid 1" ] ||
    die "user: not in a user namespace of its own: $(ct cat "/proc/$pid/uid_map")"
  for ns in user mnt uts ipc; do
    [ "$(ct readlink "/proc/$pid/ns/$ns")" != "$(ct readlink "/proc/$manager/ns/$ns")" ] ||
      die "user: the proxy shares its manager's $ns namespace"
  done
  mounts=$(ct awk '{ print $5, $6 }' "/proc/$pid/mountinfo")
  for ro in /usr /etc "/home/$USER_NAME/.config" "/run/user/$user_uid" /proc/sys /sys/fs/cgroup; do
    [[ $(mount_options "$mounts" "$ro") == ro,* ]] ||
      die "user: $ro is on a mount the proxy may write: $(mount_options "$mounts" "$ro")"
  done
  [[ $(mount_options "$mounts" /tmp) == rw,* ]] &&
    [ "$(ct readlink "/proc/$pid/ns/mnt")" != "$(ct readlink "/proc/$manager/ns/mnt")" ] ||
    die "user: the proxy has no /tmp of its own"
  out=$(ct ls "/proc/$pid/root/dev" | tr '\n' ' ')
  [[ $out == *" null "* && $out != *" net "* ]] || die "user: /dev is not private: $out"
  ok "user: the proxy runs as alice in a user namespace of its own (uid_map" \
    "\"$user_uid $user_uid 1\"), with its own mount, UTS and IPC namespaces, no capabilities" \
    "(bounding set empty), no new privileges, seccomp on; /usr, /etc, ~/.config," \
    "/run/user/$user_uid, /proc/sys and /sys/fs/cgroup read-only, /tmp and /dev private"

  out=$(as_user 'systemd-analyze --user security --no-pager socket-proxyd@8123.service' 2>&1)
  level=$(sed -n 's/.*Overall exposure level for socket-proxyd@8123.service: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p' <<<"$out")
  [ -n "$level" ] || die "user: no exposure level in: $out"
  grep -qE "user template, \`socket-proxyd@.service\`[ |]*${level% *} ${level#* }" "$repo/systemd/README.md" ||
    die "user: systemd/README.md does not quote the exposure level $level of the user template:"$'\n'"$out"
  ok "user: systemd-analyze --user security: socket-proxyd@8123.service exposure $level, as" \
    "systemd/README.md says"
}

# user_left_out: what the user template leaves out has no effect in a user manager, as its
# comments say: an IP address list and a device policy are not enforced, ProtectProc= and
# ProcSubset= leave /proc as it is.
user_left_out() {
  local run=(systemd-run --user --quiet --wait --pipe -p PrivateUsers=yes) out
  out=$(as_user 'backend=$1; shift; "$@" curl -sS -m 5 "http://$backend/e2e.txt"' "$USER_BACKEND" \
    "${run[@]}" -p IPAddressDeny=any 2>&1)
  [ "$out" = "$USER_TOKEN" ] || die "user: IPAddressDeny=any is enforced in a user manager: $out"
  out=$(as_user '"$@" sh -c "head -c 1 /dev/zero | wc -c"' "${run[@]}" -p DevicePolicy=strict 2>&1)
  [ "$out" = 1 ] || die "user: DevicePolicy=strict is enforced in a user manager: $out"
  out=$(as_user '"$@" sh -c "grep \" /proc \" /proc/self/mountinfo"' "${run[@]}" \
    -p ProtectProc=invisible -p ProcSubset=pid 2>&1)
  [[ -n $out && $out != *hidepid* && $out != *subset* ]] ||
    die "user: ProtectProc=/ProcSubset= changed /proc in a user manager: $out"
  ok "user: what the user template leaves out would do nothing there: under alice's manager a" \
    "service with IPAddressDeny=any still reaches $USER_BACKEND, DevicePolicy=strict still reads" \
    "/dev/zero, ProtectProc=invisible ProcSubset=pid leave /proc unchanged"
}

# user_grants: the probe, run by the wrapper in the program's place in the real unit (a drop-in
# sets SOCKET_PROXYD_PROGRAM), reports what Deno may write and read.
user_grants() {
  local service=socket-proxyd@8123.service c0 lines notify=/run/user/$user_uid/systemd/notify
  local conf=/home/$USER_NAME/.config/socket-proxyd/8123.conf expected
  cp "$repo/tests/systemd/grant_probe.js" "$root$USER_PROBE"
  chmod 0644 "$root$USER_PROBE"
  as_user 'mkdir -p ".config/systemd/user/$1.d"
    printf "[Service]\nEnvironment=SOCKET_PROXYD_PROGRAM=%s\n" "$2" >".config/systemd/user/$1.d/probe.conf"
    systemctl --user daemon-reload
    systemctl --user stop "$1"' "$service" "$USER_PROBE"
  c0=$(shapes_cursor)
  sctl start "$service" >/dev/null 2>&1 || true # The probe exits without READY=1.
  wait_until 10 eval '[ "$(shapes_journal "$c0" _SYSTEMD_USER_UNIT="$service" | grep -c "^grant ")" -ge 9 ]' ||
    die "user: no probe lines: $(shapes_journal "$c0" _SYSTEMD_USER_UNIT="$service")"
  lines=$(shapes_journal "$c0" _SYSTEMD_USER_UNIT="$service" | grep '^grant ' | sort)
  expected=$(printf '%s\n' \
    "grant /: write=prompt read=prompt" \
    "grant /home/$USER_NAME/.config/socket-proxyd: write=prompt read=prompt" \
    "grant /run/systemd/journal/socket: write=granted read=prompt" \
    "grant /run/systemd/journal: write=prompt read=prompt" \
    "grant /run/systemd/notify: write=prompt read=prompt" \
    "grant /run/user/$user_uid/systemd/notify-sibling: write=prompt read=prompt" \
    "grant /run/user/$user_uid/systemd/notify: write=granted read=prompt" \
    "grant /run/user/$user_uid/systemd: write=prompt read=prompt" \
    "grant /run/user/$user_uid: write=prompt read=prompt" \
    "grant /tmp: write=prompt read=prompt" \
    "grant $conf: write=prompt read=granted" | sort)
  [ "$lines" = "$expected" ] || die "user: the wrapper's grants in the unit:"$'\n'"$lines"$'\n'"expected:"$'\n'"$expected"
  as_user 'rm -r ".config/systemd/user/$1.d"; systemctl --user daemon-reload
    systemctl --user reset-failed "$1"' "$service"
  sctl restart socket-proxyd@8123.socket
  user_served 8123 || die "user: 8123 not served after the probe"
  ok "user: in the unit, the wrapper let Deno write $notify (NOTIFY_SOCKET) and" \
    "/run/systemd/journal/socket and nothing else (not /run/systemd/notify, the socket's" \
    "directory or a file beside it, /run/user/$user_uid, /tmp, /), and read only the conf"
}

# user_recovery ADDRESS TARGET: a bad conf, clients until the manager stops the socket, the
# journal's line; the fixed conf and one `systemctl --user restart` of the socket.
user_recovery() {
  local address=$1 target=$2 unit instance conf c0 n expected
  unit=$(user_unit "$address")
  instance=$(user_instance "$address")
  conf=/home/$USER_NAME/.config/socket-proxyd/$instance.conf
  expected="$conf: Invalid target \"127.0.0.1:99999\": port \"99999\" is not a number from 1 to 65535."
  as_user 'printf "TARGET=127.0.0.1:99999\n" >"$1"' "$conf"
  c0=$(shapes_cursor)
  sctl restart "$unit" || die "user: $address: could not restart $unit"
  for n in $(seq 10); do user_get "$address" >/dev/null 2>&1 || true; done
  wait_until 30 eval '[ "$(sprop ActiveState "$unit")" = failed ]' ||
    die "user: $address: $unit is $(sprop ActiveState "$unit") after the failed starts"
  [ "$(sprop Result "$unit")" = service-start-limit-hit ] ||
    die "user: $address: $unit failed with $(sprop Result "$unit")"
  wait_until 10 eval 'shapes_journal "$c0" _SYSTEMD_USER_UNIT="${unit%.socket}.service" | grep -qxF -- "$expected"' ||
    die "user: $address: the journal lacks \"$expected\""
  n=$(shapes_journal "$c0" _SYSTEMD_USER_UNIT="${unit%.socket}.service" | grep -cxF -- "$expected")
  as_user 'printf "TARGET=%s\n" "$2" >"$1"' "$conf" "$target"
  sctl restart "$unit" || die "user: $address: systemctl --user restart $unit failed after the fix"
  user_served "$address" || die "user: $address: not served after the fix and one restart"
  ok "user: $address with TARGET=127.0.0.1:99999: after $n failed starts alice's manager stopped" \
    "$unit (service-start-limit-hit), the journal saying \"$expected\"; conf fixed, one" \
    "\`systemctl --user restart $unit\` served again"
}

# user_inetd: an inetd-style user unit pair: the -v line reaches the journal through its socket.
user_inetd() {
  local c0 reply direct
  as_user 'printf "[Socket]\nListenStream=127.0.0.1:8125\nAccept=yes\n" >.config/systemd/user/e2e-inetd.socket
    printf "[Service]\nStandardInput=socket\nExecStart=/usr/bin/socket-proxyd -v %s\n" "$1" \
      >.config/systemd/user/e2e-inetd@.service
    systemctl --user daemon-reload
    systemctl --user start e2e-inetd.socket' "$USER_BACKEND"
  c0=$(shapes_cursor)
  reply=$(ct timeout 20 sh -c 'printf "GET /e2e.txt HTTP/1.0\r\n\r\n" | socat -t 10 - TCP:127.0.0.1:8125' | tr -d '\r')
  direct=$(ct timeout 20 sh -c 'printf "GET /e2e.txt HTTP/1.0\r\n\r\n" | socat -t 10 - "TCP:$1"' sh "$USER_BACKEND" | tr -d '\r')
  [ "$(sed '/^Date: /d' <<<"$reply")" = "$(sed '/^Date: /d' <<<"$direct")" ] && [[ $reply == *"$USER_TOKEN" ]] ||
    die "user: inetd: the client got:"$'\n'"$reply"$'\n'"instead of:"$'\n'"$direct"
  wait_until 10 eval 'shapes_journal "$c0" _UID="$user_uid" _TRANSPORT=journal SYSLOG_IDENTIFIER=socket-proxyd |
    grep -q -- "-> $USER_BACKEND: "' ||
    die "user: inetd: no -v line from the journal's socket: $(shapes_journal "$c0" _UID="$user_uid")"
  ok "user: an inetd-style user unit (Accept=yes, StandardInput=socket): the client got exactly" \
    "the backend's bytes, and the -v line reached the journal through /run/systemd/journal/socket" \
    "(_TRANSPORT=journal, _UID=$user_uid): \"$(shapes_journal "$c0" _UID="$user_uid" \
      _TRANSPORT=journal SYSLOG_IDENTIFIER=socket-proxyd | grep -m 1 -- "-> $USER_BACKEND: ")\""
  as_user 'systemctl --user stop e2e-inetd.socket'
}

# user_url_unit: the README's unit for running from a URL, as alice's unit, the bundle served by
# busybox httpd.
user_url_unit() {
  local block
  block=$(readme_block "$repo/README.md" url-unit)
  [[ $block == *'--allow-write=${NOTIFY_SOCKET},/run/systemd/journal/socket'* ]] ||
    die "user: README.md's url-unit block does not grant \${NOTIFY_SOCKET}: $block"
  block=${block//\/usr\/local\/bin\/deno/\/usr\/lib\/socket-proxyd\/deno}
  block=${block//https:\/\/…\/socket-proxyd.js/http:\/\/127.0.0.1:18099\/socket-proxyd.js}
  block=${block//TARGET/$USER_BACKEND}
  as_user 'mkdir -p release; cp /usr/lib/socket-proxyd/socket-proxyd.js release/
    printf "[Service]\nExecStart=/bin/busybox httpd -f -p 127.0.0.1:18099 -h %%h/release\n" \
      >.config/systemd/user/e2e-release.service
    printf "[Socket]\nListenStream=127.0.0.1:8126\n" >.config/systemd/user/socket-proxyd-url.socket
    printf "%s\n" "$1" >.config/systemd/user/socket-proxyd-url.service
    systemctl --user daemon-reload
    systemctl --user start e2e-release.service socket-proxyd-url.socket' "$block"
  wait_until 10 ct curl -sSf -o /dev/null http://127.0.0.1:18099/socket-proxyd.js ||
    die "user: the bundle is not served on 127.0.0.1:18099"
  user_served 8126 || die "user: the README's URL unit does not serve: $(user_get 8126 2>&1)"
  [ "$(sprop ActiveState socket-proxyd-url.service)" = active ] ||
    die "user: the README's URL unit is $(sprop ActiveState socket-proxyd-url.service) (no READY=1?)"
  ok "user: the README's unit for running from a URL, as alice's unit, with the bundle from" \
    "http://127.0.0.1:18099/: serves, and is active (systemd put its notification socket's path" \
    "in --allow-write=\${NOTIFY_SOCKET})"
  as_user 'systemctl --user stop socket-proxyd-url.socket socket-proxyd-url.service e2e-release.service'
}

# user_podman_image: a web server image made from busybox, under the name recipe 6 runs.
user_podman_image() {
  local image
  image=$(sed -n 's/^ExecStart=.* \([^ ]*\)$/\1/p' "$repo/systemd/recipes/6-rootless-podman/web-container.service")
  [ -n "$image" ] || die "podman: no image in web-container.service's ExecStart="
  # (httpd under a shell that ends on SIGTERM: as PID 1, httpd itself would ignore it.)
  as_user 'rm -rf image; mkdir -p image/bin image/www
    cp /bin/busybox image/bin/busybox
    printf "%s\n" "$1" >image/www/e2e.txt
    printf "<h1>e2e</h1>\n" >image/www/index.html
    printf "%s\n" "$3" >image/bin/serve
    tar -C image -cf image.tar .
    podman import --change "CMD [\"/bin/busybox\", \"sh\", \"/bin/serve\"]" image.tar localhost/e2e-web >/dev/null
    podman tag localhost/e2e-web "$2"' "$USER_TOKEN" "$image" \
    "trap 'exit 0' TERM; /bin/busybox httpd -f -p 80 -h /www & wait" ||
    die "podman: could not make the image"
  podman_image=$image
}

# podman_client: one request through recipe 6's socket.
podman_client() {
  user_served 8006
}

podman_stopped() {
  [ "$(sprop ActiveState web-proxy.service)" = inactive ] &&
    [ "$(sprop ActiveState web-container.service)" = inactive ] &&
    [ -z "$(as_user 'podman ps -q')" ]
}

user_podman() {
  local block proxy container t0 out
  # What a host has and this container lacks: /dev/net/tun open to users (udev's 0666), for
  # slirp4netns; cgroup controllers (the test's cgroup v2 tree has none delegated), so no pids
  # limit; the kernel keyring (systemd-nspawn's system call filter refuses keyctl()), so no
  # keyring of the container's own.
  ct chmod 0666 /dev/net/tun
  as_user 'mkdir -p .config/containers
    printf "[containers]\npids_limit = 0\nkeyring = false\n" >.config/containers/containers.conf'
  user_podman_image
  block=$(readme_block "$repo/systemd/recipes/README.md" recipe-6)
  [ -n "$block" ] || die "podman: systemd/recipes/README.md has no recipe-6 block"
  as_user "$block" >"$work/podman-install.log" 2>&1 ||
    die "podman: the recipe's install steps failed: $(cat "$work/podman-install.log")"
  out=$(as_user 'cd .config/systemd/user
    systemd-analyze --user verify --man=no web-proxy.socket web-proxy.service web-container.service 2>&1')
  [ -z "$out" ] || die "podman: systemd-analyze --user verify printed: $out"
  [ "$(sprop SubState web-proxy.socket)" = listening ] && podman_stopped ||
    die "podman: before the first client, the socket should listen and nothing run"
  t0=$(date +%s%N)
  podman_client || die "podman: not served: $(user_get 8006 2>&1)"
  proxy=$(sprop MainPID web-proxy.service)
  container=$(as_user 'podman ps --format "{{.Names}} {{.Ports}}"')
  [ "$(sprop ActiveState web-proxy.service)" = active ] &&
    [ "$(sprop ActiveState web-container.service)" = active ] &&
    [ "$container" = "web-container 127.0.0.1:18006->80/tcp" ] ||
    die "podman: proxy $(sprop ActiveState web-proxy.service), container unit" \
      "$(sprop ActiveState web-container.service), podman ps: $container"
  ok "podman: recipe 6 installed by alice with the README's commands (systemd-analyze --user" \
    "verify prints nothing); the first client started" \
    "the proxy and the container ($podman_image, a busybox httpd made here) and got its" \
    "reply in $((($(date +%s%N) - t0) / 1000000)) ms; podman ps: \"$container\""

  check_crash_recovery podman web-proxy.service web-container.service podman_client

  as_user 'mkdir -p .config/systemd/user/web-proxy.service.d
    sed -n "s/^ExecStart=\(.*\)--exit-idle-time=5min\(.*\)$/[Service]\nExecStart=\nExecStart=\1--exit-idle-time=3s\2/p" \
      .config/systemd/user/web-proxy.service >.config/systemd/user/web-proxy.service.d/e2e.conf
    grep -q -- --exit-idle-time=3s .config/systemd/user/web-proxy.service.d/e2e.conf
    systemctl --user daemon-reload
    systemctl --user stop web-proxy.service'
  wait_until 30 podman_stopped || die "podman: not stopped after systemctl --user stop"
  podman_client || die "podman: not served with --exit-idle-time=3s"
  t0=$SECONDS
  wait_until 40 podman_stopped ||
    die "podman: after the idle time: proxy $(sprop ActiveState web-proxy.service)," \
      "container $(sprop ActiveState web-container.service), podman ps: $(as_user 'podman ps -a')"
  [ "$(sprop Result web-proxy.service)" = success ] || die "podman: the proxy's idle exit failed"
  out=$(as_user 'podman ps -a -q')
  [ -z "$out" ] || die "podman: a container is left: $out"
  podman_client || die "podman: the client after the idle stop was not served"
  ok "podman: with --exit-idle-time=3s the proxy exited 0, and the container's unit" \
    "(StopWhenUnneeded=yes) stopped and removed the container ($((SECONDS - t0))s after the" \
    "client); the next client started both again and was served"

  check_fix_recovery podman web-proxy.socket web-container.service \
    "runuser -u $USER_NAME -- env XDG_RUNTIME_DIR=/run/user/$user_uid podman untag localhost/e2e-web $podman_image" \
    "runuser -u $USER_NAME -- env XDG_RUNTIME_DIR=/run/user/$user_uid podman tag localhost/e2e-web $podman_image" \
    podman_client
}

part_user() {
  local t0=$SECONDS diag_before=$DIAG_UNITS path
  DIAG_UNITS="user@*.service"
  boot user
  install_package "$DEB"
  ok "user: apt install ./$(basename "$DEB")"
  user_manager
  user_backends
  path=/run/user/$user_uid/spx.sock
  user_template 8123 "$USER_BACKEND"
  user_verify
  user_lockdown "$(sprop MainPID socket-proxyd@8123.service)"
  user_left_out
  user_grants
  user_recovery 8123 "$USER_BACKEND"
  user_template "$path" "/run/user/$user_uid/backend.sock"
  user_recovery "$path" "/run/user/$user_uid/backend.sock"
  user_inetd
  user_url_unit
  user_podman
  SYSTEMCTL=(systemctl)
  stop_container
  DIAG_UNITS=$diag_before
  echo "== user: $((SECONDS - t0))s"
}
