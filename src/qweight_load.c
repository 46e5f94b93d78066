#include "qweight_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../quant/nf4.h"
#include "../quant/pack.h"
#include "error.h"

static const st_tensor *find(const qw_source *src, const char *name)
{
    return src->model ? st_model_find(src->model, name) : st_find(src->file, name);
}

static const char *meta(const qw_source *src, const char *key)
{
    return src->model ? st_model_metadata(src->model, key) : st_metadata(src->file, key);
}

static const st_tensor *need(const qw_source *st, const char *dir, const char *prefix, const char *suffix,
                             llmq_dtype dt, int ndim)
{
    char name[192];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    const st_tensor *t = find(st, name);
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
static int load_gptq(const qw_source *st, const llmq_config *cfg, const char *dir, const char *prefix, int N, int K,
                     llmq_qweight *q)
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
    const st_tensor *gi = find(st, name);
    int32_t *g_idx = malloc((size_t)K * sizeof *g_idx);
    void *qwd = aligned_copy(qw), *qzd = aligned_copy(qz), *scd = aligned_copy(sc);
    int rc = -1;
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
    if (gptq_import(qwd, qzd, scd, g_idx, K, N, bits, group, ng, v2, cfg->q_sym, q)) {
        llmq_wrap("%s: %s", qw->file, prefix);
        goto done;
    }
    rc = 0;
done:
    free(g_idx), free(qwd), free(qzd), free(scd);
    return rc;
}

/* Per-module settings from "llmq.quant.<m>" in __metadata__ (JSON). */
static int llmq_module_meta(const qw_source *st, const char *dir, const char *prefix, char *method, size_t mlen,
                            int *bits, int *group, int *sym, int *nf4_double)
{
    char key[256];
    snprintf(key, sizeof key, "llmq.quant.%s", prefix);
    const char *json = meta(st, key);
    if (!json)
        return llmq_fail("%s: no '%s' in the safetensors metadata", dir, key);
    cJSON *o = cJSON_Parse(json);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "method");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "bits");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(o, "group_size");
    int rc = 0;
    if (!cJSON_IsString(m))
        rc = llmq_fail("%s: '%s' is not a JSON object with a \"method\"", dir, key);
    else {
        snprintf(method, mlen, "%s", m->valuestring);
        *bits = cJSON_IsNumber(b) ? (int)b->valuedouble : 0;
        *group = cJSON_IsNumber(g) ? (int)g->valuedouble : -1;
        *sym = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "sym"));
        *nf4_double = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "double_quant"));
        if (strcmp(method, "nf4") && (*bits < 2 || *bits > 8))
            rc = llmq_fail("%s: '%s' has bits %d (2..8)", dir, key, *bits);
    }
    cJSON_Delete(o);
    return rc;
}

static int load_llmq_nf4(const qw_source *st, const char *dir, const char *prefix, int N, int K, int dbl,
                         llmq_nf4 *res)
{
    size_t n = (size_t)N * K, nb = (n + 63) / 64;
    llmq_nf4 q = {.n = n, .blocksize = 64, .nblocks = nb, .double_quant = dbl, .blocksize2 = 256,
                  .nblocks2 = (nb + 255) / 256};
    const st_tensor *codes = need(st, dir, prefix, "nf4_u4x2", LLMQ_U8, 1);
    if (!codes)
        return -1;
    if ((size_t)codes->numel != (n + 1) / 2)
        return llmq_fail("%s: %s.nf4_u4x2 has %lld bytes, a [%d, %d] weight needs %zu", codes->file, prefix,
                         (long long)codes->numel, N, K, (n + 1) / 2);
    int rc = -1;
    q.codes = malloc(n);
    if (!q.codes)
        return llmq_fail("out of memory");
    nf4_unpack(codes->data, n, q.codes);
    if (!dbl) {
        const st_tensor *a = need(st, dir, prefix, "nf4_absmax", LLMQ_F32, 1);
        if (!a || (size_t)a->numel != nb)
            goto done;
        q.absmax = aligned_copy(a);
    } else {
        const st_tensor *qa = need(st, dir, prefix, "nf4_qabsmax", LLMQ_U8, 1);
        const st_tensor *a2 = qa ? need(st, dir, prefix, "nf4_absmax2", LLMQ_F32, 1) : NULL;
        const st_tensor *off = a2 ? need(st, dir, prefix, "nf4_offset", LLMQ_F32, 1) : NULL;
        if (!off || (size_t)qa->numel != nb || (size_t)a2->numel != q.nblocks2 || off->numel != 1) {
            if (off)
                llmq_fail("%s: %s: NF4 scale tensors have the wrong sizes", qa->file, prefix);
            goto done;
        }
        q.qabsmax = aligned_copy(qa);
        q.absmax2 = aligned_copy(a2);
        memcpy(&q.offset, off->data, 4);
    }
    if ((dbl && (!q.qabsmax || !q.absmax2)) || (!dbl && !q.absmax))
        goto done;
    *res = q;
    return 0;
done:
    nf4_free(&q);
    return rc;
}

/* llmq's layout (docs/LLMQ_FORMAT.md). */
static int load_llmq(const qw_source *st, const char *dir, const char *prefix, int N, int K, qw_packed *p)
{
    char method[16];
    int bits = 0, group = -1, sym = 0, dbl = 0;
    if (llmq_module_meta(st, dir, prefix, method, sizeof method, &bits, &group, &sym, &dbl))
        return -1;
    if (!strcmp(method, "nf4")) {
        p->is_nf4 = 1;
        return load_llmq_nf4(st, dir, prefix, N, K, dbl, &p->nf4);
    }
    int G = group > 0 ? group : K, ng = (K + G - 1) / G;
    size_t rb = llmqfmt_row_bytes(K, bits);
    const st_tensor *codes = need(st, dir, prefix, bits <= 4 ? "qweight_u4x2" : "qweight_u8", LLMQ_U8, 2);
    const st_tensor *sc = codes ? need(st, dir, prefix, "scales", LLMQ_F16, 2) : NULL;
    const st_tensor *zs = sc ? need(st, dir, prefix, "zeros", LLMQ_F16, 2) : NULL;
    if (!zs)
        return -1;
    if (codes->shape[0] != N || codes->shape[1] != (int64_t)rb || sc->shape[0] != N || sc->shape[1] != ng ||
        zs->shape[0] != N || zs->shape[1] != ng)
        return llmq_fail("%s: %s: tensor shapes do not match a [%d, %d] weight, %d bits, group %d", codes->file,
                         prefix, N, K, bits, group);
    llmq_qweight q = {0};
    int rc = -1;
    char name[192];
    if (qweight_alloc(&q, N, K, bits, group, sym))
        return -1;
    p->is_nf4 = 0;
    uint16_t *s16 = aligned_copy(sc), *z16 = aligned_copy(zs);
    if (!s16 || !z16 || llmqfmt_unpack_codes(codes->data, N, K, bits, q.q))
        goto done;
    llmqfmt_unpack_params(s16, z16, N, ng, q.scales, q.zeros);
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    const st_tensor *gi = find(st, name);
    if (gi) {
        if (gi->dtype != LLMQ_I32 || gi->numel != K) {
            llmq_fail("%s: '%s' must be int32 [%d]", gi->file, name, K);
            goto done;
        }
        memcpy(q.g_idx, gi->data, (size_t)K * 4);
        for (int k = 0; k < K; k++)
            if (q.g_idx[k] < 0 || q.g_idx[k] >= ng) {
                llmq_fail("%s: '%s'[%d] = %d is not a group (0..%d)", gi->file, name, k, q.g_idx[k], ng - 1);
                goto done;
            }
    }
    p->q = q;
    memset(&q, 0, sizeof q);
    rc = 0;
done:
    if (rc)
        llmq_wrap("%s", prefix);
    free(s16), free(z16);
    qweight_free(&q);
    return rc;
}

int qweight_load_packed(const qw_source *src, const llmq_config *cfg, const char *prefix, int out, int in,
                        qw_packed *p)
{
    memset(p, 0, sizeof *p);
    if (strcmp(cfg->quant_method, "gptq") == 0)
        return load_gptq(src, cfg, src->where, prefix, out, in, &p->q);
    if (strcmp(cfg->quant_method, "llmq") == 0)
        return load_llmq(src, src->where, prefix, out, in, p);
    if (cfg->quant_method[0])
        return llmq_fail("%s: quant_method \"%s\" is not supported (gptq, llmq)", src->where, cfg->quant_method);
    return llmq_fail("%s: tensor '%s.weight' is missing", src->where, prefix);
}

void qw_packed_free(qw_packed *p)
{
    qweight_free(&p->q);
    nf4_free(&p->nf4);
    memset(p, 0, sizeof *p);
}

int qweight_load_from(const qw_source *src, const llmq_config *cfg, const char *prefix, int out, int in, float *w)
{
    qw_packed p;
    if (qweight_load_packed(src, cfg, prefix, out, in, &p))
        return -1;
    int rc = 0;
    if (p.is_nf4)
        rc = nf4_dequantize(&p.nf4, w);
    else
        qweight_dequant(&p.q, w);
    qw_packed_free(&p);
    return rc;
}

int qweight_load_dequant(const st_model *st, const llmq_config *cfg, const char *dir, const char *prefix, int out,
                         int in, float *w)
{
    qw_source src = {.model = st, .where = dir};
    return qweight_load_from(&src, cfg, prefix, out, in, w);
}
