# The GPTQ layouts read back by llmq-eval (dequantized into the float path),
# and the GPTQ options the pipeline test does not cover.
. "$(dirname "$0")/lib.sh"
GPTQ="$BUILD/llmq-gptq"; CAL="$DATA/text/tinystories/calib.jsonl.zst"
ppl() { "$BUILD/llmq-eval" --model "$1" --text "$DATA/text/tinystories/eval.txt" --ctx 512 --max-windows 100 \
  --device cpu --json --quiet | json_get ppl; }
between() { if awk -v v="$2" -v a="$3" -v b="$4" 'BEGIN { exit !(v > a && v < b) }'; then echo "ok   $1: $3 < $2 < $4";
  else echo "FAIL $1: $2 not in ($3, $4)"; exit 1; fi; }
fp=$(ppl "$MODEL")
"$GPTQ" --model "$MODEL" --method rtn --bits 4 --group 32 -o "$TMP/all" --format llmq --quiet
all=$(ppl "$TMP/all")
# GPTQ v1 with the FFN kept in float (its width 172 does not pack): attention only.
"$GPTQ" --model "$MODEL" --method rtn --bits 4 --group 32 --skip-unfit -o "$TMP/v1" --quiet
between gptq_v1_attention_only "$(ppl "$TMP/v1")" "$fp" "$all"
# Asymmetric grids go to gptq_v2 (exact zeros) by default.
"$GPTQ" --model "$MODEL" --method rtn --bits 4 --group 32 --asym --skip-unfit -o "$TMP/v2" --quiet
grep -q '"checkpoint_format":[[:space:]]*"gptq_v2"' "$TMP/v2/config.json" && echo "ok   asym -> gptq_v2"
between gptq_v2_asym_attention_only "$(ppl "$TMP/v2")" "$fp" "$all"
# 2-bit, and true-sequential GPTQ with act-order (dynamic groups, g_idx in the file).
"$GPTQ" --model "$MODEL" --data "$CAL" --samples 32 --seqlen 256 --bits 2 --group 32 --format llmq -o "$TMP/w2" --device cpu --quiet
between gptq_w2_g32 "$(ppl "$TMP/w2")" "$all" 1000
"$GPTQ" --model "$MODEL" --data "$CAL" --samples 32 --seqlen 256 --bits 4 --group 32 --act-order --no-static-groups \
  --true-sequential --format llmq -o "$TMP/ts" --device cpu --quiet
python3 - "$TMP/ts/model.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
assert 'model.layers.0.self_attn.q_proj.g_idx' in h, 'act-order without static groups must store g_idx'
print('ok   g_idx stored for act-order with dynamic groups')
PY
between gptq_true_sequential_actorder "$(ppl "$TMP/ts")" "$fp" "$all"
