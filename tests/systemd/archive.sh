# Part "archive" of tests/systemd/run.sh: the release archive (deno task archive) on a booted
# systemd, in containers with neither Deno nor Node and without the package. For each scenario of
# systemd-socket-proxyd(8): the archive unpacked into /opt with the README's command, the
# scenario's units installed with systemd/README.md's commands from the archive's examples, their
# ExecStart= pointed into /opt; then the checks of the scenarios part (static, activation,
# lock-down, namespaces, restarts under load, graceful drain, idle exit). Also: the wrapper run
# through a symlink in /usr/local/bin, and the man page through one in /usr/local/share/man.

# install_archive NAME: unpacks $ARCHIVE into /opt, installs scenario NAME from it and points its
# service's ExecStart= at the archive's wrapper; sets $top to the unpacked directory.
install_archive() {
  local name=$1 file block out
  file=$(basename "$ARCHIVE")
  top=/opt/${file%.tar.gz}
  ! ct sh -c 'command -v deno || command -v node || command -v npm || dpkg -s socket-proxyd' \
    >/dev/null 2>&1 || die "archive: the container has Deno, Node or the package"
  cp "$ARCHIVE" "$(dirname "$ARCHIVE")/SHA256SUMS" "$root/var/tmp/"
  block=$(readme_block "$repo/README.md" unpack-archive)
  [[ $block == *"tar -xzf $file -C /opt"* ]] || die "README.md's unpack-archive block does not unpack $file"
  ct timeout 120 sh -euxc "cd /var/tmp; $block" >"$work/install.log" 2>&1 ||
    die "archive: the README's unpack steps failed: $(cat "$work/install.log")"
  out=$(ct timeout 60 /usr/local/bin/socket-proxyd --version) ||
    die "archive: /usr/local/bin/socket-proxyd (a symlink into $top) failed"
  [[ $out == "socket-proxyd $DEB_VERSION (Deno "* ]] || die "archive: --version printed: $out"
  ok "archive: unpacked into $top, in a container without Deno, Node or the package;" \
    "the wrapper runs through a symlink: $out"
  # Every example directory the READMEs' install steps cd into, and the README the units name.
  local dirs dir
  dirs=$(grep -ho 'cd /usr/share/doc/socket-proxyd/examples/[^ ]*' "$repo/systemd/README.md" \
    "$repo/systemd/recipes/README.md" | sed 's|.*/examples/||' | sort -u)
  [ "$(wc -l <<<"$dirs")" -ge 8 ] || die "archive: only these install steps cd into examples: $dirs"
  for dir in $dirs README.md; do
    ct test -e "$top/share/doc/socket-proxyd/examples/$dir" ||
      die "archive: no share/doc/socket-proxyd/examples/$dir"
  done
  ok "archive: share/doc/socket-proxyd/examples/ has README.md and every directory the READMEs'" \
    "install steps cd into: $(tr '\n' ' ' <<<"$dirs")"

  block=$(readme_block "$readme" "install-$name")
  block=${block/cd \/usr\/share\/doc\/socket-proxyd\/examples\/$name/cd $top/share/doc/socket-proxyd/examples/$name}
  [[ $block == "cd $top/"* ]] || die "archive: no cd into the examples in install-$name"
  ct timeout 120 sh -euxc "$block" >"$work/install.log" 2>&1 ||
    die "archive: $name: the README's install steps failed: $(cat "$work/install.log")"
  ct sed -i "s|^ExecStart=/usr/local/bin/socket-proxyd |ExecStart=$top/bin/socket-proxyd |" \
    /etc/systemd/system/proxy-to-nginx.service
  ct grep -q "^ExecStart=$top/bin/socket-proxyd " /etc/systemd/system/proxy-to-nginx.service ||
    die "archive: $name: no ExecStart=/usr/local/bin/socket-proxyd to point into $top"
  ct systemctl daemon-reload
  serve_test_files
  ok "archive: $name: installed from the archive's examples with the README's commands," \
    "ExecStart=$top/bin/socket-proxyd"
}

part_archive() {
  local top
  ARCHIVE=${SOCKET_PROXYD_ARCHIVE:-}
  if [ -z "$ARCHIVE" ]; then
    ARCHIVE=$repo/dist/$(awk '$2 ~ /^socket-proxyd-.*-linux-x86_64\.tar\.gz$/ { print $2 }' \
      "$repo/dist/SHA256SUMS")
  fi
  [ -f "$ARCHIVE" ] || die "no archive to test at '$ARCHIVE': run deno task archive first"
  (cd "$(dirname "$ARCHIVE")" && grep -F " $(basename "$ARCHIVE")" SHA256SUMS | sha256sum -c --quiet) ||
    die "$ARCHIVE does not match its SHA256SUMS"
  echo "== archive: $ARCHIVE"

  echo "== archive, unix-path: port 80 -> nginx's Unix socket"
  boot archive-unix-path
  install_archive unix-path
  check_manpage
  check_static unix-path
  check_activation unix-path /run/nginx/socket "$top/lib/socket-proxyd/deno"
  check_lockdown unix-path
  check_unix_path_isolation
  check_restarts unix-path
  check_drain unix-path
  check_idle unix-path
  stop_container

  echo "== archive, namespace: port 80 -> nginx on 127.0.0.1:8080 in its private network namespace"
  boot archive-namespace
  install_archive namespace
  check_static namespace
  check_activation namespace 127.0.0.1:8080 "$top/lib/socket-proxyd/deno"
  check_lockdown namespace
  check_namespace_isolation
  check_restarts namespace
  check_drain namespace
  check_idle namespace
  stop_container
}
