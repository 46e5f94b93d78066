# The W4A16 decode kernels through the model runner, on shapes they take
# (stories260K's K = 64 is one chunk: no slice kernel there). A synthetic
# Llama (random weights, hidden 1024, ffn 2816, 2 layers, the 32000-token
# tokenizer) quantized by GPTQ 4-bit g128 twice: with static groups, and
# with act-order whose groups follow the Hessian order (g_idx not sorted:
# the kernels read x through the repack's row order); and NF4 (blocks of
# 64, double-quantized: on compute capability 9.0 the slice kernel at every
# batch, through a table of codebook pairs). For each:
#   - real == fake perplexity within 0.1 % (windows of 161 tokens; the
#     prefill runs dequantize + cuBLAS);
#   - decoding B sequences one token per step through the KV cache scores
#     the text like B windows: B = 1 (stream kernel; act-order: slice),
#     4 (slice kernel, 8-row blocks; act-order: x gathered at staging),
#     16 and 40 (16-row blocks; act-order: x sorted into the model's
#     scratch first); NF4 takes the slice kernel at every batch.
# A random model's perplexity is large (~1e4); the comparisons are relative.
# GPU only: usage LLMQ_BUILD=... LLMQ_TEST_DATA=... bash tests/gpu/realquant_slice.sh
. "$(dirname "$0")/../e2e/lib.sh"
TEXT="$DATA/text/tinystories/eval.txt"
CAL="$DATA/text/tinystories/calib.jsonl"
EVAL="$BUILD/llmq-eval"
"$BUILD/tests/make_synth_model" --out "$TMP/m" --hidden 1024 --layers 2 --heads 8 --kv-heads 8 --ffn 2816 \
  --tokenizer "$DATA/tokenizers/llama-spm" --quiet
q() { "$BUILD/llmq-gptq" --model "$TMP/m" --data "$CAL" --samples 16 --seqlen 512 --bits 4 --group 128 \
  --device cuda --quiet "$@"; }
q -o "$TMP/static"
q --act-order --no-static-groups -o "$TMP/act"
"$BUILD/llmq-gptq" --model "$TMP/m" --method nf4 --format llmq --device cuda --quiet -o "$TMP/nf4"
win() { local n=$1; shift; "$EVAL" --text "$TEXT" --ctx 161 --max-windows "$n" --device cuda --dtype f16 --json \
  --quiet "$@" | json_get ppl; }
dec() { local n=$1; shift; "$EVAL" --text "$TEXT" --decode --decode-batch "$n" --prompt 100 --steps 60 \
  --device cuda --dtype f16 --json --quiet "$@" | json_get ppl; }
for m in static act nf4; do
  f=$(win 40 --model "$TMP/$m")
  r=$(win 40 --model "$TMP/$m" --real)
  check_close "real_vs_fake ($m)" "$r" "$f" "$(awk -v e="$f" 'BEGIN { print e * 1e-3 }')"
  for n in 1 4 16 40; do
    w=$(win "$n" --model "$TMP/$m" --real)
    d=$(dec "$n" --model "$TMP/$m" --real)
    check_close "decode_vs_window ($m, batch $n)" "$d" "$w" "$(awk -v e="$w" 'BEGIN { print e * 1e-3 }')"
  done
done
