# Bad input to llmq-eval: each a clear message and a non-zero exit, no crash.
. "$(dirname "$0")/lib.sh"
EVAL="$BUILD/llmq-eval"
TEXT="$DATA/text/tinystories/eval.txt"
expect_fail missing_model "nowhere/config.json" "$EVAL" --model "$TMP/nowhere" --text "$TEXT" --device cpu
expect_fail missing_text "no_such.txt" "$EVAL" --model "$MODEL" --text "$TMP/no_such.txt" --device cpu
expect_fail bad_option "unknown option" "$EVAL" --model "$MODEL" --text "$TEXT" --frobnicate
expect_fail bad_ctx "--ctx" "$EVAL" --model "$MODEL" --text "$TEXT" --ctx zero

# A model directory whose safetensors file is cut short.
mkdir -p "$TMP/trunc"
cp "$MODEL"/*.json "$TMP/trunc/"
head -c 500000 "$MODEL/model.safetensors" > "$TMP/trunc/model.safetensors"
expect_fail truncated_weights "model.safetensors" "$EVAL" --model "$TMP/trunc" --text "$TEXT" --device cpu

# A weight with the wrong shape: a config that claims a larger hidden size.
mkdir -p "$TMP/shape"
cp "$MODEL"/* "$TMP/shape/"
sed -i 's/"intermediate_size": 172/"intermediate_size": 176/' "$TMP/shape/config.json"
expect_fail shape_mismatch "gate_proj.weight' has shape" "$EVAL" --model "$TMP/shape" --text "$TEXT" --device cpu

# Broken JSON in config.json.
mkdir -p "$TMP/json"
cp "$MODEL"/* "$TMP/json/"
printf '{"model_type": "llama", ' > "$TMP/json/config.json"
expect_fail broken_config "invalid JSON" "$EVAL" --model "$TMP/json" --text "$TEXT" --device cpu

# A jsonl eval text with a malformed line 2.
printf '{"text": "Once upon a time"}\n{"text": oops}\n' > "$TMP/bad.jsonl"
expect_fail bad_jsonl "line 2" "$EVAL" --model "$MODEL" --text "$TMP/bad.jsonl" --device cpu

# NaN weights: the perplexity is refused, not printed.
mkdir -p "$TMP/nan"
cp "$MODEL"/* "$TMP/nan/"
python3 - "$TMP/nan/model.safetensors" <<'PY' || { echo "skip nan case: python3 missing"; exit 0; }
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
off = h['model.norm.weight']['data_offsets'][0] + 8 + n
b[off:off + 4] = struct.pack('<f', float('nan'))
open(p, 'wb').write(b)
PY
expect_fail nan_weights "not finite" "$EVAL" --model "$TMP/nan" --text "$TEXT" --device cpu --max-windows 2
