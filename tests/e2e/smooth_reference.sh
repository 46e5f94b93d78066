# SmoothQuant as published, on stories260K: abs-max statistics over all 538
# calib.jsonl records (each with BOS, truncated to 512 tokens), alpha 0.5,
# then W8A8 fake quant (per-channel int8 weights, per-token int8
# activations): the SmoothQuant method in PyTorch gives 7.19399
# (shared/data/README.md); within 2e-3 relative. Smoothing must not be worse
# than none (7.20958).
. "$(dirname "$0")/lib.sh"
"$BUILD/llmq-calib" --model "$MODEL" --data "$DATA/text/tinystories/calib.jsonl" --samples 538 --seqlen 512 \
  --heldout 0 --device cpu --quiet -o "$TMP/act.safetensors"
"$BUILD/llmq-smooth" --model "$MODEL" --scales "$TMP/act.safetensors" --alpha 0.5 -o "$TMP/smoothed" --quiet
v=$("$BUILD/llmq-eval" --model "$TMP/smoothed" --text "$DATA/text/tinystories/eval.txt" --ctx 512 --device cpu \
  --w8a8 --json --quiet | json_get ppl)
check_close smoothquant_w8a8_alpha05 "$v" 7.19399 "$(awk 'BEGIN { print 7.19399 * 2e-3 }')"
awk -v v="$v" 'BEGIN { exit !(v <= 7.20958 * 1.0001) }' && echo "ok   smoothing ($v) is not worse than none (7.20958)"
