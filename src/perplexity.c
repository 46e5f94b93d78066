#include "perplexity.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/corpus.h"
#include "error.h"
#include "progress.h"

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i]))
            return 0;
    return 1;
}

int ppl_tokenize(const llmq_tokenizer *tok, const char *path, const char *field, int32_t **ids, size_t *n)
{
    llmq_corpus *c;
    if (corpus_open(&c, path, CORPUS_AUTO, field))
        return -1;
    char *text = NULL;
    size_t len = 0, cap = 0;
    const char *rec;
    size_t rlen;
    int rc, first = 1;
    while ((rc = corpus_next(c, &rec, &rlen)) == 1) {
        if (is_blank(rec, rlen))
            rlen = 0; /* the HF text loader yields whitespace-only lines as empty rows */
        if (len + rlen + 3 > cap) {
            cap = (len + rlen + 3) * 2;
            char *nt = realloc(text, cap);
            if (!nt) {
                rc = llmq_fail("%s: out of memory", path);
                break;
            }
            text = nt;
        }
        if (!first) {
            memcpy(text + len, "\n\n", 2);
            len += 2;
        }
        memcpy(text + len, rec, rlen);
        len += rlen;
        first = 0;
    }
    corpus_close(c);
    if (rc < 0) {
        free(text);
        return -1;
    }
    rc = tok_encode(tok, text ? text : "", len, tok_add_bos(tok), ids, n);
    free(text);
    return rc;
}

int ppl_run(llmq_model *m, const int32_t *ids, size_t n, const ppl_opts *o, ppl_result *r)
{
    memset(r, 0, sizeof *r);
    const int ctx = o->ctx;
    long windows = (long)(n / (size_t)ctx);
    if (o->max_windows > 0 && windows > o->max_windows)
        windows = o->max_windows;
    if (windows == 0)
        return llmq_fail("the text has %zu tokens, fewer than one window of %d", n, ctx);
    int batch = o->batch > 0 ? o->batch : 1;
    llmq_progress pr;
    progress_start(&pr, "windows", windows, o->quiet);
    double t0 = llmq_now(), nll = 0.0;
    for (long w = 0; w < windows; w += batch) {
        int nb = (int)(windows - w < batch ? windows - w : batch);
        if (model_forward(m, ids + (size_t)w * ctx, nb, ctx, &nll, NULL))
            return llmq_wrap("window %ld", w);
        double el = llmq_now() - t0;
        char extra[64];
        snprintf(extra, sizeof extra, "ppl %.4f", exp(nll / ((double)(w + nb) * (ctx - 1))));
        progress_update(&pr, w + nb, "tok/s", (double)(w + nb) * ctx / (el > 0 ? el : 1e-9), extra);
    }
    progress_end(&pr);
    r->seconds = llmq_now() - t0;
    r->windows = windows;
    r->tokens = windows * (long)(ctx - 1);
    r->nll = nll;
    r->ppl = exp(nll / (double)r->tokens);
    r->tokens_per_s = (double)windows * ctx / (r->seconds > 0 ? r->seconds : 1e-9);
    if (!isfinite(r->ppl))
        return llmq_fail("perplexity is not finite (NLL %g): the model produced NaN or Inf", nll);
    return 0;
}
