# The layout of the package and the release archive: their wrappers, the examples they ship and
# the check of what they hold (sourced by packaging/deb/build.sh and packaging/archive/build.sh,
# which define die MESSAGE first, and by tests/systemd/wrapper_test.ts). Run from the checkout's
# root.
#
#   package_wrapper       prints systemd/socket-proxyd as the package installs it, as
#                         /usr/bin/socket-proxyd: Deno and the program in /usr/lib/socket-proxyd/
#   archive_wrapper       prints it as the archive's bin/socket-proxyd: Deno and the program in
#                         lib/socket-proxyd/ of the directory it was unpacked into
#
#   copy_examples DIR     copies into DIR what .../share/doc/socket-proxyd/examples/ holds: the
#                         examples' README (systemd/README.md: the units and the man page point
#                         to it as examples/README.md), every example directory of systemd/ (each
#                         one but units/, the template units, which are shipped apart) and the
#                         instance configurations of packaging/deb/examples/
#   check_contents LIST   reads the files a build made on stdin, one path a line, and fails
#                         unless they are exactly the lines of LIST (packaging/deb/contents,
#                         packaging/archive/contents), naming what is missing and what is extra

package_wrapper() {
  local out
  out=$(sed -e 's|:-/usr/local/bin/deno}$|:-/usr/lib/socket-proxyd/deno}|' \
    -e 's|:-/usr/local/lib/socket-proxyd/socket-proxyd.js}$|:-/usr/lib/socket-proxyd/socket-proxyd.js}|' \
    systemd/socket-proxyd)
  [[ $(grep -c -e '^deno=${SOCKET_PROXYD_DENO:-/usr/lib/socket-proxyd/deno}$' \
    -e '^program=${SOCKET_PROXYD_PROGRAM:-/usr/lib/socket-proxyd/socket-proxyd.js}$' <<<"$out") == 2 ]] ||
    die "systemd/socket-proxyd: no deno= and program= defaults to rewrite"
  printf '%s\n' "$out"
}

archive_wrapper() {
  local out
  # shellcheck disable=SC2016 # The wrapper's own variables, written as they are.
  out=$(sed -e 's|^deno=${SOCKET_PROXYD_DENO:-/usr/local/bin/deno}$|# The archive'"'"'s directory, wherever it was unpacked: this file is its bin/socket-proxyd.\
prefix=$(dirname "$(dirname "$(readlink -f "$0")")")\
&|' \
    -e 's|:-/usr/local/bin/deno}$|:-$prefix/lib/socket-proxyd/deno}|' \
    -e 's|:-/usr/local/lib/socket-proxyd/socket-proxyd.js}$|:-$prefix/lib/socket-proxyd/socket-proxyd.js}|' \
    systemd/socket-proxyd)
  # shellcheck disable=SC2016
  [[ $(grep -c -e '^deno=${SOCKET_PROXYD_DENO:-$prefix/lib/socket-proxyd/deno}$' \
    -e '^program=${SOCKET_PROXYD_PROGRAM:-$prefix/lib/socket-proxyd/socket-proxyd.js}$' <<<"$out") == 2 ]] ||
    die "systemd/socket-proxyd: no deno= and program= defaults to rewrite"
  printf '%s\n' "$out"
}

copy_examples() {
  local dir
  mkdir -p "$1"
  cp systemd/README.md "$1/README.md"
  for dir in systemd/*/; do
    [[ $dir != systemd/units/ ]] || continue
    cp -r "${dir%/}" "$1/"
  done
  cp packaging/deb/examples/* "$1/"
}

check_contents() {
  local list=$1 built want missing extra
  built=$(LC_ALL=C sort)
  want=$({ grep -v -e '^#' -e '^$' "$list" || true; } | LC_ALL=C sort)
  missing=$(LC_ALL=C comm -23 <(echo "$want") <(echo "$built"))
  extra=$(LC_ALL=C comm -13 <(echo "$want") <(echo "$built"))
  [[ -z $missing && -z $extra ]] || die "what was built differs from $list
  missing:${missing:+$'\n'}${missing:- none}
  not listed:${extra:+$'\n'}${extra:- none}
(add a new file to the list, or ship the one the list names)"
}
