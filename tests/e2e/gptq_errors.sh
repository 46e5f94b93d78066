# llmq-gptq refuses what it cannot do before any work, with the reason, and
# leaves no output directory behind.
. "$(dirname "$0")/lib.sh"
GPTQ="$BUILD/llmq-gptq"; CAL="$DATA/text/tinystories/calib.jsonl.zst"
gone() { if [ -e "$1" ]; then echo "FAIL $1 exists after a refused run"; exit 1; fi; }
expect_fail unfit_shapes "model.layers.0.mlp.down_proj" "$GPTQ" --model "$MODEL" --method rtn --bits 4 --group 32 -o "$TMP/o1"
gone "$TMP/o1"
expect_fail bits5_gptq "2, 3, 4 or 8" "$GPTQ" --model "$MODEL" --method rtn --bits 5 --group 32 --format gptq --skip-unfit -o "$TMP/o2"
gone "$TMP/o2"
expect_fail asym_v1 "gptq_v2" "$GPTQ" --model "$MODEL" --method rtn --bits 4 --asym --format gptq -o "$TMP/o3"
expect_fail nf4_gptq "NF4" "$GPTQ" --model "$MODEL" --method nf4 --format gptq -o "$TMP/o4"
expect_fail gptq_needs_data "needs calibration data" "$GPTQ" --model "$MODEL" --bits 4 -o "$TMP/o5"
mkdir -p "$TMP/full"; touch "$TMP/full/keep"
expect_fail nonempty_out "not empty" "$GPTQ" --model "$MODEL" --method rtn --format llmq -o "$TMP/full"
[ -f "$TMP/full/keep" ] && echo "ok   existing OUTDIR untouched"
printf '{"text": "Once upon a time"}\n{"text": 3}\n' > "$TMP/bad.jsonl"
expect_fail bad_corpus "line 2" "$GPTQ" --model "$MODEL" --data "$TMP/bad.jsonl" --samples 4 --seqlen 64 --format llmq --device cpu -o "$TMP/o6"
gone "$TMP/o6"
# With --skip-unfit the GPTQ export keeps the FFN in float and says so.
"$GPTQ" --model "$MODEL" --method rtn --bits 4 --group 32 --skip-unfit -o "$TMP/skip" --quiet

python3 - "$TMP/skip" <<'PY'
import json, sys
d = sys.argv[1]
q = json.load(open(d + "/config.json"))["quantization_config"]
assert q["quant_method"] == "gptq" and q["bits"] == 4 and q["group_size"] == 32 and q["sym"] is True, q
assert q["desc_act"] is False and q["checkpoint_format"] == "gptq", q
assert "-:^model\\.layers\\.0\\.mlp\\.down_proj$" in q["dynamic"], q["dynamic"]
assert json.load(open(d + "/quantize_config.json"))["bits"] == 4
print("ok   quantization_config with every field and the dynamic skip rules; quantize_config.json")
PY
# --json: one parseable summary on stdout.
"$GPTQ" --model "$MODEL" --method rtn --bits 4 --group 32 --skip-unfit -o "$TMP/js" --quiet --json > "$TMP/js.json"
python3 -c "
import json, sys
d = json.load(open('$TMP/js.json'))
assert d['modules'] == 20 and d['skipped'] == 15 and d['format'] == 'gptq' and d['seconds'] >= 0, d
print('ok   --json summary:', d['modules'], 'modules,', d['skipped'], 'kept in float')"
