#!/usr/bin/env bash
# W8A8 with the prefill rescale deferred into its readers (o_proj -> add +
# RMSNorm, gate/up -> SiLU*up), on the GPU machine, from the repository root:
# test_w8a8 (the _acc producers bit for bit against rescale + producer),
# real vs fake quant on stories260K, then prefill and decode of an 8-layer
# slice of the 7B shape, interleaved with a build from before the change
# (OLD_EVAL, an llmq-eval binary) when given.
# usage: tests/gpu/w8a8_prefill_device.sh BIN_DIR OUT_DIR [OLD_EVAL]
B=$1; O=$2; OLD=${3:-}; mkdir -p "$O"
$B/tests/test_w8a8 > $O/test_w8a8.log 2>&1; echo "test_w8a8 rc=$? $(tail -n 1 $O/test_w8a8.log)"
grep -E "^FAIL" $O/test_w8a8.log | head -n 5; grep -c "_acc" $O/test_w8a8.log | sed 's/^/acc checks: /'
LLMQ_TEST_DATA=$PWD/tests/data LLMQ_BUILD=$B LLMQ_DEVICE=cuda LLMQ_WINDOWS=400 bash tests/e2e/realquant.sh > $O/e2e.log 2>&1
echo "e2e rc=$? ok=$(grep -c '^ok' $O/e2e.log) FAIL=$(grep -c '^FAIL' $O/e2e.log)"; grep -E "^FAIL|w8a8" $O/e2e.log | head -n 6
$B/tests/make_synth_model --out /tmp/s7b8 --preset 7b --layers 8 --tokenizer tests/data/tokenizers/llama-spm --quiet
PF="--text tests/data/text/wikitext2/wiki.test.raw --ctx 2048 --max-windows 32 --batch 4 --device cuda --dtype f16 --json --quiet"
for rep in 1 2; do
  echo "prefill fp16 $rep: $($B/llmq-eval --model /tmp/s7b8 $PF | grep -o '"ppl": [0-9.]*\|"tokens_per_s": [0-9.]*' | tr '\n' ' ')"
  for v in new old; do
    E=$B/llmq-eval; [ $v = old ] && E=$OLD; [ -z "$E" ] && continue
    echo "prefill w8a8 $v $rep: $($E --model /tmp/s7b8 --real --w8a8 $PF | grep -o '"ppl": [0-9.]*\|"tokens_per_s": [0-9.]*' | tr '\n' ' ')"
  done
done
DEC="--text tests/data/text/wikitext2/wiki.test.raw --decode --device cuda --dtype f16 --quiet --prompt 128 --steps 32 --decode-batch 1,16,64"
for v in new old; do
  E=$B/llmq-eval; [ $v = old ] && E=$OLD; [ -z "$E" ] && continue
  echo "decode w8a8 $v: $($E --model /tmp/s7b8 --real --w8a8 $DEC | awk '$1 ~ /^[0-9]+$/ {printf "b%s %s t/s prefill %s ppl %s; ", $1, $2, $6, $8}')"
done
