#!/usr/bin/env bash
# Issue 5 on the GPU machine: the real-quant kernels and KV cache against
# their C references, real-quant vs fake-quant perplexity on stories260K,
# and the benchmarks (kernels; decode and W8A8 prefill of a synthetic
# Llama-2-7B). usage: tests/gpu/realquant_device.sh BUILD_DIR OUT_DIR [PART]
# PART: checks | bench | 7b | all (default) | graphs | kv | groups | slice | slicekernel | nf4 | prefill7b | final.
# Results: OUT_DIR/summary.txt.
set -uo pipefail
B=$(realpath "$1"); OUT=$2; PART=${3:-all}
mkdir -p "$OUT"
export LLMQ_TEST_DATA=$PWD/tests/data LLMQ_BUILD=$B
D=$LLMQ_TEST_DATA; WK=$D/text/wikitext2/wiki.test.raw; EV=$D/text/tinystories/eval.txt
S=$OUT/summary.txt
say() { echo "$*" | tee -a "$S"; }
step() { # name cmd...: run, keep the log, record rc and the last lines
  local name=$1; shift
  local t0=$(date +%s.%N)
  "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  say "== $name: rc=$rc ($(awk -v a=$t0 -v b=$(date +%s.%N) 'BEGIN{printf "%.1f", b-a}') s)"
  tail -n ${TAIL:-3} "$OUT/$name.log" | tee -a "$S"
}
say "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null) date: $(date -u +%F) commit: $(git rev-parse --short HEAD 2>/dev/null)"
if [ "$PART" = checks ] || [ "$PART" = all ]; then
  for k in kv_cache wna16 w8a8 nf4_gemv; do TAIL=2 step test_$k "$B/tests/test_$k"; done
  step forward_cuda "$B/tests/test_forward_cuda" "$D/models/stories260K" "$EV" 512 16
  TAIL=30 LLMQ_DEVICE=cuda LLMQ_WINDOWS=400 step realquant_e2e bash tests/e2e/realquant.sh
  TAIL=12 step realquant_slice bash tests/gpu/realquant_slice.sh
fi
if [ "$PART" = bench ] || [ "$PART" = all ]; then
  TAIL=30 LLMQ_DEVICE=cuda LLMQ_WINDOWS=400 LLMQ_REAL_FLAGS=--kernels-only step realquant_e2e_kernels_only bash tests/e2e/realquant.sh
  TAIL=30 step bench_kv_cache "$B/tests/bench_kv_cache"
  TAIL=40 step bench_wna16 "$B/tests/bench_wna16"
fi
[ "$PART" = checks ] || [ "$PART" = bench ] && exit 0
if [ "$PART" = groups ]; then
  # Third session: the W8A8 GEMV (rescale in its epilogue) and q/k/v,
  # gate/up as one launch; kernels against their references, then timings.
  for k in w8a8 wna16; do TAIL=2 step test_$k "$B/tests/test_$k"; done
  grep -E "^FAIL" "$OUT/test_w8a8.log" "$OUT/test_wna16.log" | head -n 20 | tee -a "$S"
  grep -E "gemm.gemv" "$OUT/test_w8a8.log" | grep -c "bit-exact" | sed 's/^/w8a8 gemv checks: /' | tee -a "$S"
  grep -E "^(ok|FAIL) +group" "$OUT/test_wna16.log" | tee -a "$S"
  TAIL=2 step test_backend_cuda "$B/tests/test_backend_cuda" quick
  TAIL=20 step bench_w8a8_gemv "$B/tests/bench_w8a8" gemv
  TAIL=2 step bench_wna16 timeout 200 "$B/tests/bench_wna16" 30
  grep -E "^[0-9]+->[0-9]+ +w(4g128|8g128|8) +1 \|" "$OUT/bench_wna16.log" | tee -a "$S"
  exit 0
fi
if [ "$PART" = final ]; then
  # The checks of a finished change in one call, then its timings: kernels
  # against their references, real vs fake quant, q/k/v grouping, the
  # 7B-slice decode of every scheme (grouped, then not; twice), compact.
  for k in wna16 w8a8; do TAIL=1 step test_$k "$B/tests/test_$k"; done
  grep -hE "^FAIL" "$OUT/test_wna16.log" "$OUT/test_w8a8.log" | head -n 10 | tee -a "$S"
  TAIL=1 step test_backend_cuda "$B/tests/test_backend_cuda" quick
  TAIL=0 LLMQ_DEVICE=cuda LLMQ_WINDOWS=400 step realquant_e2e bash tests/e2e/realquant.sh
  say "realquant e2e: $(grep -c '^ok' "$OUT/realquant_e2e.log") ok, $(grep -c '^FAIL' "$OUT/realquant_e2e.log") FAIL"
  TAIL=8 step bench_groups "$B/tests/bench_wna16" 30 groups
fi
if [ "$PART" = prefill7b ]; then
  # The end-to-end prefill of the full 7B shape (32 layers), fp16 against
  # W8A8 (weights quantized per channel at load), twice interleaved: tokens/s
  # of the whole forward over 8 windows of 2048 tokens, batch 4.
  step synth_7b "$B/tests/make_synth_model" --out /tmp/s7b --preset 7b --tokenizer "$D/tokenizers/llama-spm" --quiet
  PF="--text $WK --ctx 2048 --max-windows 8 --batch 4 --device cuda --dtype f16 --json --quiet"
  for rep in 1 2; do
    TAIL=0 step prefill7b_fp16_$rep timeout 200 "$B/llmq-eval" --model /tmp/s7b $PF
    TAIL=0 step prefill7b_w8a8_$rep timeout 240 "$B/llmq-eval" --model /tmp/s7b --real --w8a8 $PF
  done
  for f in "$OUT"/prefill7b_*.log; do
    say "$(basename "$f" .log): $(grep -o '"ppl": [0-9.]*\|"tokens_per_s": [0-9.]*' "$f" | tr '\n' ' ')"
  done
  exit 0
fi
if [ "$PART" = slicekernel ] || [ "$PART" = nf4 ]; then
  # A decode kernel's checks, then the decode of an 8-layer slice of the 7B
  # shape, batch 1-64, against an older build (OLD_EVAL=path to its
  # llmq-eval), twice interleaved; fp16 once. slicekernel: test_wna16 and
  # W4A16 g128 (AUTO: the slice kernel at 2-64 rows). nf4 (seventh
  # session): test_nf4_gemv and NF4 on the slice kernel (older builds: the
  # NF4 GEMV to 8 rows, per 8 rows to 32, dequantize + cuBLAS above), and
  # W4A16 once.
  if [ "$PART" = nf4 ]; then T=test_nf4_gemv V=nf4; else T=test_wna16 V=w4; fi
  TAIL=1 step $T "$B/tests/$T"
  grep -hE "^FAIL" "$OUT/$T.log" | head -n 10 | tee -a "$S"
  step synth_7b8 "$B/tests/make_synth_model" --out /tmp/s7b8 --preset 7b --layers 8 --tokenizer "$D/tokenizers/llama-spm" --quiet
  Q="$B/llmq-gptq --model /tmp/s7b8 --force --quiet --device cuda"
  $Q --method rtn --bits 4 --group 128 -o /tmp/s7b8-w4 > "$OUT/q4.log" 2>&1 &
  [ $V = nf4 ] && $Q --method nf4 --format llmq -o /tmp/s7b8-nf4 > "$OUT/qnf4.log" 2>&1 &
  wait; say "quantized: $(ls -d /tmp/s7b8-*)"
  DEC="--text $WK --decode --device cuda --dtype f16 --quiet --prompt 128 --steps 64 --decode-batch 1,4,8,16,32,64"
  for rep in 1 2; do
    TAIL=7 step dec_${V}_new_$rep "$B/llmq-eval" --model /tmp/s7b8-$V --real $DEC
    [ -n "${OLD_EVAL:-}" ] && TAIL=7 step dec_${V}_old_$rep "$OLD_EVAL" --model /tmp/s7b8-$V --real $DEC
  done
  [ $V = nf4 ] && TAIL=7 step dec_w4 "$B/llmq-eval" --model /tmp/s7b8-w4 --real $DEC
  TAIL=7 step dec_fp16 "$B/llmq-eval" --model /tmp/s7b8 $DEC
  for f in "$OUT"/dec_*.log; do # tokens/s at batch 1 / 4 / 8 / 16 / 32 / 64
    say "$(basename "$f" .log): $(awk '$1 ~ /^[0-9]+$/ {printf "%s ", $2}' "$f")"
  done
  exit 0
fi
if [ "$PART" = slice ] || [ "$PART" = final ]; then
  # Decode of an 8-layer slice of the 7B shape: each scheme with q/k/v and
  # gate/up grouped (default) and not (--no-group), then the e2e checks.
  step synth_7b8 "$B/tests/make_synth_model" --out /tmp/s7b8 --preset 7b --layers 8 --tokenizer "$D/tokenizers/llama-spm" --quiet
  Q="$B/llmq-gptq --model /tmp/s7b8 --force --quiet --device cuda"
  $Q --method rtn --bits 4 --group 128 -o /tmp/s7b8-w4 > "$OUT/q4.log" 2>&1 &
  $Q --method rtn --bits 8 --group 128 -o /tmp/s7b8-w8 > "$OUT/q8.log" 2>&1 &
  wait; say "quantized: $(ls -d /tmp/s7b8-*)" # nothing else on the GPU while timing
  DEC="--text $WK --decode --device cuda --dtype f16 --quiet --prompt 128 --steps 64"
  for rep in 1 2; do # grouped and not, twice, interleaved: the run-to-run spread
    TAIL=4 step slice_fp16_$rep "$B/llmq-eval" --model /tmp/s7b8 $DEC --decode-batch 1,4,16
    for g in "" --no-group; do
      TAIL=4 step slice_w8a8${g:+_nogroup}_$rep "$B/llmq-eval" --model /tmp/s7b8 --real --w8a8 $DEC --decode-batch 1,4,16 $g
      for v in w4 w8; do
        TAIL=4 step slice_${v}a16${g:+_nogroup}_$rep "$B/llmq-eval" --model /tmp/s7b8-$v --real $DEC --decode-batch 1,4,16 $g
      done
    done
  done
  [ "$PART" = slice ] && TAIL=30 LLMQ_DEVICE=cuda LLMQ_WINDOWS=400 step realquant_e2e bash tests/e2e/realquant.sh
  for f in "$OUT"/slice_*.log; do # batch 1 / 4 / 16 tokens/s per run
    say "$(basename "$f" .log): $(awk '$1 ~ /^[0-9]+$/ {printf "%s ", $2}' "$f")"
  done
  exit 0
fi
if [ "$PART" = kv ]; then
  # The int8 KV cache after the tensor-core decode kernel: its checks, the
  # kernel bench, and long-context decode of the 7B shape (graphs on).
  TAIL=2 step test_kv_cache "$B/tests/test_kv_cache"
  TAIL=14 step bench_kv_cache "$B/tests/bench_kv_cache" 20
  TAIL=3 LLMQ_DEVICE=cuda LLMQ_WINDOWS=400 step realquant_e2e bash tests/e2e/realquant.sh
  step synth_7b "$B/tests/make_synth_model" --out /tmp/s7b --preset 7b --tokenizer "$D/tokenizers/llama-spm" --quiet
  LONG="--text $WK --decode --device cuda --dtype f16 --quiet --decode-batch 16,64 --prompt 1024 --steps 32"
  TAIL=3 step decode7b_long_kv_float "$B/llmq-eval" --model /tmp/s7b $LONG
  TAIL=3 step decode7b_long_kv_int8 "$B/llmq-eval" --model /tmp/s7b --real --kv int8 $LONG
  exit 0
fi
if [ "$PART" = graphs ]; then
  # Decode steps replayed as CUDA graphs vs launched from the host. The
  # full 7B shape in fp16; the quantized schemes on an 8-layer slice of it
  # (same matrices, so per-layer bytes and ratios carry over; its RTN
  # checkpoints take ~1 min instead of ~9).
  TAIL=2 step test_kv_cache "$B/tests/test_kv_cache"
  TAIL=2 step test_backend_cuda "$B/tests/test_backend_cuda" quick
  TAIL=2 step test_wna16 "$B/tests/test_wna16"
  TAIL=12 LLMQ_DEVICE=cuda LLMQ_WINDOWS=400 step realquant_e2e bash tests/e2e/realquant.sh
  step synth_7b "$B/tests/make_synth_model" --out /tmp/s7b --preset 7b --tokenizer "$D/tokenizers/llama-spm" --quiet
  step synth_7b8 "$B/tests/make_synth_model" --out /tmp/s7b8 --preset 7b --layers 8 --tokenizer "$D/tokenizers/llama-spm" --quiet
  Q="$B/llmq-gptq --model /tmp/s7b8 --force --quiet --device cuda"
  $Q --method rtn --bits 4 --group 128 -o /tmp/s7b8-w4 > "$OUT/q4.log" 2>&1 &
  $Q --method rtn --bits 8 --group -1 -o /tmp/s7b8-w8 > "$OUT/q8.log" 2>&1 &
  $Q --method nf4 --format llmq -o /tmp/s7b8-nf4 > "$OUT/qnf4.log" 2>&1 &
  DEC="--text $WK --decode --device cuda --dtype f16 --quiet --prompt 128 --steps 64"
  TAIL=5 step decode7b_fp16_graph "$B/llmq-eval" --model /tmp/s7b $DEC --decode-batch 1,16,64
  TAIL=3 step decode7b_fp16_eager "$B/llmq-eval" --model /tmp/s7b $DEC --decode-batch 1,16 --no-graph
  wait; say "quantized: $(ls -d /tmp/s7b8-*)"
  for v in "fp16:/tmp/s7b8:" "w8a16:/tmp/s7b8-w8:--real" "w4a16:/tmp/s7b8-w4:--real" "nf4:/tmp/s7b8-nf4:--real"; do
    IFS=: read name dir flag <<< "$v"
    TAIL=6 step slice_${name}_graph "$B/llmq-eval" --model $dir $flag $DEC --decode-batch 1,4,16,64
    TAIL=3 step slice_${name}_eager "$B/llmq-eval" --model $dir $flag $DEC --decode-batch 1,16 --no-graph
  done
  exit 0
fi
# Llama-2-7B shapes, random fp16 weights; RTN checkpoints of it.
S7=/tmp/s7b
[ -f $S7/config.json ] || step synth_7b "$B/tests/make_synth_model" --out $S7 --preset 7b --tokenizer "$D/tokenizers/llama-spm" --quiet
[ -f $S7-w4/config.json ] || step rtn_w4g128 "$B/llmq-gptq" --model $S7 --method rtn --bits 4 --group 128 -o $S7-w4 --force --quiet --device cuda
[ -f $S7-w8/config.json ] || step rtn_w8 "$B/llmq-gptq" --model $S7 --method rtn --bits 8 --group -1 -o $S7-w8 --force --quiet --device cuda
[ -f $S7-nf4/config.json ] || step nf4 "$B/llmq-gptq" --model $S7 --method nf4 --format llmq -o $S7-nf4 --force --quiet --device cuda
DEC="--text $WK --decode --device cuda --dtype f16 --quiet"
TAIL=6 step decode_fp16 "$B/llmq-eval" --model $S7 $DEC --decode-batch 1,4,16,64 --prompt 128 --steps 64
TAIL=6 step decode_w8a16 "$B/llmq-eval" --model $S7-w8 --real $DEC --decode-batch 1,4,16,64 --prompt 128 --steps 64
TAIL=6 step decode_w4a16 "$B/llmq-eval" --model $S7-w4 --real $DEC --decode-batch 1,4,16,64 --prompt 128 --steps 64
TAIL=6 step decode_nf4 "$B/llmq-eval" --model $S7-nf4 --real $DEC --decode-batch 1,4,16,64 --prompt 128 --steps 64
# Long contexts, where the cache dominates the bytes a step reads.
# (--real on the float model: float weights with the real int8 cache.)
LONG="--decode-batch 16,64 --prompt 1024 --steps 32"
TAIL=4 step decode_fp16_long_kv_float "$B/llmq-eval" --model $S7 $DEC $LONG
TAIL=4 step decode_fp16_long_kv_int8 "$B/llmq-eval" --model $S7 --real --kv int8 $DEC $LONG
for kv in float int8; do
  TAIL=4 step decode_w4a16_long_kv_$kv "$B/llmq-eval" --model $S7-w4 --real --kv $kv $DEC $LONG
done
# Prefill: W8A8 vs fp16 end to end (llmq-eval tokens/s, ctx 2048).
PF="--text $WK --ctx 2048 --max-windows 32 --batch 4 --device cuda --dtype f16 --json --quiet"
step prefill_fp16 "$B/llmq-eval" --model $S7 $PF
step prefill_w8a8 "$B/llmq-eval" --model $S7 --real --w8a8 $PF
step prefill_w4a16 "$B/llmq-eval" --model $S7-w4 --real $PF
say "done"
