#include "hessian.h"

#include <stdlib.h>
#include <string.h>

#include "../src/error.h"

struct calib_hessian {
    llmq_backend *b;
    int cols[IN_COUNT];
    float *h[IN_COUNT]; /* backend F32 [cols, cols] */
    int layer;
    unsigned mask;
};

int hessian_new(calib_hessian **out, llmq_model *m)
{
    calib_hessian *h = calloc(1, sizeof *h);
    if (!h)
        return llmq_fail("out of memory");
    const llmq_config *c = model_config(m);
    h->b = model_backend(m);
    h->cols[IN_QKV] = h->cols[IN_GATEUP] = c->hidden;
    h->cols[IN_O] = c->n_heads * c->head_dim;
    h->cols[IN_DOWN] = c->ffn;
    h->layer = -1;
    *out = h;
    return 0;
}

void hessian_free(calib_hessian *h)
{
    if (!h)
        return;
    for (int g = 0; g < IN_COUNT; g++)
        if (h->h[g])
            h->b->free(h->b, h->h[g]);
    free(h);
}

int hessian_cols(const calib_hessian *h, llmq_input g) { return h->cols[g]; }

int hessian_begin(calib_hessian *h, int layer, unsigned mask)
{
    h->layer = layer;
    h->mask = mask;
    for (int g = 0; g < IN_COUNT; g++) {
        if (!(mask & (1u << g)))
            continue;
        size_t n = (size_t)h->cols[g] * h->cols[g];
        if (!h->h[g] && !(h->h[g] = h->b->alloc(h->b, n * sizeof(float))))
            return llmq_wrap("Hessian of %d columns", h->cols[g]);
        float *zero = calloc(n, sizeof(float));
        int rc = zero ? h->b->upload(h->b, h->h[g], LLMQ_F32, zero, LLMQ_F32, n) : llmq_fail("out of memory");
        free(zero);
        if (rc)
            return -1;
    }
    return 0;
}

static int on_input(void *ctx, llmq_backend *b, int layer, llmq_input which, void *x, int rows, int cols)
{
    calib_hessian *h = ctx;
    if (layer != h->layer || !(h->mask & (1u << which)))
        return 0;
    return b->xtx(b, h->h[which], x, rows, cols, 1.0f);
}

llmq_hooks hessian_hooks(calib_hessian *h)
{
    llmq_hooks hk = {.ctx = h, .on_input = on_input};
    return hk;
}

int hessian_get(calib_hessian *h, llmq_input g, int nsamples, float *out)
{
    size_t n = (size_t)h->cols[g] * h->cols[g];
    if (h->b->download_f32(h->b, out, h->h[g], LLMQ_F32, n))
        return -1;
    float scale = 2.0f / (float)nsamples;
    for (size_t i = 0; i < n; i++)
        out[i] *= scale;
    return 0;
}
