#!/usr/bin/env bash
# Builds dist/socket-proxyd_<version>_<arch>.deb, dist/socket-proxyd.js and dist/SHA256SUMS from
# this checkout: the same checkout gives the same bytes.
#
#   bash packaging/deb/build.sh [--arch=amd64[,arm64]] [--reproducible] [--no-lintian]
#   bash packaging/deb/build.sh --check-pin
#
# Steps: fetch the pinned Deno from the npm registry (npm pack; npm's cache makes later builds
# offline) and check its sha512 against packaging/deb/deno.pin (packaging/deno.sh, shared with
# the release archive's build); bundle the program with it (twice, must be identical) to
# dist/socket-proxyd.js; per architecture, stage a Debian source tree in a
# temporary directory (packaging/deb/debian/ plus the files), build it with dpkg-buildpackage,
# smoke-test it from `dpkg-deb -x`, run lintian; write dist/SHA256SUMS. dist/ then holds exactly
# this run's files.
#
#   --arch=LIST      amd64 (default; also DEB_ARCH=...), arm64, or both: amd64,arm64. arm64 needs
#                    `dpkg --add-architecture arm64` and libc6:arm64 libgcc-s1:arm64
#                    binutils-aarch64-linux-gnu (dh_makeshlibs, dpkg-shlibdeps), and
#                    qemu-user-static for its smoke test (skipped without)
#   --reproducible   build each package twice (another directory, another umask) and fail
#                    unless the two are identical
#   --no-lintian     skip lintian
#   --check-pin      compare deno.pin with what the registry publishes now, and exit
#
# Needs (Debian 12): dpkg-dev debhelper lintian, and nodejs/npm; systemd (optional) for the
# forwarding smoke test. SOURCE_DATE_EPOCH defaults to the last commit's time.
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

arches=${DEB_ARCH:-amd64}
twice=false
lintian=true
check_pin=false
for arg in "$@"; do
  case $arg in
    --arch=*) arches=${arg#--arch=} ;;
    --reproducible) twice=true ;;
    --no-lintian) lintian=false ;;
    --check-pin) check_pin=true ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$here/build.sh" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) echo "build.sh: unknown argument $arg (try --help)" >&2 && exit 2 ;;
  esac
done
IFS=, read -r -a arches <<<"$arches"

die() { echo "build.sh: $*" >&2 && exit 1; }
say() { echo "== $*" >&2; }

export LC_ALL=C.UTF-8 TZ=UTC NO_COLOR=1 DENO_NO_UPDATE_CHECK=1
umask 022

# --- the pinned Deno ---------------------------------------------------------------------------
# shellcheck source=packaging/deno.sh
source packaging/deno.sh
# shellcheck source=packaging/layout.sh
source packaging/layout.sh
read_deno_pin

if $check_pin; then
  status=0
  for a in "${!npm_name[@]}"; do
    spec=${npm_name[$a]}@${npm_version[$a]}
    now=$(npm view "$spec" dist.integrity)
    if [[ $now == "${npm_integrity[$a]}" ]]; then
      echo "ok: $spec $now"
    else
      echo "MISMATCH: $spec pinned ${npm_integrity[$a]}, registry now ${now:-(nothing)}"
      status=1
    fi
  done
  echo "(newest @deno/linux-x64-glibc on the registry: $(npm view @deno/linux-x64-glibc version))"
  exit "$status"
fi

host_arch=$(dpkg --print-architecture)
for a in "${arches[@]}" "$host_arch"; do
  [[ -n ${npm_name[$a]:-} ]] || die "no Deno pinned for architecture '$a' in deno.pin"
done
check_pin_is_ci

work=$(mktemp -d "${TMPDIR:-/tmp}/socket-proxyd-deb.XXXXXX")
trap '[[ -n ${KEEP_WORK:-} ]] && echo "kept $work" >&2 || rm -rf "$work"' EXIT
chmod 755 "$work" # the smoke tests run as nobody when we are root

host_deno=$(fetch_deno "$host_arch" "$work")/deno
[[ $("$host_deno" --version | head -n 1) == "deno ${npm_version[$host_arch]} "* ]] ||
  die "the pinned Deno does not say it is ${npm_version[$host_arch]}"

# --- the version ------------------------------------------------------------------------------
version=$("$host_deno" eval 'console.log(JSON.parse(Deno.readTextFileSync("deno.json")).version)')
changelog_version=$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version)
[[ $changelog_version == "$version" ]] ||
  die "deno.json has version $version, packaging/deb/debian/changelog $changelog_version: add an entry, e.g.
  dch --changelog packaging/deb/debian/changelog -v $version -D unstable 'New version.'"

set_source_date_epoch

# --- the bundle -------------------------------------------------------------------------------
# As `deno task bundle` does, but into $work, so that nothing writing dist/ meanwhile changes
# what is packaged; copied to dist/ at the end, with the packages.
bundle=$(make_bundle "$host_deno" "$version" "$work")

# --- the package ------------------------------------------------------------------------------
# stage DIR ARCH: lays out the Debian source tree DIR/socket-proxyd-VERSION, prints its path.
stage() {
  local src=$1/socket-proxyd-$version f
  mkdir -p "$src/examples" "$src/etc"
  cp -r "$here/debian" "$src/debian"
  # The template units, system and user, under the names dh_installsystemd and
  # dh_installsystemduser look for (they install them in /lib/systemd/system and
  # /usr/lib/systemd/user).
  cp systemd/units/system/socket-proxyd@.socket systemd/units/system/socket-proxyd@.service \
    "$src/debian/"
  cp systemd/units/user/socket-proxyd@.socket "$src/debian/socket-proxyd@.user.socket"
  cp systemd/units/user/socket-proxyd@.service "$src/debian/socket-proxyd@.user.service"
  cp "$bundle" systemd/socket-proxyd.8 "$src/"
  # The wrapper is systemd/socket-proxyd, with the package's paths as its defaults.
  package_wrapper >"$src/socket-proxyd"
  cp -r "$(fetch_deno "$2" "$work")" "$src/deno"
  cp -r "$here/etc/socket-proxyd" "$src/etc/"
  copy_examples "$src/examples"
  # The examples run the packaged program.
  grep -rlF 'ExecStart=/usr/local/bin/socket-proxyd' "$src/examples" | grep -q . ||
    die "no ExecStart=/usr/local/bin/socket-proxyd in systemd/: update build.sh"
  grep -rlF 'ExecStart=/usr/local/bin/socket-proxyd' "$src/examples" | while read -r f; do
    sed -i 's|ExecStart=/usr/local/bin/socket-proxyd|ExecStart=/usr/bin/socket-proxyd|g' "$f"
  done
  echo "$src"
}

# build DIR ARCH: builds the .deb in DIR, prints its path.
build() {
  local src deb=$1/socket-proxyd_${version}_$2.deb
  src=$(stage "$1" "$2")
  # -b: binary only; -us -uc: no signatures.
  (cd "$src" && dpkg-buildpackage -b -us -uc --host-arch="$2" >"$1/build.log" 2>&1) || {
    cat "$1/build.log" >&2
    die "dpkg-buildpackage failed"
  }
  [[ -f $deb ]] || die "dpkg-buildpackage made no $deb"
  echo "$deb"
}

# smoke DEB ARCH: runs the packaged wrapper from `dpkg-deb -x`, as nobody when we are root (as
# root, Deno would create /nonexistent/.cache/deno).
smoke() {
  local deb=$1 arch=$2 dir=$work/unpacked-$2 wrapper=$work/wrapper-$2 out run_as=()
  local qemu=qemu-aarch64-static sock backend port proxy reply status=0
  dpkg-deb -x "$deb" "$dir"
  sed "s|:-/usr/lib/socket-proxyd/|:-$dir/usr/lib/socket-proxyd/|" "$dir/usr/bin/socket-proxyd" >"$wrapper"
  if [[ $arch != "$host_arch" ]]; then
    if [[ $arch != arm64 ]] || ! command -v "$qemu" >/dev/null; then
      say "$arch smoke test skipped: $arch programs do not run here (qemu-user-static)"
      return
    fi
    sed -i "s|^exec \"\$deno\"|exec $qemu \"\$deno\"|" "$wrapper"
    grep -q "^exec $qemu " "$wrapper" || die "the wrapper has no exec line to adjust"
    say "$arch smoke tests run under $qemu"
  fi
  [[ $(id -u) != 0 ]] || run_as=(setpriv --reuid=65534 --regid=65534 --clear-groups)

  say "$arch: env -i HOME=/nonexistent PATH=/usr/bin:/bin socket-proxyd --version"
  out=$("${run_as[@]}" env -i HOME=/nonexistent PATH=/usr/bin:/bin sh "$wrapper" --version) ||
    die "the packaged wrapper failed to start"
  echo "$out" >&2
  [[ $out == "socket-proxyd $version (Deno ${npm_version[$arch]})" ]] || die "unexpected --version output"

  # The template units, for a few instances, with ExecStart= pointing into the unpacked tree
  # ("FILE:NAME" loads FILE as unit NAME, which instance names with a ':' need).
  if command -v systemd-analyze >/dev/null; then
    say "$arch: systemd-analyze verify socket-proxyd@{8080,127.0.0.1:8080,[::1]:8080}.{socket,service}"
    mkdir -p "$work/units-$arch"
    cp "$dir"/lib/systemd/system/socket-proxyd@.* "$work/units-$arch/"
    sed -i "s|ExecStart=/usr/bin/socket-proxyd|ExecStart=$dir/usr/bin/socket-proxyd|" \
      "$work/units-$arch/socket-proxyd@.service"
    local instance unit args=()
    for instance in 8080 127.0.0.1:8080 "$(systemd-escape '[::1]:8080')"; do
      for unit in socket service; do
        args+=("$work/units-$arch/socket-proxyd@.$unit:socket-proxyd@$instance.$unit")
      done
    done
    if ! out=$(systemd-analyze verify --man=no "${args[@]}" 2>&1) || [[ -n $out ]]; then
      die "systemd-analyze verify: ${out:-failed}"
    fi
  fi

  command -v systemd-socket-activate >/dev/null || return 0
  say "$arch: client -> systemd-socket-activate -> socket-proxyd -> backend on a Unix socket"
  mkdir -m 777 "$work/sock-$arch"
  sock=$work/sock-$arch/backend.sock
  "${run_as[@]}" "$host_deno" eval "Deno.serve({ path: '$sock', onListen() {} },
    () => new Response('forwarded'))" &
  backend=$!
  for _ in $(seq 50); do [[ -S $sock ]] && break || sleep 0.1; done
  # A port free a moment ago (a random one may be some other program's).
  port=$("$host_deno" eval 'const l = Deno.listen({ hostname: "127.0.0.1", port: 0 })
    console.log(l.addr.port); l.close()')
  "${run_as[@]}" env -i HOME=/nonexistent PATH=/usr/bin:/bin timeout 60 systemd-socket-activate \
    -l "127.0.0.1:$port" sh "$wrapper" --exit-idle-time=2s "$sock" 2>"$work/proxy-$arch.log" &
  proxy=$!
  reply=$("$host_deno" eval "const r = await fetch('http://127.0.0.1:$port/');
    console.log(r.status, await r.text())") || reply="(client failed)"
  wait "$proxy" || status=$?
  kill "$backend" 2>/dev/null || true
  wait "$backend" 2>/dev/null || true
  echo "reply: $reply; the proxy exited $status when idle" >&2
  [[ $reply == "200 forwarded" && $status == 0 ]] || {
    cat "$work/proxy-$arch.log" >&2
    die "the forwarding smoke test failed"
  }
}

debs=()
for arch in "${arches[@]}"; do
  say "dpkg-buildpackage: socket-proxyd $version $arch, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
  mkdir -p "$work/$arch"
  deb=$(build "$work/$arch" "$arch")
  if $twice; then
    say "$arch: a second build, in another directory and with umask 077, to compare"
    mkdir -p "$work/$arch-again"
    deb2=$(umask 077 && build "$work/$arch-again" "$arch")
    sha256sum "$deb" "$deb2" | sed "s|$work/||" >&2
    cmp -s "$deb" "$deb2" || die "the two $arch builds differ: not reproducible"
  fi
  # Every file the package must hold, and nothing else.
  dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -v '/$' | sed 's|^\./||' |
    check_contents packaging/deb/contents
  say "$arch: the package holds exactly the files of packaging/deb/contents"
  smoke "$deb" "$arch"
  if $lintian; then
    say "$arch: lintian"
    lintian --fail-on error,warning,info --display-info "$deb" >&2 ||
      die "lintian found problems (above)"
  fi
  debs+=("$deb")
done

mkdir -p dist
# (An archive of an earlier run, packaging/archive/build.sh, may hold another bundle: gone too.)
rm -f dist/SHA256SUMS dist/socket-proxyd_*.deb dist/socket-proxyd-*-linux-*.tar.gz
cp "$bundle" "${debs[@]}" dist/
(cd dist && sha256sum socket-proxyd.js socket-proxyd_*.deb >SHA256SUMS)
say "dist/SHA256SUMS:"
cat dist/SHA256SUMS >&2
