# The pinned Deno, for the builds that ship it (sourced by packaging/deb/build.sh and
# packaging/archive/build.sh; they define die MESSAGE and say MESSAGE first).
#
#   read_deno_pin              fills npm_name, npm_version and npm_integrity, keyed by Debian
#                              architecture (amd64, arm64), from packaging/deb/deno.pin
#   check_pin_is_ci            fails unless every pinned version is the one .ci/run tests with
#   fetch_deno ARCH WORK       prints the directory holding that architecture's `deno`: the npm
#                              tarball, fetched into WORK/deno-ARCH (npm pack; npm's cache makes
#                              later builds offline), checked against the pinned sha512 and
#                              unpacked; a second call reuses it
#   make_bundle DENO VERSION WORK
#                              bundles the program with DENO as `deno task bundle` does
#                              (packaging/bundle.ts), twice (the two must be identical), into
#                              WORK/socket-proxyd.js, checks that its --version says VERSION,
#                              and prints the file's path
#   set_source_date_epoch      exports SOURCE_DATE_EPOCH (unless set): the last commit's time, or
#                              the newest entry of packaging/deb/debian/changelog
#
# Run from the checkout's root.

declare -A npm_name npm_version npm_integrity

read_deno_pin() {
  local name version integrity a
  while read -r name version integrity; do
    case $name in '' | '#'*) continue ;; esac
    case $name in
      @deno/linux-x64-glibc) a=amd64 ;;
      @deno/linux-arm64-glibc) a=arm64 ;;
      *) die "deno.pin: unknown package $name" ;;
    esac
    npm_name[$a]=$name npm_version[$a]=$version npm_integrity[$a]=$integrity
  done <packaging/deb/deno.pin
}

check_pin_is_ci() {
  local a ci_versions
  # The shipped Deno must be the one CI tests the program with.
  ci_versions=$(sed -n 's/^pinned=\([0-9.]*\)$/\1/p' .ci/run)
  for a in "${!npm_version[@]}"; do
    [[ $ci_versions == "${npm_version[$a]}" ]] ||
      die "deno.pin has Deno ${npm_version[$a]} for $a, .ci/run uses ${ci_versions:-none}: make them agree"
  done
}

fetch_deno() {
  local a=$1 dir=$2/deno-$1 spec tgz want got
  [[ -n ${npm_name[$a]:-} ]] || die "no Deno pinned for architecture '$a' in deno.pin"
  spec=${npm_name[$a]}@${npm_version[$a]}
  [[ -d $dir/package ]] && echo "$dir/package" && return
  mkdir -p "$dir"
  tgz=$(npm pack --prefer-offline --silent --pack-destination "$dir" "$spec" | tail -n 1)
  [[ -f $dir/$tgz ]] || die "npm pack $spec produced no tarball"
  want=$(printf '%s' "${npm_integrity[$a]#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  got=$(sha512sum "$dir/$tgz" | cut -d ' ' -f 1)
  if [[ $got != "$want" ]]; then
    echo "INTEGRITY MISMATCH for $spec" >&2
    echo "  pinned in packaging/deb/deno.pin: ${npm_integrity[$a]}" >&2
    echo "  that is, as hex:                  $want" >&2
    echo "  sha512 of the downloaded tarball: $got" >&2
    die "the downloaded Deno is not the pinned one"
  fi
  tar -xzf "$dir/$tgz" -C "$dir"
  [[ -x $dir/package/deno ]] || die "$spec has no executable package/deno"
  say "Deno ${npm_version[$a]} for $a: $spec, sha512 as pinned"
  echo "$dir/package"
}

make_bundle() {
  local deno=$1 version=$2 bundle=$3/socket-proxyd.js
  say "deno run packaging/bundle.ts socket-proxyd.js (twice)"
  "$deno" run -q --allow-read --allow-write --allow-run packaging/bundle.ts "$bundle"
  "$deno" run -q --allow-read --allow-write --allow-run packaging/bundle.ts "$3/bundle-again.js"
  cmp -s "$bundle" "$3/bundle-again.js" || die "packaging/bundle.ts gave different bytes on a second run"
  [[ $("$deno" run --no-config -q "$bundle" --version) == "socket-proxyd $version "* ]] ||
    die "the bundle's --version does not print socket-proxyd $version"
  echo "$bundle"
}

set_source_date_epoch() {
  if [[ -z ${SOURCE_DATE_EPOCH:-} ]] && git rev-parse --verify -q HEAD >/dev/null 2>&1; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
  fi
  : "${SOURCE_DATE_EPOCH:=$(dpkg-parsechangelog -l packaging/deb/debian/changelog -S Timestamp)}"
  export SOURCE_DATE_EPOCH
}
