# Fake-quant perplexities of stories260K (ctx 512, fp32, TinyStories eval)
# against the peer references in shared/data/README.md, measured there with
# PyTorch: SmoothQuant's W8A8 definition, the GPTQ reference's RTN
# quantizer, and bitsandbytes' NF4. All deterministic, so checked to 2e-3
# relative (W8A8 1e-3).
. "$(dirname "$0")/lib.sh"
EVAL="$BUILD/llmq-eval"
TEXT="$DATA/text/tinystories/eval.txt"
run() { "$EVAL" --model "$MODEL" --text "$TEXT" --ctx 512 --device cpu --json "$@" | json_get ppl; }
rel() { awk -v e="$1" -v r="$2" 'BEGIN { print e * r }'; }
v=$(run --w8a8);                    check_close w8a8_per_token "$v" 7.20958 "$(rel 7.20958 1e-3)"
v=$(run --wbits 4 --group 32);      check_close rtn_w4_g32 "$v" 8.15564 "$(rel 8.15564 2e-3)"
v=$(run --wbits 3 --group 32);      check_close rtn_w3_g32 "$v" 17.3111 "$(rel 17.3111 2e-3)"
v=$(run --wbits 8 --group -1);      check_close rtn_w8_perchannel "$v" 7.22317 "$(rel 7.22317 2e-3)"
v=$(run --wbits 4 --group -1);      check_close rtn_w4_perchannel "$v" 8.64995 "$(rel 8.64995 2e-3)"
v=$(run --nf4);                     check_close nf4_block64 "$v" 8.05417 "$(rel 8.05417 2e-3)"
v=$(run --nf4-double);              check_close nf4_double_quant "$v" 8.05417 "$(rel 8.05417 5e-3)"
