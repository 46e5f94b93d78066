#!/usr/bin/env bash
# Regenerates the stories260K tables of docs/RESULTS.md (markdown on stdout):
# weight quantization (RTN, GPTQ, GPTQ + act-order, NF4 at 8/4/3 bits) and
# SmoothQuant W8A8 at several alphas, calibrated on calib.jsonl.zst and
# evaluated on eval.txt (ctx 512, fp32).
# usage: examples/results_stories260k.sh BUILD_DIR [cpu|cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
B=$1; DEV=${2:-auto}
M=tests/data/models/stories260K; T=tests/data/text/tinystories/eval.txt; C=tests/data/text/tinystories/calib.jsonl.zst
W=$(mktemp -d /tmp/llmq_results.XXXXXX); trap 'rm -rf "$W"' EXIT
ppl() { "$B/llmq-eval" --model "$1" --text $T --ctx 512 --device $DEV --dtype f32 --json "${@:2}" | sed -n 's/.*"ppl": \([0-9.]*\).*/\1/p'; }
gq() { local o=$1; shift; "$B/llmq-gptq" --model $M --format llmq --device $DEV --dtype f32 --quiet --force -o "$W/$o" "$@"; ppl "$W/$o"; }
cal="--data $C --samples 128 --seqlen 512"

echo "### Weight quantization (eval.txt, ctx 512, fp32; peer reference in brackets)"
echo
echo "| bits / group | RTN | GPTQ | GPTQ act-order + static groups | NF4 (block 64) | NF4 + double quant |"
echo "|---|---|---|---|---|---|"
echo "| fp32 | $(ppl $M) [7.21918] | | | | |"
echo "| 8 / per-channel | $(gq r8 --method rtn --bits 8 --group -1) [7.22317] | $(gq g8 $cal --bits 8 --group -1) [7.21876] | $(gq a8 $cal --bits 8 --group -1 --act-order) | | |"
echo "| 4 / 32 | $(gq r4 --method rtn --bits 4 --group 32) [8.15564] | $(gq g4 $cal --bits 4 --group 32) [7.92215] | $(gq a4 $cal --bits 4 --group 32 --act-order --static-groups) [7.77925] | $(gq n4 --method nf4) [8.05417] | $(gq n4d --method nf4 --nf4-double) |"
echo "| 4 / per-channel | $(gq r4c --method rtn --bits 4 --group -1) [8.64995] | $(gq g4c $cal --bits 4 --group -1) [7.97683] | $(gq a4c $cal --bits 4 --group -1 --act-order) | | |"
echo "| 3 / 32 | $(gq r3 --method rtn --bits 3 --group 32) [17.3111] | $(gq g3 $cal --bits 3 --group 32) [12.25029] | $(gq a3 $cal --bits 3 --group 32 --act-order --static-groups) | | |"
echo
echo "### SmoothQuant W8A8 fake quant (per-channel int8 weights, per-token dynamic int8 activations)"
echo
"$B/llmq-calib" --model $M --data $C --samples 538 --seqlen 512 --heldout 0 --device $DEV --dtype f32 --quiet -o "$W/all.st"
"$B/llmq-calib" --model $M --data $C --samples 538 --seqlen 512 --heldout 16 --device $DEV --dtype f32 --quiet -o "$W/held.st"
sm() { local o=$1 sc=$2; shift 2; "$B/llmq-smooth" --model $M --scales "$W/$sc" -o "$W/$o" --force --quiet "$@" > "$W/$o.txt"; ppl "$W/$o" --w8a8; }
echo "| smoothing (scales: 522 records, 16 held out for auto) | W8A8 PPL |"
echo "|---|---|"
echo "| none | $(ppl $M --w8a8) [7.20958] |"
for a in 0.25 0.5 0.75 0.85; do echo "| alpha $a | $(sm s$a held.st --alpha $a) |"; done
echo "| alpha auto (per layer and input, grid 0.05) | $(sm sauto held.st --alpha auto) |"
echo "| alpha 0.5 + v->o and up->down folds | $(sm sf held.st --alpha 0.5 --fold-vo --fold-ud) |"
echo "| alpha auto + v->o and up->down folds | $(sm saf held.st --alpha auto --fold-vo --fold-ud) |"
echo "| alpha 0.5, scales over all 538 records (the reference's setting) | $(sm sall all.st --alpha 0.5) [7.19399] |"
echo "| per-tensor static activation scales (no smoothing) | $(ppl $M --w8a8 per-tensor --act-scales $W/all.st) |"
echo
echo "Chosen alphas (auto):"
echo '```'
cat "$W/sauto.txt"
echo '```'
