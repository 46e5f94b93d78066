# Perplexity of stories260K on WikiText-2 test, fp32 CPU, against Hugging
# Face transformers: 122.334 over 1591 windows of 512 (shared/data/README.md).
. "$(dirname "$0")/lib.sh"
out=$("$BUILD/llmq-eval" --model "$MODEL" --text "$DATA/text/wikitext2/wiki.test.raw" --ctx 512 --dtype f32 --device cpu --json)
echo "$out"
check_close ppl "$(echo "$out" | json_get ppl)" 122.334 0.01
check_eq windows "$(echo "$out" | json_get windows)" 1591
