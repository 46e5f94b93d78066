#include "qweight_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../quant/pack.h"
#include "error.h"

static const st_tensor *need(const st_model *st, const char *dir, const char *prefix, const char *suffix,
                             llmq_dtype dt, int ndim)
{
    char name[192];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    const st_tensor *t = st_model_find(st, name);
    if (!t) {
        llmq_fail("%s: tensor '%s' is missing", dir, name);
        return NULL;
    }
    if (t->dtype != dt || t->ndim != ndim) {
        llmq_fail("%s: tensor '%s' is %s with %d dims, expected %s with %d", t->file, name,
                  llmq_dtype_name(t->dtype), t->ndim, llmq_dtype_name(dt), ndim);
        return NULL;
    }
    return t;
}

/* Tensor data may sit at any offset in the file; copy it to aligned memory. */
static void *aligned_copy(const st_tensor *t)
{
    void *p = malloc(t->nbytes ? t->nbytes : 1);
    if (p)
        memcpy(p, t->data, t->nbytes);
    else
        llmq_fail("out of memory reading '%s'", t->name);
    return p;
}

/* GPTQ v1/v2: qweight int32 [K*b/32, N], qzeros int32 [ng, N*b/32],
 * scales fp16 [ng, N], g_idx int32 [K] (k / G when absent, as in old
 * AutoGPTQ checkpoints). */
static int load_gptq(const st_model *st, const llmq_config *cfg, const char *dir, const char *prefix, int N, int K,
                     float *w)
{
    int bits = cfg->q_bits;
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return llmq_fail("%s: GPTQ bits %d are not supported (2, 3, 4, 8)", dir, bits);
    int v2 = strcmp(cfg->q_checkpoint_format, "gptq_v2") == 0;
    const st_tensor *qw = need(st, dir, prefix, "qweight", LLMQ_I32, 2);
    const st_tensor *qz = qw ? need(st, dir, prefix, "qzeros", LLMQ_I32, 2) : NULL;
    const st_tensor *sc = qz ? need(st, dir, prefix, "scales", LLMQ_F16, 2) : NULL;
    if (!sc)
        return -1;
    int ng = (int)sc->shape[0];
    if (qw->shape[0] != (int64_t)gptq_qweight_rows(K, bits) || qw->shape[1] != N || sc->shape[1] != N ||
        qz->shape[0] != ng || qz->shape[1] != (int64_t)gptq_qzeros_cols(N, bits))
        return llmq_fail("%s: %s: packed shapes do not match a [%d, %d] linear at %d bits", qw->file, prefix, N, K,
                         bits);
    int group = cfg->q_group > 0 ? cfg->q_group : K;
    char name[192];
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    const st_tensor *gi = st_model_find(st, name);
    int32_t *g_idx = malloc((size_t)K * sizeof *g_idx);
    void *qwd = aligned_copy(qw), *qzd = aligned_copy(qz), *scd = aligned_copy(sc);
    int rc = -1;
    llmq_qweight q = {0};
    if (!g_idx || !qwd || !qzd || !scd) {
        llmq_fail("out of memory reading %s", prefix);
        goto done;
    }
    if (gi) {
        if (gi->dtype != LLMQ_I32 || gi->numel != K) {
            llmq_fail("%s: '%s' must be int32 [%d]", gi->file, name, K);
            goto done;
        }
        memcpy(g_idx, gi->data, (size_t)K * sizeof *g_idx);
    } else {
        for (int k = 0; k < K; k++)
            g_idx[k] = k / group;
    }
    if (gptq_import(qwd, qzd, scd, g_idx, K, N, bits, group, ng, v2, cfg->q_sym, &q)) {
        llmq_wrap("%s: %s", qw->file, prefix);
        goto done;
    }
    qweight_dequant(&q, w);
    rc = 0;
done:
    qweight_free(&q);
    free(g_idx), free(qwd), free(qzd), free(scd);
    return rc;
}

int qweight_load_dequant(const st_model *st, const llmq_config *cfg, const char *dir, const char *prefix, int out,
                         int in, float *w)
{
    if (strcmp(cfg->quant_method, "gptq") == 0)
        return load_gptq(st, cfg, dir, prefix, out, in, w);
    if (cfg->quant_method[0])
        return llmq_fail("%s: quant_method \"%s\" is not supported (gptq, llmq)", dir, cfg->quant_method);
    return llmq_fail("%s: tensor '%s.weight' is missing", dir, prefix);
}
