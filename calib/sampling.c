#include "sampling.h"

#include <stdlib.h>
#include <string.h>

#include "../formats/corpus.h"
#include "../src/error.h"
#include "../src/rng.h"

void calib_set_free(calib_set *s)
{
    free(s->ids);
    free(s->off);
    memset(s, 0, sizeof *s);
}

/* Append one sample's tokens. */
static int push_sample(calib_set *s, size_t *cap, const int32_t *ids, size_t n)
{
    size_t used = s->off[s->n];
    if (used + n > *cap) {
        size_t nc = (used + n) * 2;
        int32_t *ni = realloc(s->ids, nc * sizeof *ni);
        if (!ni)
            return llmq_fail("out of memory for calibration tokens");
        s->ids = ni;
        *cap = nc;
    }
    memcpy(s->ids + used, ids, n * sizeof *ids);
    s->n++;
    s->off[s->n] = used + n;
    if ((int)n > s->max_len)
        s->max_len = (int)n;
    return 0;
}

static void finish(calib_set *s)
{
    s->uniform = 1;
    for (int i = 0; i < s->n; i++)
        if (calib_len(s, i) != s->max_len)
            s->uniform = 0;
}

/* Reservoir sampling (Algorithm R) of n record indices over the stream;
 * returns the sorted indices of the chosen records in *chosen. */
typedef struct {
    char **text;
    size_t *len, *index;
} reservoir;

static int sample_records(calib_set *s, const llmq_tokenizer *tok, const char *path, const char *field, int n, int len,
                          uint64_t seed)
{
    llmq_corpus *c;
    if (corpus_open(&c, path, CORPUS_AUTO, field))
        return -1;
    llmq_rng rng;
    llmq_rng_seed(&rng, seed);
    reservoir r = {calloc((size_t)n, sizeof(char *)), calloc((size_t)n, sizeof(size_t)),
                   calloc((size_t)n, sizeof(size_t))};
    int rc = 0, kept = 0;
    size_t seen = 0;
    const char *text;
    size_t tlen;
    if (!r.text || !r.len || !r.index)
        rc = llmq_fail("out of memory");
    while (rc == 0 && (rc = corpus_next(c, &text, &tlen)) == 1) {
        rc = 0;
        size_t slot = seen < (size_t)n ? seen : llmq_rng_below(&rng, seen + 1);
        if (slot < (size_t)n) {
            char *copy = malloc(tlen + 1);
            if (!copy) {
                rc = llmq_fail("out of memory");
                break;
            }
            memcpy(copy, text, tlen + 1);
            free(r.text[slot]);
            r.text[slot] = copy, r.len[slot] = tlen, r.index[slot] = seen;
            if (seen < (size_t)n)
                kept++;
        }
        seen++;
    }
    corpus_close(c);
    s->records = seen;
    if (rc == 0 && kept == 0)
        rc = llmq_fail("%s: the corpus has no records", path);
    /* Keep file order: sort the reservoir by record index (insertion sort, n is small). */
    for (int i = 1; rc == 0 && i < kept; i++)
        for (int j = i; j > 0 && r.index[j - 1] > r.index[j]; j--) {
            size_t ti = r.index[j]; r.index[j] = r.index[j - 1]; r.index[j - 1] = ti;
            size_t tl = r.len[j]; r.len[j] = r.len[j - 1]; r.len[j - 1] = tl;
            char *tt = r.text[j]; r.text[j] = r.text[j - 1]; r.text[j - 1] = tt;
        }
    size_t cap = 0;
    s->off = calloc((size_t)kept + 1, sizeof *s->off);
    if (rc == 0 && !s->off)
        rc = llmq_fail("out of memory");
    for (int i = 0; rc == 0 && i < kept; i++) {
        int32_t *ids;
        size_t nt;
        if (tok_encode(tok, r.text[i], r.len[i], tok_add_bos(tok), &ids, &nt)) {
            rc = llmq_wrap("%s: record %zu", path, r.index[i] + 1);
            break;
        }
        if (nt == 0)
            rc = llmq_fail("%s: record %zu tokenizes to nothing", path, r.index[i] + 1);
        else
            rc = push_sample(s, &cap, ids, nt < (size_t)len ? nt : (size_t)len);
        free(ids);
    }
    for (int i = 0; i < n && r.text; i++)
        free(r.text[i]);
    free(r.text), free(r.len), free(r.index);
    return rc < 0 ? -1 : 0;
}

static int sample_windows(calib_set *s, const llmq_tokenizer *tok, const char *path, const char *field, int n, int len,
                          uint64_t seed)
{
    size_t cap_bytes = (size_t)16 * n * len;
    if (cap_bytes < ((size_t)64 << 20))
        cap_bytes = (size_t)64 << 20;
    llmq_corpus *c;
    if (corpus_open(&c, path, CORPUS_AUTO, field))
        return -1;
    char *text = NULL;
    size_t tl = 0, tcap = 0, seen = 0;
    const char *rec;
    size_t rlen;
    int rc;
    while (tl < cap_bytes && (rc = corpus_next(c, &rec, &rlen)) == 1) {
        if (tl + rlen + 3 > tcap) {
            tcap = (tl + rlen + 3) * 2;
            char *nt = realloc(text, tcap);
            if (!nt) {
                rc = llmq_fail("out of memory");
                break;
            }
            text = nt;
        }
        if (seen++) {
            memcpy(text + tl, "\n\n", 2);
            tl += 2;
        }
        memcpy(text + tl, rec, rlen);
        tl += rlen;
        rc = 0;
    }
    if (tl >= cap_bytes)
        rc = 0;
    corpus_close(c);
    s->records = seen;
    if (rc < 0) {
        free(text);
        return -1;
    }
    int32_t *ids = NULL;
    size_t nt = 0;
    rc = tok_encode(tok, text ? text : "", tl, tok_add_bos(tok), &ids, &nt);
    free(text);
    if (rc)
        return -1;
    if (nt < (size_t)len) {
        free(ids);
        return llmq_fail("%s: the corpus has %zu tokens, fewer than one window of %d", path, nt, len);
    }
    llmq_rng rng;
    llmq_rng_seed(&rng, seed);
    size_t cap = 0;
    s->off = calloc((size_t)n + 1, sizeof *s->off);
    rc = s->off ? 0 : llmq_fail("out of memory");
    for (int i = 0; rc == 0 && i < n; i++) {
        size_t start = (size_t)llmq_rng_below(&rng, nt - (size_t)len + 1);
        rc = push_sample(s, &cap, ids + start, (size_t)len);
    }
    free(ids);
    return rc;
}

int calib_sample(calib_set *s, const llmq_tokenizer *tok, const char *path, const char *field, calib_mode mode, int n,
                 int len, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    if (n <= 0 || len <= 0)
        return llmq_fail("calibration needs at least one sample of at least one token");
    int rc = mode == CALIB_WINDOWS ? sample_windows(s, tok, path, field, n, len, seed)
                                   : sample_records(s, tok, path, field, n, len, seed);
    if (rc) {
        calib_set_free(s);
        return -1;
    }
    finish(s);
    return 0;
}
