# llmq-tokenize --whole --no-bos against the ids Hugging Face tokenizers
# produces for llama.cpp's test strings (GPT-2 byte-level BPE and Llama-2
# SentencePiece BPE), and the round trip of the stories260K tokenizer.
. "$(dirname "$0")/lib.sh"
TOK="$BUILD/llmq-tokenize"
for fam in gpt2 llama-spm; do
  # vectors.inp: test strings, each followed by "\n__ggml_vocab_test__\n";
  # vectors.out: the expected ids, one line each. The piece after the last
  # separator is the empty string, whose expected line is empty: 47 pairs.
  python3 - "$TOK" "$DATA/tokenizers/$fam" "$TMP/$fam.txt" <<'PY'
import subprocess, sys
tok, d, tmp = sys.argv[1:4]
inp = open(d + '/vectors.inp', encoding='utf-8').read().split('\n__ggml_vocab_test__\n')
out = open(d + '/vectors.out', encoding='utf-8').read().split('\n')
assert len(inp) == len(out) == 47, (len(inp), len(out))
bad = 0
for i, (text, want) in enumerate(zip(inp, out)):
    open(tmp, 'w', encoding='utf-8').write(text)
    got = subprocess.run([tok, '--model', d, '--no-bos', '--whole', tmp], check=True,
                         capture_output=True, text=True).stdout.rstrip('\n')
    if got.split() != want.split():
        bad += 1
        print('FAIL %s vector %d %r: got [%s] expected [%s]' % (d, i, text, got, want))
print('%s: %d/%d vectors match' % (d.split('/')[-1], len(inp) - bad, len(inp)))
sys.exit(1 if bad else 0)
PY
done
# Round trip: decode(encode(line)) == line for every line of both eval texts.
for text in "$DATA/text/tinystories/eval.txt" "$DATA/text/wikitext2/wiki.test.raw"; do
  "$TOK" --model "$MODEL" --no-bos "$text" > "$TMP/ids"
  "$TOK" --model "$MODEL" --decode "$TMP/ids" > "$TMP/back"
  if cmp -s "$text" "$TMP/back"; then echo "ok   round trip $(basename "$text")"; else
    echo "FAIL round trip $(basename "$text")"; diff <(head -c 2000 "$text") <(head -c 2000 "$TMP/back") | head; exit 1; fi
done
