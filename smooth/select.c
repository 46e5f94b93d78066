/* --alpha auto, second stage: the per-layer choice that minimises each
 * group's own W8A8 output error is a local proxy, and a poor one where W8A8
 * costs almost nothing (stories260K loses less to W8A8 than to its own
 * rounding). So the candidates - the per-layer choice and every uniform
 * alpha of the grid - are scored by what matters: the W8A8 fake-quant NLL
 * of the smoothed model on the held-out samples llmq-calib kept out of the
 * statistics ("heldout.ids"). The smoothing is applied to the loaded
 * weights through the runner's on_layer seam, nothing is written. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "../src/fakequant.h"
#include "../src/model.h"
#include "smooth.h"

typedef struct {
    const st_file *sf;
    const char *spath;
    const llmq_config *c;
    unsigned mask;
    double *const *alpha; /* [SMOOTH_NGROUPS][n_layers] */
} select_ctx;

/* Bring a backend buffer to the host as fp32, or back. */
static float *down(llmq_backend *b, const void *src, size_t n)
{
    float *h = malloc(n * sizeof(float));
    if (h && b->download_f32(b, h, src, b->dt, n)) {
        free(h);
        return NULL;
    }
    if (!h)
        llmq_fail("out of memory");
    return h;
}

static int on_layer(void *vctx, llmq_backend *b, int layer, llmq_layer *L)
{
    select_ctx *ctx = vctx;
    const llmq_config *c = ctx->c;
    smooth_layer sl = {.hidden = c->hidden, .ffn = c->ffn, .n_heads = c->n_heads, .n_kv = c->n_kv,
                       .head_dim = c->head_dim};
    float **lin[LIN_COUNT] = {&sl.q, &sl.k, &sl.v, &sl.o, &sl.gate, &sl.up, &sl.down};
    float *act[SMOOTH_NGROUPS] = {0};
    double alpha[SMOOTH_NGROUPS] = {0};
    int rc = -1;
    sl.ln1 = down(b, L->attn_norm, (size_t)c->hidden);
    sl.ln2 = down(b, L->ffn_norm, (size_t)c->hidden);
    for (int i = 0; i < LIN_COUNT; i++)
        *lin[i] = down(b, L->lin[i].w, (size_t)L->lin[i].in * L->lin[i].out);
    if (L->lin[LIN_V].bias)
        sl.v_bias = down(b, L->lin[LIN_V].bias, (size_t)L->lin[LIN_V].out);
    if (!sl.ln1 || !sl.ln2 || !sl.q || !sl.k || !sl.v || !sl.o || !sl.gate || !sl.up || !sl.down ||
        (L->lin[LIN_V].bias && !sl.v_bias))
        goto done;
    for (int g = 0; g < SMOOTH_NGROUPS; g++) {
        if (!(ctx->mask & (1u << g)))
            continue;
        if (smooth_read_act(ctx->sf, ctx->spath, layer, (smooth_group)g, &act[g]))
            goto done;
        alpha[g] = ctx->alpha[g][layer];
    }
    if (smooth_layer_apply(&sl, ctx->mask, (const float *const *)act, alpha, NULL))
        goto done;
    fq_opts w8 = {.weight = FQ_W_INT8_CHANNEL};
    rc = b->upload(b, L->attn_norm, b->dt, sl.ln1, LLMQ_F32, (size_t)c->hidden) ||
         b->upload(b, L->ffn_norm, b->dt, sl.ln2, LLMQ_F32, (size_t)c->hidden);
    for (int i = 0; i < LIN_COUNT && rc == 0; i++) {
        size_t n = (size_t)L->lin[i].in * L->lin[i].out;
        rc = fq_weight_matrix(&w8, *lin[i], L->lin[i].out, L->lin[i].in) ||
             b->upload(b, L->lin[i].w, b->dt, *lin[i], LLMQ_F32, n);
    }
    if (rc == 0 && sl.v_bias)
        rc = b->upload(b, L->lin[LIN_V].bias, b->dt, sl.v_bias, LLMQ_F32, (size_t)L->lin[LIN_V].out);
done:
    free(sl.ln1), free(sl.ln2), free(sl.v_bias);
    for (int i = 0; i < LIN_COUNT; i++)
        free(*lin[i]);
    for (int g = 0; g < SMOOTH_NGROUPS; g++)
        free(act[g]);
    return rc ? -1 : 0;
}

static int on_input(void *vctx, llmq_backend *b, int layer, llmq_input which, void *x, int rows, int cols)
{
    (void)vctx, (void)layer, (void)which;
    return b->fq_per_token(b, x, rows, cols, 127);
}

int smooth_heldout_nll(const char *model_dir, llmq_backend *b, const llmq_config *c, const st_file *sf,
                       const char *spath, unsigned mask, double *const alpha[SMOOTH_NGROUPS], double *nll,
                       long *count)
{
    const st_tensor *ids = st_find(sf, "heldout.ids"), *lens = st_find(sf, "heldout.lengths");
    if (!ids || !lens || ids->dtype != LLMQ_I32 || lens->dtype != LLMQ_I32)
        return llmq_fail("%s: no held-out token ids (made by an older llmq-calib, or with --heldout 0)", spath);
    int n = (int)lens->numel, maxlen = 0;
    int32_t *len = malloc((size_t)n * sizeof *len), *tok = malloc((size_t)ids->numel * sizeof *tok);
    if (!len || !tok) {
        free(len), free(tok);
        return llmq_fail("out of memory");
    }
    memcpy(len, lens->data, (size_t)n * sizeof *len);
    memcpy(tok, ids->data, (size_t)ids->numel * sizeof *tok);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        total += len[i];
        maxlen = len[i] > maxlen ? len[i] : maxlen;
    }
    llmq_model *m = NULL;
    int rc = -1;
    if (total != ids->numel || maxlen < 2) {
        llmq_fail("%s: heldout.lengths does not add up to heldout.ids", spath);
        goto done;
    }
    select_ctx ctx = {sf, spath, c, mask, alpha};
    llmq_hooks h = {.ctx = &ctx, .on_layer = on_layer, .on_input = on_input};
    if (model_open(&m, model_dir, b, maxlen))
        goto done;
    model_set_hooks(m, &h);
    model_keep_weights(m, 1);
    if (model_load_all(m))
        goto done;
    *nll = 0, *count = 0;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (model_forward(m, tok + off, 1, len[i], nll, NULL))
            goto done;
        *count += len[i] - 1;
        off += len[i];
    }
    rc = 0;
done:
    model_close(m);
    free(len), free(tok);
    return rc;
}
