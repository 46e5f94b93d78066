#!/usr/bin/env bash
# The test command (README, .ci/run): builds llmq, runs the unit and
# end-to-end suites, then the unit suite again under AddressSanitizer and
# UBSan, and prints "N passed, N failed" last. GPU tests run in the gpu suite
# on a machine with a GPU (tests/gpu/README.md); here they report skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

build() { # dir, extra meson args...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }; fi
  ninja -C "$dir" -j "$jobs" >"$dir.ninja.log" 2>&1 || { tail -50 "$dir.ninja.log"; return 1; }
}

passed=0 failed=0 skipped=0
tally() { # dir: count results from meson's test log
  local log=$1/meson-logs/testlog.json
  [ -f "$log" ] || return 0
  passed=$((passed + $(grep -c '"result": "OK"' "$log")))
  failed=$((failed + $(grep -c -E '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log")))
  skipped=$((skipped + $(grep -c '"result": "SKIP"' "$log")))
}

if build build; then
  meson test -C build --print-errorlogs --num-processes "$jobs" --suite unit --suite e2e --suite gpu
  tally build
else
  echo "build failed"; failed=$((failed + 1))
fi
if build build-asan -Db_sanitize=address,undefined -Dcuda=disabled -Dbuildtype=debug; then
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --print-errorlogs --num-processes "$jobs" --suite unit --suite e2e-asan
  tally build-asan
else
  echo "asan build failed"; failed=$((failed + 1))
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
