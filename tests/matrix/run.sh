#!/usr/bin/env bash
# The Deno version matrix: the one-file build (dist/socket-proxyd.js, `deno task bundle`) run by
# other Deno releases than the one the tests run on, as a user with their own Deno runs it.
#
# usage: tests/matrix/run.sh VERSION...        e.g. tests/matrix/run.sh 2.8.3 2.9.0 2.9.6
#
# For each VERSION (Deno from npm; npx keeps it in ~/.npm/_npx, so later runs download nothing):
#   - below the floor (DENO_FLOOR in src/service/runtime.ts): the program must refuse, exit 1, with the
#     message that names the floor and VERSION, before it serves anything;
#   - at or above it: every integration and fault test (tests/integration, tests/faults; not the
#     soak, which is `deno task soak`'s) and the permission test, with the program run by VERSION
#     (SOCKET_PROXYD_TEST_DENO): all that starts the real program, so that passing here means
#     what `deno task test` means for the pinned Deno. (The floor was found missing from a
#     shorter list: Deno 2.8.3 passed it, and died at its first memory reclaim.)
# Checks for (as root, installs) the tools the tests drive first, as `deno task test` does.
# Prints one summary line per version and exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1

[ "$#" -gt 0 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
tests=()
for test in tests/integration/*_test.ts tests/faults/*_test.ts tests/permissions_test.ts; do
  [ "$test" = tests/faults/soak_test.ts ] || tests+=("$test")
done
floor=$(sed -n 's/^export const DENO_FLOOR = "\(.*\)";$/\1/p' src/service/runtime.ts)
[ -n "$floor" ] || { echo "no DENO_FLOOR in src/service/runtime.ts" >&2; exit 2; }
below() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$1" ]; }

# The tests drive the same tools as `deno task test` (dnsmasq, dig, kdig for the datagram ones).
bash tests/setup.sh
deno task bundle
flags=$(deno eval '
  const p = JSON.parse(Deno.readTextFileSync("deno.json")).permissions.proxy;
  console.log(`--no-prompt --unstable-net --allow-net --allow-env=${p.env} --allow-write=${p.write} --allow-ffi=${p.ffi}`);
')

runner=$(command -v deno) # Before PATH changes below.
summary=()
failed=0
for version in "$@"; do
  echo "== Deno $version"
  # (From an empty directory: an old Deno would choke on this project's deno.lock.)
  if ! bin=$(cd "$(mktemp -d)" && npx -y "deno@$version" eval 'console.log(Deno.execPath())'); then
    summary+=("Deno $version: FAILED: could not be installed from npm")
    failed=1
    continue
  fi
  if below "$version" "$floor"; then
    status=0
    # shellcheck disable=SC2086 # $flags is a list of flags.
    out=$("$bin" run -q --no-config $flags dist/socket-proxyd.js 127.0.0.1:1 2>&1 </dev/null) ||
      status=$?
    echo "$out"
    expected="This is Deno $version; socket-proxyd needs Deno $floor or later"
    if [ "$status" = 1 ] && grep -qF "$expected" <<<"$out" && ! grep -q Forwarding <<<"$out"; then
      summary+=("Deno $version: refused as below the floor $floor (exit 1, with the message)")
    else
      summary+=("Deno $version: FAILED: not refused as expected (exit $status)")
      failed=1
    fi
    continue
  fi
  log=$(mktemp)
  status=0
  # The tests run on the Deno that started the matrix; VERSION runs the program, and comes first
  # on PATH for the tests that start it by name (`deno task socket-activate`, `deno run ...`).
  SOCKET_PROXYD_TEST_DENO=$bin PATH="$(dirname "$bin"):$PATH" "$runner" test -A "${tests[@]}" 2>&1 |
    tee "$log" || status=$?
  result=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -n 1 || true)
  rm -f "$log"
  if [ "$status" = 0 ]; then
    summary+=("Deno $version: $result")
  else
    summary+=("Deno $version: FAILED: ${result:-the tests did not finish}")
    failed=1
  fi
done
echo "== matrix summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
