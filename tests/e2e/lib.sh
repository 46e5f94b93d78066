# Helpers for the end-to-end tests (sourced). LLMQ_BUILD and LLMQ_TEST_DATA
# come from meson's test environment.
set -euo pipefail
BUILD=${LLMQ_BUILD:?LLMQ_BUILD not set}
DATA=${LLMQ_TEST_DATA:?LLMQ_TEST_DATA not set}
MODEL=$DATA/models/stories260K
TMP=$(mktemp -d /tmp/llmq_e2e.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# json_get KEY < json  -> the number after "KEY":
json_get() { sed -n "s/.*\"$1\": *\([-0-9.eE+]*\).*/\1/p"; }

# check_close NAME VALUE EXPECTED TOL  (absolute tolerance)
check_close() {
  if awk -v v="$2" -v e="$3" -v t="$4" 'BEGIN { d = v - e; if (d < 0) d = -d; exit !(d <= t) }'; then
    echo "ok   $1 = $2 (expected $3 +- $4)"
  else
    echo "FAIL $1 = $2 (expected $3 +- $4)"; exit 1
  fi
}

check_eq() {
  if [ "$2" = "$3" ]; then echo "ok   $1 = $2"; else echo "FAIL $1 = $2 (expected $3)"; exit 1; fi
}

# expect_fail NAME PATTERN cmd...: the command must exit non-zero, print PATTERN on stderr, not crash.
expect_fail() {
  local name=$1 pat=$2; shift 2
  set +e; "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?; set -e
  if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then echo "FAIL $name: exit $rc"; cat "$TMP/err"; exit 1; fi
  if ! grep -q -- "$pat" "$TMP/err"; then echo "FAIL $name: stderr lacks '$pat':"; cat "$TMP/err"; exit 1; fi
  echo "ok   $name: exit $rc: $(head -c 200 "$TMP/err")"
}
