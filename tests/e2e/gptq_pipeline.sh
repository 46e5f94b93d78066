# calib corpus -> llmq-gptq -> llmq-eval on stories260K (CPU), against the
# GPTQ reference implementation's numbers (shared/data/README.md: 128 random
# windows of 512 tokens of calib.jsonl joined by blank lines, damp 0.01,
# block 128). GPTQ depends on the sampled windows, so the bound is 1.5%
# (the issue's), and GPTQ must beat RTN. RTN and NF4 exports are
# deterministic: 2e-3 of the reference. Also: the same inputs and seed give
# the same bytes.
. "$(dirname "$0")/lib.sh"
GPTQ="$BUILD/llmq-gptq"; EVAL="$BUILD/llmq-eval"
TEXT="$DATA/text/tinystories/eval.txt"; CAL="$DATA/text/tinystories/calib.jsonl.zst"
ppl() { "$EVAL" --model "$1" --text "$TEXT" --ctx 512 --device cpu --json | json_get ppl; }
rel() { awk -v e="$1" -v r="$2" 'BEGIN { print e * r }'; }
lt() { if awk -v a="$2" -v b="$3" 'BEGIN { exit !(a < b) }'; then echo "ok   $1: $2 < $3"; else echo "FAIL $1: $2 >= $3"; exit 1; fi; }
q() { local out=$1; shift; "$GPTQ" --model "$MODEL" --format llmq --device cpu --quiet -o "$TMP/$out" "$@"; }

q rtn4 --method rtn --bits 4 --group 32
rtn4=$(ppl "$TMP/rtn4");  check_close rtn_w4_g32_export "$rtn4" 8.15564 "$(rel 8.15564 2e-3)"
q nf4 --method nf4
v=$(ppl "$TMP/nf4");      check_close nf4_export "$v" 8.05417 "$(rel 8.05417 2e-3)"
q g4 --data "$CAL" --samples 128 --seqlen 512 --bits 4 --group 32
g4=$(ppl "$TMP/g4");      check_close gptq_w4_g32 "$g4" 7.92215 "$(rel 7.92215 0.015)"; lt gptq_beats_rtn_w4 "$g4" "$rtn4"
q g4b --data "$CAL" --samples 128 --seqlen 512 --bits 4 --group 32
cmp "$TMP/g4/model.safetensors" "$TMP/g4b/model.safetensors" && echo "ok   deterministic: identical bytes"
q g4ao --data "$CAL" --samples 128 --seqlen 512 --bits 4 --group 32 --act-order --static-groups
v=$(ppl "$TMP/g4ao");     check_close gptq_w4_g32_actorder_static "$v" 7.77925 "$(rel 7.77925 0.015)"
# At 3 bits one run swings by about +-2% with the sampled windows (seeds 0-3
# span 11.9 to 12.4 here): compare the mean of four seeds with the reference.
sum=0
for seed in 0 1 2 3; do
  q g3s$seed --data "$CAL" --samples 128 --seqlen 512 --bits 3 --group 32 --seed $seed
  v=$(ppl "$TMP/g3s$seed"); echo "     gptq_w3_g32 seed $seed: $v"; lt gptq_beats_rtn_w3_seed$seed "$v" 17.3111
  sum=$(awk -v a="$sum" -v b="$v" 'BEGIN { print a + b }')
done
check_close gptq_w3_g32_mean_of_4_seeds "$(awk -v s="$sum" 'BEGIN { print s / 4 }')" 12.25029 "$(rel 12.25029 0.015)"
head -3 "$TMP/g3s0/quant_log.csv"
