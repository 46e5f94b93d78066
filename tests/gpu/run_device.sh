#!/usr/bin/env bash
# Everything the GPU machine checks and measures, in one session (see
# tests/gpu/README.md): the CUDA backend against the CPU reference, the CUDA
# forward against the CPU forward on a real model, perplexities on CUDA, the
# PyTorch cross-checks (activation scales via forward hooks on the Hugging
# Face model, the GPTQ solver against an independent PyTorch GPTQ, the GPTQ
# export round trip), and the benchmarks on a synthetic Llama-2-7B shape.
# usage: tests/gpu/run_device.sh BUILD_DIR OUT_DIR [quick]
# Results: OUT_DIR/summary.txt (and one log per step).
set -uo pipefail
B=$(realpath "$1"); OUT=$2; QUICK=${3:-}
mkdir -p "$OUT"
export LLMQ_TEST_DATA=$PWD/tests/data
D=$LLMQ_TEST_DATA; M=$D/models/stories260K; EV=$D/text/tinystories/eval.txt; WK=$D/text/wikitext2/wiki.test.raw
CAL=$D/text/tinystories/calib.jsonl; CALZ=$D/text/tinystories/calib.jsonl.zst
S=$OUT/summary.txt
: > "$S"
say() { echo "$*" | tee -a "$S"; }
step() { # name cmd...: run, keep the log, record pass/fail and the last lines
  local name=$1; shift
  local t0=$(date +%s.%N)
  "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  local t1=$(date +%s.%N)
  say "== $name: rc=$rc ($(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.1f", b-a}') s)"
  tail -n ${TAIL:-4} "$OUT/$name.log" | tee -a "$S"
}
say "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null) date: $(date -u +%F)"
[ -z "${SKIP_BACKEND:-}" ] && step backend_cuda "$B/tests/test_backend_cuda" $QUICK
step forward_cuda "$B/tests/test_forward_cuda" "$M" "$EV" 512 16
[ -x "$B/tests/test_gptq_cuda" ] && TAIL=14 step gptq_cuda_vs_cpu "$B/tests/test_gptq_cuda" $QUICK
for k in wna16 w8a8 nf4_gemv; do [ -x "$B/tests/test_$k" ] && TAIL=2 step kernel_$k "$B/tests/test_$k"; done
for dt in f16 f32 bf16; do
  step eval_tinystories_$dt "$B/llmq-eval" --model "$M" --text "$EV" --ctx 512 --device cuda --dtype $dt --json
done
step eval_wikitext_f16 "$B/llmq-eval" --model "$M" --text "$WK" --ctx 512 --device cuda --dtype f16 --json
step eval_w8a8_cuda "$B/llmq-eval" --model "$M" --text "$EV" --ctx 512 --device cuda --dtype f32 --w8a8 --json
step calib_cuda "$B/llmq-calib" --model "$M" --data "$CAL" --samples 538 --seqlen 512 --heldout 0 --device cuda --dtype f32 -o /tmp/act.safetensors --json
step act_scales_vs_torch python3 tests/gpu/check_act_scales.py "$M" "$CAL" /tmp/act.safetensors 512
# GPTQ solver vs an independent PyTorch GPTQ: synthetic problems plus real
# modules of stories260K (W and H as llmq-gptq saw them).
rm -rf /tmp/sd /tmp/gd; mkdir -p /tmp/sd
step gptq_stories_dump "$B/llmq-gptq" --model "$M" --data "$CALZ" --samples 128 --seqlen 512 --bits 4 --group 32 --format llmq -o /tmp/q_stories --force --device cuda --dtype f32 --dump /tmp/sd --quiet
step gptq_dump "$B/tests/gptq_dump" /tmp/gd /tmp/sd model.layers.0.self_attn.q_proj:64:64 model.layers.2.self_attn.o_proj:64:64 model.layers.3.mlp.gate_proj:172:64 model.layers.4.mlp.down_proj:64:172
TAIL=12 step gptq_vs_torch python3 tests/gpu/gptq_reference.py /tmp/gd
step eval_gptq_stories "$B/llmq-eval" --model /tmp/q_stories --text "$EV" --ctx 512 --device cuda --dtype f32 --json
# GPTQ export round trip on a model whose shapes pack (hidden 128, ffn 384).
"$B/tests/make_synth_model" --out /tmp/tiny --quiet > /dev/null 2>&1
i=0
for cfg in "--bits 4 --group 128 --act-order --static-groups" "--bits 4 --group 32 --asym" "--bits 8 --group -1" "--bits 3 --group 32"; do
  i=$((i+1)); rm -rf /tmp/rt$i; mkdir -p /tmp/rt$i
  "$B/llmq-gptq" --model /tmp/tiny --data "$CALZ" --samples 32 --seqlen 256 $cfg -o /tmp/tiny_q$i --force --device cuda --dump /tmp/rt$i --quiet > "$OUT/roundtrip_$i.gptq.log" 2>&1
  step roundtrip_$i python3 tests/gpu/check_gptq_roundtrip.py /tmp/tiny_q$i /tmp/rt$i
done
[ -n "$QUICK" ] && exit 0
# Llama-2-7B shape, random fp16 weights, the Llama-2 tokenizer.
step synth_7b "$B/tests/make_synth_model" --out /tmp/s7b --preset 7b --tokenizer "$D/tokenizers/llama-spm" --quiet
for dt in f16 bf16; do TAIL=6 step bench_forward_$dt "$B/tests/bench_forward" /tmp/s7b 2048 4 5 $dt; done
step eval_7b_f16 "$B/llmq-eval" --model /tmp/s7b --text "$WK" --ctx 2048 --max-windows 32 --batch 4 --device cuda --dtype f16 --json
# Calibration statistics overhead: 512 x 512 tokens through calib vs eval.
step calib_7b "$B/llmq-calib" --model /tmp/s7b --data "$WK" --windows --samples 512 --seqlen 512 --heldout 0 --device cuda --dtype f16 -o /tmp/act7b.safetensors --json
step eval_7b_512x512 "$B/llmq-eval" --model /tmp/s7b --text "$WK" --ctx 512 --max-windows 512 --batch 32 --device cuda --dtype f16 --json
# GPTQ end to end on the 7B shape: 128 x 2048 calibration tokens, 4-bit g128,
# act-order + static groups, GPTQ v1 export; wall time and its split.
TAIL=3 step gptq_7b "$B/llmq-gptq" --model /tmp/s7b --data "$WK" --samples 128 --seqlen 2048 --bits 4 --group 128 --act-order --static-groups --device cuda --dtype f16 -o /tmp/s7b_gptq --force
du -sh /tmp/s7b_gptq | tee -a "$S"
[ -n "${RESULTS:-}" ] && { examples/results_stories260k.sh "$B" cuda > "$OUT/results.md" 2>"$OUT/results.err"; say "results: rc=$?"; }
say "done"
