#include "decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "progress.h"

int decode_run(llmq_model *m, const int32_t *ids, size_t n, int batch, int prompt, int steps, double bandwidth_gbs,
               decode_result *r)
{
    memset(r, 0, sizeof *r);
    const int len = prompt + steps + 1;
    if (batch < 1 || prompt < 1 || steps < 1)
        return llmq_fail("decode: batch, prompt and steps must be >= 1");
    if ((size_t)batch * len > n)
        return llmq_fail("decode: %d sequences of %d tokens need %zu tokens of text, it has %zu", batch, len,
                         (size_t)batch * len, n);
    int32_t *in = malloc((size_t)batch * prompt * sizeof *in), *tg = malloc((size_t)batch * prompt * sizeof *tg);
    int rc = -1;
    if (!in || !tg) {
        llmq_fail("out of memory");
        goto done;
    }
    if (model_cache_open(m, batch, prompt + steps))
        goto done;
    r->batch = batch, r->prompt = prompt, r->steps = steps;
    r->cache_bytes = model_cache_bytes(m);
    double nll = 0.0;
    /* Prefill: each sequence's first P tokens, scored against the next. */
    for (int s = 0; s < batch; s++)
        for (int t = 0; t < prompt; t++) {
            in[(size_t)s * prompt + t] = ids[(size_t)s * len + t];
            tg[(size_t)s * prompt + t] = ids[(size_t)s * len + t + 1];
        }
    double t0 = llmq_now();
    if (model_step(m, in, prompt, 0, tg, &nll, NULL))
        goto done;
    r->prefill_s = llmq_now() - t0;
    r->weight_bytes = model_weight_bytes(m);
    t0 = llmq_now();
    for (int j = 0; j < steps; j++) {
        for (int s = 0; s < batch; s++) {
            in[s] = ids[(size_t)s * len + prompt + j];
            tg[s] = ids[(size_t)s * len + prompt + j + 1];
        }
        if (model_step(m, in, 1, prompt + j, tg, &nll, NULL)) {
            llmq_wrap("decode step %d of %d", j + 1, steps);
            goto done;
        }
    }
    if (model_backend(m)->sync(model_backend(m)))
        goto done;
    r->decode_s = llmq_now() - t0;
    r->tokens_per_s = (double)batch * steps / r->decode_s;
    r->ms_per_step = 1e3 * r->decode_s / steps;
    r->ppl = exp(nll / ((double)batch * (prompt + steps)));
    /* Step j reads prompt + j + 1 positions of every sequence's cache. */
    size_t per_pos = r->cache_bytes / ((size_t)prompt + steps);
    for (int j = 0; j < steps; j++)
        r->kv_read_bytes += per_pos * (size_t)(prompt + j + 1);
    if (bandwidth_gbs > 0)
        r->roofline_fraction =
            ((double)r->weight_bytes * steps + (double)r->kv_read_bytes) / (bandwidth_gbs * 1e9) / r->decode_s;
    rc = 0;
done:
    model_cache_close(m);
    free(in), free(tg);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double decode_copy_bandwidth(llmq_backend *b)
{
    if (strcmp(b->name, "cuda") != 0)
        return 0.0;
    const size_t bytes = (size_t)1 << 30;
    void *src = b->alloc(b, bytes), *dst = src ? b->alloc(b, bytes) : NULL;
    double gbs = 0.0, t[7];
    if (!dst)
        goto done;
    /* One warm-up copy, then the timed ones. */
    if (b->copy(b, dst, src, bytes) || b->sync(b))
        goto done;
    for (int i = 0; i < 7; i++) {
        double t0 = llmq_now();
        if (b->copy(b, dst, src, bytes) || b->sync(b))
            goto done;
        t[i] = llmq_now() - t0;
    }
    qsort(t, 7, sizeof t[0], cmp_double);
    gbs = 2.0 * (double)bytes / t[3] / 1e9;
done:
    if (src)
        b->free(b, src);
    if (dst)
        b->free(b, dst);
    llmq_clear_error();
    return gbs;
}
