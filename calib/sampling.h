/* Calibration samples drawn from a corpus, deterministically for a seed.
 *
 *  - CALIB_RECORDS (SmoothQuant's way, the default): n records, each
 *    tokenized on its own with BOS and truncated to len tokens. With more
 *    records than n, a seeded reservoir sample over the stream picks them
 *    (the corpus is never held whole); the chosen ones keep file order.
 *  - CALIB_WINDOWS (GPTQ's way): the records joined by "\n\n" and tokenized
 *    once with BOS; n windows of exactly len tokens at seeded uniform random
 *    offsets. The joined text is capped at max(64 MiB, 16 n len) bytes of
 *    the corpus start, so a huge corpus does not fill memory. */
#ifndef LLMQ_CALIB_SAMPLING_H
#define LLMQ_CALIB_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

#include "../formats/tokenizer.h"

typedef enum { CALIB_RECORDS = 0, CALIB_WINDOWS } calib_mode;

typedef struct {
    int n;          /* samples */
    int32_t *ids;   /* all tokens, sample after sample */
    size_t *off;    /* sample i is ids[off[i] .. off[i+1]) (n + 1 entries) */
    int max_len;    /* longest sample */
    int uniform;    /* all samples have max_len tokens */
    size_t records; /* records read from the corpus */
} calib_set;

int calib_sample(calib_set *s, const llmq_tokenizer *tok, const char *path, const char *field, calib_mode mode, int n,
                 int len, uint64_t seed);
void calib_set_free(calib_set *s);

static inline int calib_len(const calib_set *s, int i) { return (int)(s->off[i + 1] - s->off[i]); }

#endif
