# Bad input to llmq-smooth: each a clear message and a non-zero exit, and
# no output directory (nor its temporary) left behind.
. "$(dirname "$0")/lib.sh"
SMOOTH="$BUILD/llmq-smooth"
OUT="$TMP/smoothed" # not $TMP/out: expect_fail keeps stdout there

# expect_fail, then: nothing named out or out.* was created.
expect_fail_clean() {
  expect_fail "$@"
  if [ -e "$OUT" ] || compgen -G "$OUT.*" >/dev/null; then
    echo "FAIL $1: left $(ls -d "$OUT"* | tr '\n' ' ')"; exit 1
  fi
}

# expect_usage NAME PATTERN cmd...: a usage error, exit status 2.
expect_usage() {
  local name=$1; shift
  expect_fail_clean "$name" "$@"
  set +e; "${@:2}" >/dev/null 2>&1; local rc=$?; set -e
  [ $rc -eq 2 ] || { echo "FAIL $name: exit $rc, expected 2 (usage error)"; exit 1; }
}

# act-scales files (docs/ACT_SCALES.md) for a model of the given sizes; all
# maxima 1, optionally with held-out activations.
make_scales() { # path hidden q_dim ffn layers heldout(0|1)
  python3 - "$@" <<'PY'
import json, struct, sys
path, hidden, qd, ffn, layers, heldout = sys.argv[1], *map(int, sys.argv[2:])
ins = {'self_attn.q_proj': hidden, 'self_attn.k_proj': hidden, 'self_attn.v_proj': hidden,
       'self_attn.o_proj': qd, 'mlp.gate_proj': hidden, 'mlp.up_proj': hidden, 'mlp.down_proj': ffn}
hdr, blobs, off = {'__metadata__': {'format': 'llmq-act-scales'}}, [], 0
def add(name, dtype, shape, data):
    global off
    hdr[name] = {'dtype': dtype, 'shape': shape, 'data_offsets': [off, off + len(data)]}
    blobs.append(data); off += len(data)
for i in range(layers):
    for k, n in ins.items():
        add('model.layers.%d.%s' % (i, k), 'F32', [n], struct.pack('<%df' % n, *[1.0] * n))
    for g, n in (('qkv', hidden), ('o', qd), ('gateup', hidden), ('down', ffn)):
        if heldout:
            add('model.layers.%d.heldout.%s' % (i, g), 'F16', [4, n], struct.pack('<%de' % (4 * n), *[0.5] * (4 * n)))
h = json.dumps(hdr).encode()
h += b' ' * (-len(h) % 8)
open(path, 'wb').write(struct.pack('<Q', len(h)) + h + b''.join(blobs))
PY
}

command -v python3 >/dev/null || { echo "skip: python3 missing"; exit 0; }
make_scales "$TMP/good.safetensors" 64 64 172 5 0
make_scales "$TMP/other_model.safetensors" 32 32 86 5 0
make_scales "$TMP/three_layers.safetensors" 64 64 172 3 0
make_scales "$TMP/seven_layers.safetensors" 64 64 172 7 0

run() { "$SMOOTH" --model "$MODEL" -o "$OUT" "$@"; }

# Scales from another model: names or shapes differ.
expect_fail_clean other_model "self_attn.q_proj' has shape" run --scales "$TMP/other_model.safetensors" --alpha 0.5
expect_fail_clean fewer_layers "model.layers.3.self_attn.q_proj" run --scales "$TMP/three_layers.safetensors" --alpha 0.5
expect_fail_clean more_layers "model has 5 layers" run --scales "$TMP/seven_layers.safetensors" --alpha 0.5
expect_fail_clean not_scales "no activation statistics" run --scales "$MODEL/model.safetensors" --alpha 0.5
expect_fail_clean auto_no_heldout "heldout" run --scales "$TMP/good.safetensors" --alpha auto

# alpha outside [0, 1] or not a number: usage errors.
expect_usage alpha_2 "--alpha" run --scales "$TMP/good.safetensors" --alpha 2
expect_usage alpha_negative "--alpha" run --scales "$TMP/good.safetensors" --alpha -0.5
expect_usage alpha_word "--alpha" run --scales "$TMP/good.safetensors" --alpha half
expect_usage no_output "required" "$SMOOTH" --model "$MODEL" --scales "$TMP/good.safetensors" --alpha 0.5
expect_usage bad_option "unknown option" run --scales "$TMP/good.safetensors" --alpha 0.5 --frobnicate

# Missing files.
expect_fail_clean missing_scales "no_such.safetensors" run --scales "$TMP/no_such.safetensors" --alpha 0.5
expect_fail_clean missing_model "nowhere" "$SMOOTH" --model "$TMP/nowhere" --scales "$TMP/good.safetensors" \
  --alpha 0.5 -o "$OUT"

# A non-empty OUTDIR needs --force; the model directory itself is refused.
mkdir -p "$OUT" && echo keep > "$OUT/keep.txt"
expect_fail not_empty "not empty" run --scales "$TMP/good.safetensors" --alpha 0.5
[ "$(cat "$OUT/keep.txt")" = keep ] || { echo "FAIL not_empty: OUTDIR was modified"; exit 1; }
rm -rf "$OUT"
expect_fail into_model "input model directory" "$SMOOTH" --model "$MODEL" --scales "$TMP/good.safetensors" \
  --alpha 0.5 -o "$MODEL" --force
[ -f "$MODEL/model.safetensors" ] && [ -f "$MODEL/config.json" ] || { echo "FAIL into_model: model damaged"; exit 1; }

# And the good file works (so the failures above were the inputs' fault).
run --scales "$TMP/good.safetensors" --alpha 0.5 --quiet
[ -f "$OUT/model.safetensors" ] && echo "ok   good scales: wrote $OUT"
