#!/usr/bin/env bash
# The W4A16/W8A16 kernels on the GPU machine, in one call: correctness
# (test_wna16, every path against the C reference), optionally the GEMV
# tuning sweep, the benchmark, and memcheck on the small cases; a short
# summary last. Binaries are built elsewhere (see kernels/WNA16_NOTES.md).
# usage: tests/gpu/wna16_device.sh BIN_DIR OUT_DIR [sweep|sweep1]
#   sweep:  sweep + bench twice + ncu + memcheck (round 2: ~8 min)
#   sweep1: sweep + bench once + memcheck (round 3: one call of <= 5 min)
set -uo pipefail
B=$1; OUT=$2; MODE=${3:-}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# Libraries the binaries miss (built on another image): look for them once.
for lib in $(ldd "$B/test_wna16" "$B/bench_wna16" 2>/dev/null | awk '/not found/ {print $1}' | sort -u); do
  d=$(find /usr/local /usr/lib /opt -name "$lib*" 2>/dev/null | head -n 1 | xargs -r dirname)
  [ -n "$d" ] && export LD_LIBRARY_PATH=$d:$LD_LIBRARY_PATH
done
S=$OUT/summary.txt
: > "$S"
say() { echo "$*" | tee -a "$S"; }
ldd "$B/test_wna16" | grep "not found" | tee -a "$S"
say "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader 2>&1) date: $(date -u '+%F %T')"

t0=$(date +%s)
timeout 100 "$B/test_wna16" > "$OUT/test_wna16.log" 2>&1; rc=$?
say "== test_wna16: rc=$rc ($(( $(date +%s) - t0 )) s): $(tail -n 1 "$OUT/test_wna16.log")"
grep -E "^FAIL|error|Error" "$OUT/test_wna16.log" | head -n 20 | tee -a "$S"
grep -E "^ok.*gemv" "$OUT/test_wna16.log" | awk '{for(i=1;i<=NF;i++) if($i ~ /^err=/){sub("err=","",$i); if($i+0>m) m=$i+0}} END {print "max gemv err (f16+bf16 mixed):", m}' | tee -a "$S"
grep -E "^ok.*f16 .*gemv" "$OUT/test_wna16.log" | grep -v bf16 | awk '{for(i=1;i<=NF;i++) if($i ~ /^err=/){sub("err=","",$i); if($i+0>m) m=$i+0}} END {print "max gemv err f16:", m}' | tee -a "$S"
grep -E "partial word" "$OUT/test_wna16.log" | head -n 3 | tee -a "$S"
if [ $rc -eq 124 ]; then say "test_wna16 timed out: stopping (a hang?)"; exit 1; fi

case "$MODE" in sweep|sweep1)
  t0=$(date +%s)
  timeout ${SWEEP_S:-80} stdbuf -oL "$B/bench_wna16" ${SWEEP_REPS:-20} sweep > "$OUT/sweep.log" 2>&1; rc=$?
  say "== bench_wna16 sweep: rc=$rc ($(( $(date +%s) - t0 )) s)";;
esac

t0=$(date +%s)
timeout ${BENCH_S:-120} stdbuf -oL "$B/bench_wna16" ${REPS:-30} > "$OUT/bench.log" 2>&1; rc=$?
say "== bench_wna16: rc=$rc ($(( $(date +%s) - t0 )) s)"
if [ "$MODE" = sweep ]; then # the same again: the run-to-run spread of each number
  timeout 120 "$B/bench_wna16" ${REPS:-30} > "$OUT/bench2.log" 2>&1; rc=$?
  say "== bench_wna16 (again): rc=$rc"
  paste <(grep -E "^[0-9]+->[0-9]+ .* \| " "$OUT/bench.log" | head -n 36) \
        <(grep -E "^[0-9]+->[0-9]+ .* \| " "$OUT/bench2.log" | head -n 36) |
    awk -F'|' '{split($2,a," "); split($7,b," "); g1=a[1]; g2=b[1]; d=(g2-g1)/g1*100; if (d<0) d=-d; if (d>m) m=d; s+=d; n++}
               END {if (n) printf "run-to-run gemv us: mean |diff| %.1f %%, max %.1f %% over %d rows\n", s/n, m, n}' | tee -a "$S"
fi

if command -v ncu > /dev/null && [ "$MODE" = sweep ]; then
  for skip in 10 30; do
    t0=$(date +%s)
    timeout 40 ncu --clock-control none -k regex:wna16_gemv --launch-skip $skip --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section SchedulerStats --section WarpStateStats \
      --section MemoryWorkloadAnalysis --section LaunchStats "$B/bench_wna16" 3 profile > "$OUT/ncu_$skip.log" 2>&1; rc=$?
    say "== ncu launch $skip (M=$([ $skip = 10 ] && echo 1 || echo 16)): rc=$rc ($(( $(date +%s) - t0 )) s)"
    grep -E "DRAM Throughput|Memory Throughput|Duration|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|No Eligible|Registers Per|Shared Memory Config|Dynamic Shared|Waves Per SM|Block Limit|Warp Cycles Per Issued|Cluster" "$OUT/ncu_$skip.log" | sed 's/^ */  /' | tee -a "$S"
  done
fi

if command -v compute-sanitizer > /dev/null && { [ "$MODE" = sweep ] || [ "$MODE" = sweep1 ]; }; then
  t0=$(date +%s)
  timeout ${MEMCHECK_S:-45} compute-sanitizer --tool memcheck "$B/test_wna16" small > "$OUT/memcheck.log" 2>&1; rc=$?
  say "== memcheck test_wna16 small: rc=$rc ($(( $(date +%s) - t0 )) s): $(grep -E 'passed|ERROR SUMMARY' "$OUT/memcheck.log" | tr '\n' ' ')"
fi

echo
[ -f "$OUT/sweep.log" ] && sed -n '/^sweep summary/,$p' "$OUT/sweep.log"
echo
grep -E "^copy|^bench_wna16" "$OUT/bench.log"
grep -E "prefill|dequantize" "$OUT/bench.log" | head -n 9
if grep -q "^decode (fp16), copy" "$OUT/bench.log"; then
  sed -n '/^decode (fp16), copy/,$p' "$OUT/bench.log"
else
  grep -E "^[0-9]+->[0-9]+ .* \| " "$OUT/bench.log"
fi
echo
cat "$S"
