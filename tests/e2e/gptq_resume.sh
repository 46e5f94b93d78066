# llmq-gptq resumes after a crash or Ctrl-C: the finished layers are kept in
# OUT.partial, a rerun of the same command goes on from the first missing
# layer and writes the same bytes as an uninterrupted run; a changed job is
# refused, naming what changed, unless --restart.
# quant_log.csv is compared without its last column, the seconds each module
# took (never the same twice).
. "$(dirname "$0")/lib.sh"
GPTQ="$BUILD/llmq-gptq"; CAL="$DATA/text/tinystories/calib.jsonl.zst"
q() { "$GPTQ" --model "$MODEL" --data "$CAL" --format llmq --device cpu --seqlen 256 "$@"; }
small() { q --samples 32 "$@"; }
gone() { if [ -e "$1" ]; then echo "FAIL $1 exists"; exit 1; fi; echo "ok   $(basename "$1") absent"; }
there() { if [ ! -e "$1" ]; then echo "FAIL $1 missing"; exit 1; fi; echo "ok   $(basename "$1") present"; }
no_tmp() { if ls -d "$1".tmp.* >/dev/null 2>&1; then echo "FAIL $1.tmp.* left behind"; exit 1; fi; }
log_cols() { cut -d, -f1-11 "$1"; }
same() { # same NAME REF OUT: model and quant_log of OUT match REF's
  cmp "$2/model.safetensors" "$3/model.safetensors"
  cmp <(log_cols "$2/quant_log.csv") <(log_cols "$3/quant_log.csv")
  cmp "$2/config.json" "$3/config.json"
  echo "ok   $1: model.safetensors, config.json and quant_log.csv identical to the uninterrupted run"
}
resumed() { # resumed NAME PATTERN: the last run's stderr says where it resumed
  if ! grep -q "$2" "$TMP/err"; then echo "FAIL $1: stderr lacks '$2':"; cat "$TMP/err"; exit 1; fi
  echo "ok   $1: $(grep -o "$2" "$TMP/err")"
}

# (a) uninterrupted
small -o "$TMP/A" --quiet
gone "$TMP/A.partial"

# (b) a crash after layer 2 (test hook), then the same command again
expect_fail crash_after_layer_2 "LLMQ_GPTQ_FAIL_AFTER_LAYER" env LLMQ_GPTQ_FAIL_AFTER_LAYER=2 \
  "$GPTQ" --model "$MODEL" --data "$CAL" --format llmq --device cpu --seqlen 256 --samples 32 -o "$TMP/B"
gone "$TMP/B"; no_tmp "$TMP/B"
for l in 0 1 2; do there "$TMP/B.partial/layer_$l.safetensors"; done
gone "$TMP/B.partial/layer_3.safetensors"
there "$TMP/B.partial/job.json"
small -o "$TMP/B" 2>"$TMP/err"
resumed resume_after_crash "resuming at layer 3/5"
same crash_resume "$TMP/A" "$TMP/B"
gone "$TMP/B.partial"

# (c) another job over the finished layers is refused, naming the field
expect_fail crash_again "LLMQ_GPTQ_FAIL_AFTER_LAYER" env LLMQ_GPTQ_FAIL_AFTER_LAYER=1 \
  "$GPTQ" --model "$MODEL" --data "$CAL" --format llmq --device cpu --seqlen 256 --samples 32 -o "$TMP/C"
expect_fail changed_damp "damp" "$GPTQ" --model "$MODEL" --data "$CAL" --format llmq --device cpu --seqlen 256 \
  --samples 32 --damp 0.02 -o "$TMP/C"
grep -q -- "--restart" "$TMP/err" && echo "ok   the refusal points to --restart"
expect_fail changed_samples "samples" "$GPTQ" --model "$MODEL" --data "$CAL" --format llmq --device cpu \
  --seqlen 256 --samples 16 -o "$TMP/C"
there "$TMP/C.partial/layer_1.safetensors"
gone "$TMP/C"
# --restart discards them: the result is the uninterrupted one
small -o "$TMP/C" --restart 2>"$TMP/err"
resumed restart "removed .*C.partial"
if grep -q "resuming" "$TMP/err"; then echo "FAIL --restart resumed"; exit 1; fi
same restart "$TMP/A" "$TMP/C"
gone "$TMP/C.partial"

# --no-resume keeps nothing
expect_fail crash_no_resume "LLMQ_GPTQ_FAIL_AFTER_LAYER" env LLMQ_GPTQ_FAIL_AFTER_LAYER=2 \
  "$GPTQ" --model "$MODEL" --data "$CAL" --format llmq --device cpu --seqlen 256 --samples 32 --no-resume \
  -o "$TMP/D"
gone "$TMP/D.partial"; gone "$TMP/D"

# A real Ctrl-C: SIGINT once the first layer is saved (a larger sample count
# makes each layer take about a second). Job control (set -m), because a
# script's background commands otherwise start with SIGINT ignored.
q --samples 256 -o "$TMP/R" --quiet
set -m
"$GPTQ" --model "$MODEL" --data "$CAL" --format llmq --device cpu --seqlen 256 --samples 256 -o "$TMP/S" \
  2>"$TMP/err" &
pid=$! # the tool itself, not a shell function's subshell: the signal must reach it
set +m
for _ in $(seq 300); do
  [ -e "$TMP/S.partial/layer_0.safetensors" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -INT "$pid"
set +e; wait "$pid"; rc=$?; set -e
check_eq sigint_exit_status "$rc" 130
grep -q "interrupted; rerun the same command to resume from layer" "$TMP/err" && echo "ok   $(grep -o 'interrupted.*' "$TMP/err")"
gone "$TMP/S"; no_tmp "$TMP/S"
there "$TMP/S.partial/layer_0.safetensors"
q --samples 256 -o "$TMP/S" 2>"$TMP/err"
resumed resume_after_sigint "resuming at layer [1-5]/5"
same sigint_resume "$TMP/R" "$TMP/S"
gone "$TMP/S.partial"
