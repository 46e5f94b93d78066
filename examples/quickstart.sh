#!/usr/bin/env bash
# The main job on the small model shipped in tests/data (stories260K):
# perplexity of the float model, calibration statistics, SmoothQuant W8A8,
# GPTQ 4-bit, each evaluated with the GPTQ-paper protocol.
# usage: examples/quickstart.sh [BUILD_DIR]   (runs on the GPU when there is one)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
M=tests/data/models/stories260K
EVAL_TEXT=tests/data/text/tinystories/eval.txt
CALIB=tests/data/text/tinystories/calib.jsonl.zst
OUT=${OUT:-/tmp/llmq-quickstart}
mkdir -p "$OUT"

echo "== fp32 perplexity (Hugging Face transformers gives 7.21918)"
"$B/llmq-eval" --model $M --text $EVAL_TEXT --ctx 512 --dtype f32

echo "== activation statistics over the calibration corpus, with the outlier report"
"$B/llmq-calib" --model $M --data $CALIB --samples 538 --seqlen 512 --heldout 0 --dtype f32 \
    -o "$OUT/act_scales.safetensors" --report | head -8

echo "== W8A8 fake quant, before and after SmoothQuant (alpha 0.5)"
"$B/llmq-eval" --model $M --text $EVAL_TEXT --ctx 512 --dtype f32 --w8a8
"$B/llmq-smooth" --model $M --scales "$OUT/act_scales.safetensors" --alpha 0.5 -o "$OUT/smoothed" --force
"$B/llmq-eval" --model "$OUT/smoothed" --text $EVAL_TEXT --ctx 512 --dtype f32 --w8a8

echo "== GPTQ 4-bit, group 32, act-order + static groups (llmq layout: FFN width 172 does not pack as GPTQ)"
"$B/llmq-gptq" --model $M --data $CALIB --samples 128 --seqlen 512 --bits 4 --group 32 \
    --act-order --format llmq -o "$OUT/gptq-w4g32" --force --dtype f32
"$B/llmq-eval" --model "$OUT/gptq-w4g32" --text $EVAL_TEXT --ctx 512 --dtype f32
echo "outputs in $OUT"
