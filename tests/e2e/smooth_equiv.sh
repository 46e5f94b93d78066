# SmoothQuant folds are exact in float: the perplexity of the smoothed
# stories260K (alpha 0.5; with the v->o and up->down folds; --alpha auto)
# equals the original's to 1e-4 relative, fp32 on the CPU. Statistics from
# llmq-calib over the 538 calib.jsonl records, truncated to 512 tokens.
. "$(dirname "$0")/lib.sh"
SMOOTH="$BUILD/llmq-smooth"
EVAL_ARGS=(--text "$DATA/text/tinystories/eval.txt" --ctx 512 --max-windows 40 --dtype f32 --device cpu --json --quiet)

# check_rel NAME VALUE EXPECTED RTOL  (relative tolerance)
check_rel() {
  if awk -v v="$2" -v e="$3" -v t="$4" 'BEGIN { d = (v - e) / e; if (d < 0) d = -d; exit !(d <= t) }'; then
    echo "ok   $1 = $2 (expected $3, relative tolerance $4)"
  else
    echo "FAIL $1 = $2 (expected $3, relative tolerance $4)"; exit 1
  fi
}

"$BUILD/llmq-calib" --model "$MODEL" --data "$DATA/text/tinystories/calib.jsonl" --samples 538 --seqlen 512 \
  -o "$TMP/act.safetensors" --device cpu --quiet

ref=$("$BUILD/llmq-eval" --model "$MODEL" "${EVAL_ARGS[@]}")
echo "original: $ref"
ref_ppl=$(echo "$ref" | json_get ppl)
ref_windows=$(echo "$ref" | json_get windows)
check_eq windows "$ref_windows" 40

run_case() { # name, llmq-smooth options...
  local name=$1; shift
  "$SMOOTH" --model "$MODEL" --scales "$TMP/act.safetensors" -o "$TMP/$name" --quiet "$@" | tee "$TMP/$name.stdout"
  # A complete directory: the side files byte for byte, new weights.
  for f in config.json tokenizer.json tokenizer_config.json; do
    cmp -s "$MODEL/$f" "$TMP/$name/$f" || { echo "FAIL $name: $f differs from the input"; exit 1; }
  done
  if cmp -s "$MODEL/model.safetensors" "$TMP/$name/model.safetensors"; then
    echo "FAIL $name: weights unchanged"; exit 1
  fi
  head -c 4096 "$TMP/$name/model.safetensors" | grep -aq '"llmq_smooth_alpha"' ||
    { echo "FAIL $name: no llmq_smooth_alpha in __metadata__"; exit 1; }
  local out
  out=$("$BUILD/llmq-eval" --model "$TMP/$name" "${EVAL_ARGS[@]}")
  echo "$name: $out"
  check_eq "$name windows" "$(echo "$out" | json_get windows)" "$ref_windows"
  check_rel "$name ppl" "$(echo "$out" | json_get ppl)" "$ref_ppl" 1e-4
}

run_case alpha05 --alpha 0.5
run_case alpha05_folds --alpha 0.5 --fold-vo --fold-ud
run_case auto_folds --alpha auto --fold-vo --fold-ud
# --alpha auto prints the held-out loss of each of the 22 candidates, then
# one row per layer (header + 5) with a column per group.
check_eq "auto candidates" "$(grep -c -E '^  (per-layer choice|alpha [01]\.[0-9][0-9]) ' "$TMP/auto_folds.stdout")" 22
check_eq "auto table rows" "$(sed -n '/^layer/,$p' "$TMP/auto_folds.stdout" | wc -l | tr -d ' ')" 6
head -c 8192 "$TMP/auto_folds/model.safetensors" | grep -aq '"llmq_smooth_alphas"' ||
  { echo "FAIL auto: no llmq_smooth_alphas in __metadata__"; exit 1; }
