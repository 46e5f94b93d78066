# Perplexity of stories260K on the TinyStories eval text, fp32 on the CPU,
# against Hugging Face transformers: 7.21918, 395 windows (shared/data/README.md).
. "$(dirname "$0")/lib.sh"
out=$("$BUILD/llmq-eval" --model "$MODEL" --text "$DATA/text/tinystories/eval.txt" --ctx 512 --dtype f32 --device cpu --json)
echo "$out"
check_close ppl "$(echo "$out" | json_get ppl)" 7.21918 0.0005
check_eq windows "$(echo "$out" | json_get windows)" 395
check_eq tokens "$(echo "$out" | json_get tokens)" 201845
