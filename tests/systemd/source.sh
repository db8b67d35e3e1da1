# Part "source" of tests/systemd/run.sh: the from-source install of systemd/README.md, once. The
# install block runs in a copy of this checkout inside the container, with the one-file build
# made on the host (`deno task bundle` needs the npm registry, which the container cannot reach)
# and the host's Deno as /usr/local/bin/deno; then the unix-path scenario's units, as they are in
# systemd/, serve a client.

part_source() {
  local deno_bin block page
  deno_bin=$(readlink -f "$(deno eval 'console.log(Deno.execPath())')")
  [ -f "$repo/dist/socket-proxyd.js" ] || die "no dist/socket-proxyd.js: run deno task bundle"
  boot source
  mkdir -p "$root/usr/src/socket-proxyd/dist"
  cp -r "$repo/systemd" "$root/usr/src/socket-proxyd/"
  cp "$repo/dist/socket-proxyd.js" "$root/usr/src/socket-proxyd/dist/"
  install -m 0755 "$deno_bin" "$root/usr/local/bin/deno"
  block=$(readme_block "$readme" install-source)
  [ -n "$block" ] || die "systemd/README.md has no install-source block"
  ct timeout 60 sh -euxc "cd /usr/src/socket-proxyd; $block" >"$work/install.log" 2>&1 ||
    die "the README's source install failed: $(cat "$work/install.log")"
  block=$(readme_block "$readme" install-unix-path)
  block=${block/cd \/usr\/share\/doc\/socket-proxyd\/examples\/unix-path/cd systemd\/unix-path}
  ct timeout 120 sh -euxc "cd /usr/src/socket-proxyd; $block" >>"$work/install.log" 2>&1 ||
    die "source: the unix-path install steps failed: $(cat "$work/install.log")"
  page=$(ct timeout 20 curl -sS --fail -m 15 http://localhost:80/) ||
    die "source: curl http://localhost:80/ failed"
  grep -q 'Welcome to nginx!' <<<"$page" || die "source: curl got: $page"
  [ "$(ct readlink "/proc/$(prop MainPID proxy-to-nginx.service)/exe")" = /usr/local/bin/deno ] ||
    die "source: the proxy is not the installed deno"
  ok "source: installed from a checkout with the README's commands (the bundle, the wrapper," \
    "the man page) and the units of systemd/unix-path as they are: curl gets nginx's page"
  stop_container
}
