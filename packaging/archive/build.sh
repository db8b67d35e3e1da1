#!/usr/bin/env bash
# Builds dist/socket-proxyd-<version>-linux-<arch>.tar.gz, a release archive for any glibc Linux:
# the pinned Deno, the bundle, the wrapper, the man page and the units, in one directory that
# runs wherever it is unpacked. dist/SHA256SUMS is rewritten to list it beside the other files
# of dist/. The same checkout gives the same bytes.
#
#   bash packaging/archive/build.sh [--arch=x86_64[,aarch64]]      (deno task archive)
#
# Steps: fetch the pinned Deno from the npm registry and check its sha512 against
# packaging/deb/deno.pin (packaging/deno.sh, as the Debian package's build does); bundle the
# program with it (twice, must be identical); per architecture, lay out the archive's tree, pack
# it twice (from two copies made under different umasks) and fail unless the two are identical
# and it holds exactly the files packaging/archive/contents lists;
# on this machine's architecture, unpack it into a directory whose name has a space and run the
# wrapper from there, directly and through a symlink.
#
# Inside, socket-proxyd-<version>-linux-<arch>/:
#   bin/socket-proxyd                   the wrapper (systemd/socket-proxyd, finding the files
#                                       below from its own location, symlinks resolved)
#   lib/socket-proxyd/deno              Deno, as published on npm
#   lib/socket-proxyd/socket-proxyd.js  the program (deno task bundle)
#   lib/systemd/system/                 the template units socket-proxyd@.socket/.service
#   lib/systemd/user/                   the same for user managers (systemctl --user)
#   share/man/man8/socket-proxyd.8      the man page
#   share/doc/socket-proxyd/            copyright (with Deno's licences) and examples/: every
#                                       example of systemd/ with their README.md, as the
#                                       package has them
#   LICENSE
# The units run /usr/local/bin/socket-proxyd: link it to bin/socket-proxyd, or point their
# ExecStart= at it.
#
# Reproducible: names sorted, every mtime SOURCE_DATE_EPOCH (default: the last commit's time),
# owner and group 0, modes 0644 or 0755, gzip -n (no name, no time stamp).
# Needs: GNU tar, gzip, npm (the first time, for Deno), git or dpkg-parsechangelog.
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

die() { echo "archive/build.sh: $*" >&2 && exit 1; }
say() { echo "== $*" >&2; }
# shellcheck source=packaging/deno.sh
source packaging/deno.sh
# shellcheck source=packaging/layout.sh
source packaging/layout.sh

arches=x86_64
for arg in "$@"; do
  case $arg in
    --arch=*) arches=${arg#--arch=} ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$here/build.sh" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument $arg (try --help)" ;;
  esac
done
IFS=, read -r -a arches <<<"$arches"

export LC_ALL=C.UTF-8 TZ=UTC NO_COLOR=1 DENO_NO_UPDATE_CHECK=1
umask 022

# debian_arch ARCH: the Debian name of a machine name (the pin is keyed by it).
debian_arch() {
  case $1 in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    *) die "no archive for architecture '$1' (x86_64 or aarch64)" ;;
  esac
}

read_deno_pin
check_pin_is_ci
host_arch=$(uname -m)
for a in "${arches[@]}" "$host_arch"; do debian_arch "$a" >/dev/null; done

work=$(mktemp -d "${TMPDIR:-/tmp}/socket-proxyd-archive.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # the smoke test runs as nobody when we are root

host_deno=$(fetch_deno "$(debian_arch "$host_arch")" "$work")/deno
version=$("$host_deno" eval 'console.log(JSON.parse(Deno.readTextFileSync("deno.json")).version)')
set_source_date_epoch
bundle=$(make_bundle "$host_deno" "$version" "$work")

# stage DIR ARCH: lays out the archive's tree as DIR/NAME, prints NAME.
stage() {
  local name=socket-proxyd-$version-linux-$2 top doc f unit
  top=$1/$name doc=$1/$name/share/doc/socket-proxyd
  mkdir -p "$top/bin" "$top/lib/socket-proxyd" "$top/lib/systemd/system" "$top/lib/systemd/user" \
    "$top/share/man/man8" "$doc"
  # The wrapper finds the archive's directory from its own path.
  archive_wrapper >"$top/bin/socket-proxyd"
  chmod 755 "$top/bin/socket-proxyd"
  cp "$(fetch_deno "$(debian_arch "$2")" "$work")/deno" "$top/lib/socket-proxyd/deno"
  cp "$bundle" "$top/lib/socket-proxyd/socket-proxyd.js"
  cp systemd/socket-proxyd.8 "$top/share/man/man8/"
  cp LICENSE "$top/"
  cp packaging/deb/debian/copyright "$doc/copyright"
  copy_examples "$doc/examples"
  # The template units, system and user, as the package ships them, but running
  # /usr/local/bin/socket-proxyd, as the examples do.
  for f in systemd/units/*/socket-proxyd@.*; do
    unit=lib/systemd/${f#systemd/units/}
    sed 's|^ExecStart=/usr/bin/socket-proxyd |ExecStart=/usr/local/bin/socket-proxyd |' "$f" >"$top/$unit"
    [[ $f != *.service ]] || grep -q '^ExecStart=/usr/local/bin/socket-proxyd ' "$top/$unit" ||
      die "$f: no ExecStart=/usr/bin/socket-proxyd to rewrite"
  done
  echo "$name"
}

# pack DIR NAME OUT: DIR/NAME as a reproducible .tar.gz.
pack() {
  tar --sort=name --format=gnu --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 \
    --numeric-owner --mode='u+rwX,go=rX' -C "$1" -cf - "$2" | gzip -9 -n >"$3"
}

# smoke ARCHIVE: unpacks it where no one would put it and runs it from there, as nobody when we
# are root, in an empty environment, also through a symlink.
smoke() {
  local dir="$work/un packed" out link run_as=() name
  name=$(basename "$1" .tar.gz)
  mkdir -p "$dir" "$work/links"
  tar -xzf "$1" -C "$dir"
  ln -s "$dir/$name/bin/socket-proxyd" "$work/links/socket-proxyd"
  [[ $(id -u) != 0 ]] || run_as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  for out in "$dir/$name/bin/socket-proxyd" "$work/links/socket-proxyd"; do
    say "env -i HOME=/nonexistent PATH=/usr/bin:/bin $out --version"
    out=$("${run_as[@]}" env -i HOME=/nonexistent PATH=/usr/bin:/bin "$out" --version) ||
      die "the archive's wrapper failed to start"
    echo "$out" >&2
    [[ $out == "socket-proxyd $version (Deno ${npm_version[$(debian_arch "$host_arch")]})" ]] ||
      die "unexpected --version output"
  done
}

archives=()
for arch in "${arches[@]}"; do
  mkdir -p "$work/$arch/a" "$work/$arch/b"
  say "socket-proxyd $version for $arch, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
  name=$(stage "$work/$arch/a" "$arch")
  (umask 077 && stage "$work/$arch/b" "$arch" >/dev/null)
  pack "$work/$arch/a" "$name" "$work/$arch/$name.tar.gz"
  pack "$work/$arch/b" "$name" "$work/$arch/again.tar.gz"
  # Every file the archive must hold, and nothing else (the directory's name without its version
  # and architecture).
  tar -tzf "$work/$arch/$name.tar.gz" | grep -v '/$' | sed "s|^$name/||" |
    check_contents packaging/archive/contents
  say "$name.tar.gz holds exactly the files of packaging/archive/contents"
  cmp -s "$work/$arch/$name.tar.gz" "$work/$arch/again.tar.gz" ||
    die "the two $arch archives (umask 022 and 077) differ: not reproducible"
  say "$name.tar.gz: $(stat -c %s "$work/$arch/$name.tar.gz") bytes, the same from both copies"
  if [[ $arch == "$host_arch" ]]; then
    smoke "$work/$arch/$name.tar.gz"
  else
    say "$arch smoke test skipped: $arch programs do not run here"
  fi
  archives+=("$work/$arch/$name.tar.gz")
done

# dist/: this run's archives, the bundle they hold, and one SHA256SUMS for everything there.
mkdir -p dist
if [[ -f dist/socket-proxyd.js ]] && ! cmp -s "$bundle" dist/socket-proxyd.js; then
  die "dist/socket-proxyd.js is not this checkout's bundle (the package in dist/ would not match" \
    "the archive): run deno task deb first, or remove dist/"
fi
rm -f dist/SHA256SUMS dist/socket-proxyd-*-linux-*.tar.gz
cp "$bundle" "${archives[@]}" dist/
(
  cd dist
  shopt -s nullglob
  sha256sum socket-proxyd.js socket-proxyd_*.deb socket-proxyd-*-linux-*.tar.gz >SHA256SUMS
)
[[ $(grep -c -- '-linux-.*\.tar\.gz$' dist/SHA256SUMS) == "${#archives[@]}" ]] ||
  die "dist/SHA256SUMS does not list the archives"
say "dist/SHA256SUMS:"
cat dist/SHA256SUMS >&2
