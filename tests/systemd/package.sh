# Part "package" of tests/systemd/run.sh: the package's life on a server.
#   - installed, with the unix-path scenario and a ready-to-enable template instance
#     (socket-proxyd@8081.socket, forwarding to port 80) serving, and a lingering user's instance
#     of the user templates (socket-proxyd@8124.socket, systemctl --user);
#   - upgraded in place to the next version (the package with its version raised) while four
#     clients keep connecting through both sockets: no request fails, no
#     connection is refused; the running proxies are left as they are, on the old files, until
#     their next start, which runs the new ones;
#   - removed, then purged: both instances are stopped (the user's by her manager), no file of
#     the package is left, no user was ever created, its units are gone; the operator's own units
#     (copied from the examples) and conf (/etc/socket-proxyd/8081.conf) stay, theirs to remove,
#     as does the user's conf in her home.

# The next version of $DEB: the same package with its version one patch higher, in its control
# file and in the program (so that --version tells them apart). Same files, same maintainer
# scripts: what an upgrade to the next release runs. (Repacked rather than rebuilt: compressing
# Deno again would cost minutes.)
build_next_package() {
  local version next tree program
  version=$(dpkg-deb -f "$DEB" Version)
  next=${version%.*}.$((${version##*.} + 1))
  tree=$(mktemp -d /var/tmp/socket-proxyd-next.XXXXXX)
  scratch+=("$tree")
  dpkg-deb -R "$DEB" "$tree/pkg"
  sed -i "s/^Version: $version\$/Version: $next/" "$tree/pkg/DEBIAN/control"
  program=usr/lib/socket-proxyd/socket-proxyd.js
  # The program is one JSON string in the file (packaging/bundle.ts): its line
  # `var VERSION = "0.1.0";` is there as `\nvar VERSION = \"0.1.0\";\n`.
  [ "$(grep -o -F "\\nvar VERSION = \\\"$version\\\";\\n" "$tree/pkg/$program" | wc -l)" = 1 ] ||
    die "no VERSION line in the packaged program"
  sed -i "s/\\\\nvar VERSION = \\\\\"${version//./\\.}\\\\\";/\\\\nvar VERSION = \\\\\"$next\\\\\";/" \
    "$tree/pkg/$program"
  (cd "$tree/pkg" && sed -i "s|^[0-9a-f]*  $program\$|$(md5sum "$program")|" DEBIAN/md5sums)
  DEB_NEXT=$tree/socket-proxyd_${next}_amd64.deb
  dpkg-deb --root-owner-group -Zgzip -z1 -b "$tree/pkg" "$DEB_NEXT" >/dev/null ||
    die "could not pack the next version"
}

# left_behind PATHS...: those of PATHS that exist, leaving out directories that a package
# still installed owns too (/usr/bin, /usr/share/man/man8, ...) or that are symlinks; sorted.
left_behind() {
  ct sh -c 'for p in "$@"; do
      [ "$p" != /. ] || continue
      [ -e "$p" ] || [ -L "$p" ] || continue
      # A symlinked directory is the system'"'"'s layout (merged /usr: /lib -> usr/lib).
      if [ -d "$p" ] && { [ -L "$p" ] || dpkg-query -S "$p" >/dev/null 2>&1; }; then continue; fi
      echo "$p"
    done | sort' sh "$@"
}

check_upgrade() {
  local pid template before after exe version
  pid=$(prop MainPID proxy-to-nginx.service)
  template=$(prop MainPID socket-proxyd@8081.service)
  [ "$pid" != 0 ] && [ "$template" != 0 ] || die "the proxies are not running before the upgrade"
  version=$(ct socket-proxyd --version)
  loops 12 2 http://localhost:80/e2e.txt http://localhost:8081/e2e.txt
  sleep 2
  install_package "$DEB_NEXT"
  loops_done
  [ "$served" -ge 20 ] || die "only $served requests were answered during the upgrade"
  for unit in proxy-to-nginx.socket socket-proxyd@8081.socket; do
    [ "$(prop NRefused "$unit")" = 0 ] || die "$unit refused connections during the upgrade"
  done
  [ "$(ct dpkg-query -W -f '${Version}' socket-proxyd)" = "$(dpkg-deb -f "$DEB_NEXT" Version)" ] ||
    die "the package was not upgraded"
  [ "$(prop MainPID proxy-to-nginx.service)" = "$pid" ] &&
    [ "$(prop MainPID socket-proxyd@8081.service)" = "$template" ] ||
    die "the upgrade restarted a running proxy"
  for p in "$pid" "$template"; do
    exe=$(ct readlink "/proc/$p/exe")
    [ "$exe" = "/usr/lib/socket-proxyd/deno (deleted)" ] ||
      die "proxy $p does not run the replaced files: $exe"
  done
  ok "upgraded $DEB_VERSION -> $(dpkg-deb -f "$DEB_NEXT" Version) while 4 clients kept" \
    "connecting through both sockets: $served requests, none failed or refused; both running" \
    "proxies kept going, untouched, on the old files (pids $pid, $template)"

  after=$(ct socket-proxyd --version)
  [ "$after" != "$version" ] || die "socket-proxyd --version still says $after"
  ct timeout 60 systemctl restart proxy-to-nginx.service socket-proxyd@8081.service
  [ "$(fetch e2e.txt)" = "$token" ] || die "no answer after the restart"
  before=$pid
  pid=$(prop MainPID proxy-to-nginx.service)
  [ "$pid" != "$before" ] && [ "$(ct readlink "/proc/$pid/exe")" = /usr/lib/socket-proxyd/deno ] ||
    die "the restarted proxy does not run the new files"
  ok "the next start runs the new version (\"$version\" -> \"$after\")"
}

check_remove_purge() {
  local files users_before=$1 units_before=$2 left state
  mapfile -t files < <(ct dpkg-query -L socket-proxyd)
  [ "${#files[@]}" -gt 10 ] || die "dpkg-query -L lists only ${#files[@]} paths"
  # The operator's units are the operator's: stop them first, as a removal should.
  ct systemctl disable --now proxy-to-nginx.socket proxy-to-nginx.service >/dev/null 2>&1
  ct timeout 120 env DEBIAN_FRONTEND=noninteractive apt-get remove -y socket-proxyd \
    >"$work/remove.log" 2>&1 || die "apt-get remove failed: $(cat "$work/remove.log")"
  [ "$(prop ActiveState socket-proxyd@8081.socket)" != active ] ||
    die "the template instance still listens after the removal"
  [ "$(sprop ActiveState socket-proxyd@8124.socket)" != active ] &&
    [ "$(sprop LoadState socket-proxyd@8124.socket)" = not-found ] ||
    die "alice's instance is $(sprop ActiveState socket-proxyd@8124.socket)," \
      "$(sprop LoadState socket-proxyd@8124.socket) after the removal"
  ! ct curl -sS -m 5 -o /dev/null http://localhost:8124/ 2>/dev/null ||
    die "port 8124 still answers after the removal"
  ct test -f "/home/$USER_NAME/.config/socket-proxyd/8124.conf" ||
    die "the removal deleted alice's conf"
  # (The conffile's directory counts as the package's until the purge.)
  left=$(left_behind "${files[@]}" | grep -vx /etc/socket-proxyd || true)
  [ "$left" = /etc/socket-proxyd/README ] || die "apt-get remove left behind: $left"
  ok "apt-get remove: the program, the runtime, the units and the docs are gone (only the" \
    "conffile /etc/socket-proxyd/README stays until purge); the running instances were stopped," \
    "the system's and alice's (her manager forgot the unit; her conf stays, hers to delete)"

  ct timeout 120 env DEBIAN_FRONTEND=noninteractive apt-get purge -y socket-proxyd \
    >"$work/purge.log" 2>&1 || die "apt-get purge failed: $(cat "$work/purge.log")"
  # The operator's own configuration is the operator's to remove: purge deletes the package's
  # conffile, not a file the operator wrote (nor, so, its directory).
  left=$(left_behind "${files[@]}" /var/cache/socket-proxyd /var/cache/private/socket-proxyd)
  [ "$left" = /etc/socket-proxyd ] || die "apt-get purge left behind: $left"
  [ "$(ct ls -A /etc/socket-proxyd)" = 8081.conf ] ||
    die "after the purge /etc/socket-proxyd holds: $(ct ls -A /etc/socket-proxyd)"
  ct rm -r /etc/socket-proxyd
  [ -z "$(ct find /etc/systemd/system -name 'socket-proxyd@*')" ] ||
    die "purge left enablement links: $(ct find /etc/systemd/system -name 'socket-proxyd@*')"
  state=$(ct dpkg-query -W -f '${db:Status-Status}' socket-proxyd 2>/dev/null || true)
  [ -z "$state" ] || [ "$state" = not-installed ] || die "dpkg still has the package: $state"
  [ "$(ct getent passwd | cut -d: -f1 | sort)" = "$users_before" ] ||
    die "the users changed: $(diff <(echo "$users_before") <(ct getent passwd | cut -d: -f1 | sort))"
  local units_after
  units_after=$(ct systemctl list-unit-files --no-legend --no-pager | awk '{ print $1 }' | sort)
  [ "$(comm -13 <(echo "$units_before") <(echo "$units_after"))" = \
    "$(printf 'proxy-to-nginx.service\nproxy-to-nginx.socket')" ] ||
    die "units left besides the operator's: $(comm -13 <(echo "$units_before") <(echo "$units_after"))"
  ok "apt-get purge: none of the package's ${#files[@]} paths is left, nor a cache, nor an" \
    "enablement link; the operator's /etc/socket-proxyd/8081.conf stays (removed by hand); no user was created; of the units, only the operator's proxy-to-nginx.*" \
    "(copied from the examples) remain, for the operator to remove"
}

part_package() {
  local users_before units_before
  build_next_package
  boot package
  user_manager
  users_before=$(ct getent passwd | cut -d: -f1 | sort)
  units_before=$(ct systemctl list-unit-files --no-legend --no-pager | awk '{ print $1 }' | sort)
  install_package "$DEB"
  install_scenario unix-path
  # A ready-to-enable template instance, as README.Debian says: port 8081 to port 80.
  ct sh -euc 'printf "TARGET=127.0.0.1:80\nOPTIONS=--exit-idle-time=5min\n" >/etc/socket-proxyd/8081.conf
    systemctl enable --now socket-proxyd@8081.socket' >/dev/null 2>&1 ||
    die "could not enable socket-proxyd@8081.socket"
  [ "$(ct curl -sS --fail -m 15 http://localhost:8081/e2e.txt)" = "$token" ] ||
    die "no answer through socket-proxyd@8081.socket"
  ok "socket-proxyd@8081.socket, enabled with a one-line /etc/socket-proxyd/8081.conf, forwards"
  # And a user's instance, from the user units.
  as_user 'mkdir -p .config/socket-proxyd
    printf "TARGET=127.0.0.1:80\n" >.config/socket-proxyd/8124.conf
    systemctl --user enable --now socket-proxyd@8124.socket' >/dev/null 2>&1 ||
    die "alice could not enable socket-proxyd@8124.socket"
  [ "$(ct curl -sS --fail -m 15 http://localhost:8124/e2e.txt)" = "$token" ] ||
    die "no answer through alice's socket-proxyd@8124.socket"
  ok "alice's socket-proxyd@8124.socket (systemctl --user), with ~/.config/socket-proxyd/8124.conf," \
    "forwards"
  check_upgrade
  check_remove_purge "$users_before" "$units_before"
  SYSTEMCTL=(systemctl)
  stop_container
}
