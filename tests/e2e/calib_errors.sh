# llmq-calib on bad corpora: a clear message naming the file and line, a
# non-zero exit, and no output file.
. "$(dirname "$0")/lib.sh"
CALIB="$BUILD/llmq-calib"
run() { "$CALIB" --model "$MODEL" --device cpu --samples 8 --seqlen 64 --quiet -o "$TMP/act.safetensors" "$@"; }
gone() { if [ -e "$TMP/act.safetensors" ]; then echo "FAIL output written"; exit 1; fi; }
printf '{"text": "a"}\n{"text": "b"}\n{"text": "c" oops}\n' > "$TMP/badjson.jsonl"
expect_fail invalid_json "badjson.jsonl: line 3" run --data "$TMP/badjson.jsonl"; gone
printf '{"text": "a"}\n{"body": "b"}\n' > "$TMP/nofield.jsonl"
expect_fail missing_field "no string field 'text'" run --data "$TMP/nofield.jsonl"; gone
: > "$TMP/empty.jsonl"
expect_fail empty_corpus "no records" run --data "$TMP/empty.jsonl"; gone
expect_fail missing_corpus "nothere.jsonl" run --data "$TMP/nothere.jsonl"; gone
head -c 5000 "$DATA/text/tinystories/calib.jsonl.zst" > "$TMP/cut.jsonl.zst"
expect_fail truncated_zstd "truncated zstd" run --data "$TMP/cut.jsonl.zst"; gone
expect_fail heldout_all "leaves no sample" run --data "$DATA/text/tinystories/calib.jsonl" --heldout 8; gone
# A good run for contrast: the file exists and records its provenance.
run --data "$DATA/text/tinystories/calib.jsonl.zst" --heldout 2
python3 -c "
import json,struct,sys
b=open('$TMP/act.safetensors','rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); m=h['__metadata__']
assert m['samples']=='8' and m['seqlen']=='64' and m['heldout_samples']=='2' and m['format']=='llmq-act-scales', m
assert h['model.layers.4.mlp.down_proj']['shape']==[172] and h['model.layers.0.heldout.qkv']['dtype']=='F16'
print('ok   act_scales metadata and tensors')"
