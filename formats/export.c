#include "export.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../quant/pack.h"
#include "../src/error.h"
#include "../src/fileio.h"
#include "hfdir.h"

struct export_ctx {
    export_format f;
    export_settings s;
    st_writer *w;
    void **bufs; /* data owned until the write */
    int nbufs, capbufs;
    char **skipped;
    int nskipped;
    st_writer *tee; /* also gets the packed tensors and module metadata (export_tee) */
};

int export_format_parse(const char *name, export_format *out)
{
    if (!strcmp(name, "gptq"))
        *out = EXPORT_GPTQ;
    else if (!strcmp(name, "gptq_v2"))
        *out = EXPORT_GPTQ_V2;
    else if (!strcmp(name, "llmq"))
        *out = EXPORT_LLMQ;
    else
        return llmq_fail("unknown format '%s' (gptq, gptq_v2, llmq)", name);
    return 0;
}

const char *export_format_name(export_format f)
{
    return f == EXPORT_GPTQ ? "gptq" : f == EXPORT_GPTQ_V2 ? "gptq_v2" : "llmq";
}

int export_check_settings(export_format f, const export_settings *s)
{
    int is_nf4 = !strcmp(s->method, "nf4");
    if (f == EXPORT_LLMQ) {
        if (!is_nf4 && (s->bits < 2 || s->bits > 8))
            return llmq_fail("the llmq format holds 2..8 bits, not %d", s->bits);
        return 0;
    }
    if (is_nf4)
        return llmq_fail("the GPTQ layout cannot hold NF4 codes; use --format llmq");
    if (s->bits != 2 && s->bits != 3 && s->bits != 4 && s->bits != 8)
        return llmq_fail("the GPTQ layout holds 2, 3, 4 or 8 bits, not %d; use --format llmq", s->bits);
    if (f == EXPORT_GPTQ && !s->sym)
        return llmq_fail("asymmetric grids lose zero points of 0 in GPTQ v1 (stored as zero - 1); use --format "
                         "gptq_v2");
    return 0;
}

int export_fits(export_format f, const export_settings *s, int out, int in, const char **why)
{
    (void)s;
    if (f == EXPORT_LLMQ)
        return 0;
    return gptq_fits(in, out, s->bits, why) ? 0 : -1;
}

int export_new(export_ctx **out, export_format f, const export_settings *s)
{
    if (export_check_settings(f, s))
        return -1;
    export_ctx *e = calloc(1, sizeof *e);
    if (!e || !(e->w = st_writer_new())) {
        free(e);
        return llmq_fail("out of memory");
    }
    e->f = f;
    e->s = *s;
    *out = e;
    return 0;
}

void export_free(export_ctx *e)
{
    if (!e)
        return;
    st_writer_free(e->w);
    for (int i = 0; i < e->nbufs; i++)
        free(e->bufs[i]);
    for (int i = 0; i < e->nskipped; i++)
        free(e->skipped[i]);
    free(e->bufs), free(e->skipped), free(e);
}

/* Allocate a buffer that lives until export_free. */
static void *own(export_ctx *e, size_t bytes)
{
    if (e->nbufs == e->capbufs) {
        int nc = e->capbufs ? 2 * e->capbufs : 256;
        void **nb = realloc(e->bufs, (size_t)nc * sizeof *nb);
        if (!nb)
            return NULL;
        e->bufs = nb, e->capbufs = nc;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    if (p)
        e->bufs[e->nbufs++] = p;
    return p;
}

static int add(export_ctx *e, const char *prefix, const char *suffix, llmq_dtype dt, int ndim, int64_t d0,
               int64_t d1, const void *data)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    int64_t shape[2] = {d0, d1};
    if (st_writer_add(e->w, name, dt, ndim, shape, data))
        return -1;
    return e->tee ? st_writer_add(e->tee, name, dt, ndim, shape, data) : 0;
}

void export_tee(export_ctx *e, st_writer *w) { e->tee = w; }

int export_copy_tensor(export_ctx *e, const st_tensor *t)
{
    return st_writer_add(e->w, t->name, t->dtype, t->ndim, t->shape, t->data);
}

static int add_gptq(export_ctx *e, const char *prefix, const llmq_qweight *qw)
{
    int K = qw->in, N = qw->out, ng = qw->ngroups;
    size_t qrows = gptq_qweight_rows(K, qw->bits), zcols = gptq_qzeros_cols(N, qw->bits);
    int32_t *qweight = own(e, qrows * N * 4), *qzeros = own(e, (size_t)ng * zcols * 4);
    uint16_t *scales = own(e, (size_t)ng * N * 2);
    int32_t *g_idx = own(e, (size_t)K * 4);
    if (!qweight || !qzeros || !scales || !g_idx)
        return llmq_fail("out of memory exporting %s", prefix);
    if (gptq_pack_qweight(qw, qweight) || gptq_pack_qzeros(qw, e->f == EXPORT_GPTQ_V2, qzeros))
        return llmq_wrap("%s", prefix);
    gptq_pack_scales(qw, scales);
    memcpy(g_idx, qw->g_idx, (size_t)K * 4);
    return add(e, prefix, "qweight", LLMQ_I32, 2, (int64_t)qrows, N, qweight) ||
           add(e, prefix, "qzeros", LLMQ_I32, 2, ng, (int64_t)zcols, qzeros) ||
           add(e, prefix, "scales", LLMQ_F16, 2, ng, N, scales) || add(e, prefix, "g_idx", LLMQ_I32, 1, K, 0, g_idx);
}

static int module_meta(export_ctx *e, const char *prefix, const char *json)
{
    char key[256];
    snprintf(key, sizeof key, "llmq.quant.%s", prefix);
    if (st_writer_meta(e->w, key, json))
        return -1;
    return e->tee ? st_writer_meta(e->tee, key, json) : 0;
}

static int add_llmq(export_ctx *e, const char *prefix, const llmq_qweight *qw)
{
    int K = qw->in, N = qw->out, ng = qw->ngroups;
    size_t rb = llmqfmt_row_bytes(K, qw->bits);
    uint8_t *codes = own(e, rb * N);
    uint16_t *scales = own(e, (size_t)N * ng * 2), *zeros = own(e, (size_t)N * ng * 2);
    if (!codes || !scales || !zeros)
        return llmq_fail("out of memory exporting %s", prefix);
    llmqfmt_pack_codes(qw, codes);
    llmqfmt_pack_params(qw, scales, zeros);
    /* g_idx only where it is not k / G: act-order without static groups. */
    int need_gidx = 0;
    int G = qw->group > 0 ? qw->group : K;
    for (int k = 0; k < K; k++)
        need_gidx |= qw->g_idx[k] != k / G;
    int rc = add(e, prefix, qw->bits <= 4 ? "qweight_u4x2" : "qweight_u8", LLMQ_U8, 2, N, (int64_t)rb, codes) ||
             add(e, prefix, "scales", LLMQ_F16, 2, N, ng, scales) || add(e, prefix, "zeros", LLMQ_F16, 2, N, ng, zeros);
    if (!rc && need_gidx) {
        int32_t *g_idx = own(e, (size_t)K * 4);
        if (!g_idx)
            return llmq_fail("out of memory");
        memcpy(g_idx, qw->g_idx, (size_t)K * 4);
        rc = add(e, prefix, "g_idx", LLMQ_I32, 1, K, 0, g_idx);
    }
    char json[320];
    snprintf(json, sizeof json,
             "{\"method\": \"%s\", \"bits\": %d, \"group_size\": %d, \"sym\": %s, \"act_order\": %s, "
             "\"static_groups\": %s, \"shape\": [%d, %d]}",
             e->s.method, qw->bits, qw->group, qw->sym ? "true" : "false", e->s.act_order ? "true" : "false",
             e->s.static_groups ? "true" : "false", N, K);
    return rc ? rc : module_meta(e, prefix, json);
}

int export_qweight(export_ctx *e, const char *prefix, const llmq_qweight *qw)
{
    return e->f == EXPORT_LLMQ ? add_llmq(e, prefix, qw) : add_gptq(e, prefix, qw);
}

int export_nf4(export_ctx *e, const char *prefix, const llmq_nf4 *q, int out, int in)
{
    if (e->f != EXPORT_LLMQ)
        return llmq_fail("%s: NF4 needs --format llmq", prefix);
    size_t packed = (q->n + 1) / 2;
    uint8_t *codes = own(e, packed);
    if (!codes)
        return llmq_fail("out of memory exporting %s", prefix);
    nf4_pack(q->codes, q->n, codes);
    int rc = add(e, prefix, "nf4_u4x2", LLMQ_U8, 1, (int64_t)packed, 0, codes);
    if (!rc && !q->double_quant) {
        float *absmax = own(e, q->nblocks * 4);
        if (!absmax)
            return llmq_fail("out of memory");
        memcpy(absmax, q->absmax, q->nblocks * 4);
        rc = add(e, prefix, "nf4_absmax", LLMQ_F32, 1, (int64_t)q->nblocks, 0, absmax);
    } else if (!rc) {
        uint8_t *qa = own(e, q->nblocks);
        float *a2 = own(e, q->nblocks2 * 4), *off = own(e, 4);
        if (!qa || !a2 || !off)
            return llmq_fail("out of memory");
        memcpy(qa, q->qabsmax, q->nblocks);
        memcpy(a2, q->absmax2, q->nblocks2 * 4);
        *off = q->offset;
        rc = add(e, prefix, "nf4_qabsmax", LLMQ_U8, 1, (int64_t)q->nblocks, 0, qa) ||
             add(e, prefix, "nf4_absmax2", LLMQ_F32, 1, (int64_t)q->nblocks2, 0, a2) ||
             add(e, prefix, "nf4_offset", LLMQ_F32, 1, 1, 0, off);
    }
    char json[200];
    snprintf(json, sizeof json, "{\"method\": \"nf4\", \"blocksize\": %d, \"double_quant\": %s, \"shape\": [%d, %d]}",
             q->blocksize, q->double_quant ? "true" : "false", out, in);
    return rc ? rc : module_meta(e, prefix, json);
}

int export_skip(export_ctx *e, const char *prefix)
{
    char **ns = realloc(e->skipped, (size_t)(e->nskipped + 1) * sizeof *ns);
    if (!ns)
        return llmq_fail("out of memory");
    e->skipped = ns;
    if (!(e->skipped[e->nskipped] = strdup(prefix)))
        return llmq_fail("out of memory");
    e->nskipped++;
    return 0;
}

int export_meta(export_ctx *e, const char *key, const char *value) { return st_writer_meta(e->w, key, value); }

/* quantization_config: for GPTQ every field vLLM and transformers read
 * (vLLM upgrades to Marlin only when bits, group_size, sym and desc_act are
 * all present). */
static cJSON *quant_config(const export_ctx *e)
{
    const export_settings *s = &e->s;
    cJSON *q = cJSON_CreateObject();
    if (e->f == EXPORT_LLMQ) {
        cJSON_AddStringToObject(q, "quant_method", "llmq");
        cJSON_AddNumberToObject(q, "format_version", 1);
        cJSON_AddStringToObject(q, "method", s->method);
        if (!strcmp(s->method, "nf4")) {
            cJSON_AddNumberToObject(q, "blocksize", 64);
            cJSON_AddBoolToObject(q, "double_quant", s->nf4_double);
            return q;
        }
    } else {
        cJSON_AddStringToObject(q, "quant_method", "gptq");
    }
    cJSON_AddNumberToObject(q, "bits", s->bits);
    cJSON_AddNumberToObject(q, "group_size", s->group);
    cJSON_AddBoolToObject(q, "sym", s->sym);
    if (e->f == EXPORT_LLMQ)
        return q;
    cJSON_AddBoolToObject(q, "desc_act", s->act_order);
    cJSON_AddBoolToObject(q, "static_groups", s->static_groups);
    cJSON_AddBoolToObject(q, "true_sequential", s->true_sequential);
    char damp[32]; /* the value as typed (0.01), not its float32 neighbour */
    snprintf(damp, sizeof damp, "%.6g", (double)s->damp);
    cJSON_AddNumberToObject(q, "damp_percent", strtod(damp, NULL));
    cJSON_AddStringToObject(q, "checkpoint_format", export_format_name(e->f));
    cJSON_AddBoolToObject(q, "lm_head", 0);
    cJSON_AddStringToObject(q, "quantizer", "llmq " LLMQ_VERSION);
    if (e->nskipped) {
        /* GPTQModel's per-module overrides: "-:<regex>" = not quantized. */
        cJSON *dyn = cJSON_AddObjectToObject(q, "dynamic");
        for (int i = 0; i < e->nskipped; i++) {
            char rule[300], *o = rule + 3;
            memcpy(rule, "-:^", 3);
            for (const char *p = e->skipped[i]; *p && o < rule + sizeof rule - 4; p++) {
                if (*p == '.')
                    *o++ = '\\';
                *o++ = *p;
            }
            *o++ = '$', *o = 0;
            cJSON_AddItemToObject(dyn, rule, cJSON_CreateObject());
        }
    }
    return q;
}

static int write_json(const char *dir, const char *name, cJSON *obj)
{
    char *text = cJSON_Print(obj), *path = llmq_path_join(dir, name);
    int rc = text && path ? 0 : llmq_fail("out of memory");
    if (!rc) {
        size_t n = strlen(text);
        text[n] = '\n';
        rc = llmq_write_file(path, text, n + 1);
        text[n] = 0;
    }
    free(text);
    free(path);
    return rc;
}

static int write_configs(export_ctx *e, const char *src_dir, const char *dir)
{
    char *path = llmq_path_join(src_dir, "config.json"), *text = NULL;
    size_t len;
    int rc = -1;
    cJSON *cfg = NULL, *q = quant_config(e);
    if (!path || !q || llmq_read_file(path, &text, &len))
        goto done;
    if (!(cfg = cJSON_ParseWithLength(text, len))) {
        llmq_fail("%s: invalid JSON", path);
        goto done;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "quantization_config");
    cJSON_AddItemToObject(cfg, "quantization_config", cJSON_Duplicate(q, 1));
    rc = write_json(dir, "config.json", cfg);
    if (rc == 0 && e->f != EXPORT_LLMQ)
        rc = write_json(dir, "quantize_config.json", q);
done:
    cJSON_Delete(cfg);
    cJSON_Delete(q);
    free(text);
    free(path);
    return rc;
}

int export_write(export_ctx *e, const char *src_dir, const char *dir, size_t max_shard_bytes)
{
    if (st_writer_meta(e->w, "format", "pt") ||
        (e->f == EXPORT_LLMQ && st_writer_meta(e->w, "llmq.format", "1")) ||
        st_writer_meta(e->w, "llmq_version", LLMQ_VERSION))
        return -1;
    /* Side files first, so that config.json is then overwritten by ours. */
    if (hfdir_copy_side_files(src_dir, dir) || st_write_sharded(e->w, dir, max_shard_bytes))
        return -1;
    return write_configs(e, src_dir, dir);
}
