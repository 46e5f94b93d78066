/* The output model directory: every tensor of the input in its order (the
 * smoothed ones replaced), sharded like the input, __metadata__ recording
 * how it was made, the config and tokenizer files copied, all inside the
 * outdir transaction (smooth/outdir.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "../src/fileio.h"
#include "../formats/hfdir.h"
#include "smooth.h"

static int add_metadata(st_writer *w, const smooth_opts *o, const smooth_result *res)
{
    char alpha[32], folds[160];
    if (o->alpha == SMOOTH_ALPHA_AUTO)
        snprintf(alpha, sizeof alpha, "auto");
    else
        snprintf(alpha, sizeof alpha, "%g", o->alpha);
    snprintf(folds, sizeof folds, "input_layernorm>qkv,post_attention_layernorm>gate_up%s%s",
             o->fold_vo ? ",v_proj>o_proj" : "", o->fold_ud ? ",up_proj>down_proj" : "");
    if (st_writer_meta(w, "format", "pt") || st_writer_meta(w, "llmq_smooth_alpha", alpha) ||
        st_writer_meta(w, "llmq_smooth_scales", o->scales) || st_writer_meta(w, "llmq_smooth_folds", folds))
        return -1;
#ifdef LLMQ_VERSION
    if (st_writer_meta(w, "llmq_version", LLMQ_VERSION))
        return -1;
#endif
    if (o->alpha == SMOOTH_ALPHA_AUTO) {
        char *json = smooth_alphas_json(res);
        int rc = json ? st_writer_meta(w, "llmq_smooth_alphas", json) : llmq_fail("out of memory");
        free(json);
        return rc;
    }
    return 0;
}

/* The new data of tensor t, or NULL when it is copied unchanged. */
static const void *replacement_of(const st_tensor *const *changed, const void *const *data, int n, const st_tensor *t)
{
    for (int i = 0; i < n; i++)
        if (changed[i] == t)
            return data[i];
    return NULL;
}

int smooth_write_output(const smooth_opts *o, const st_model *m, const st_tensor *const *changed,
                        const void *const *data, int n_changed, const smooth_result *res, llmq_outdir *d)
{
    st_writer *w = st_writer_new();
    if (!w)
        return llmq_fail("out of memory");
    int rc = add_metadata(w, o, res);
    int n = st_model_count(m);
    for (int i = 0; i < n && !rc; i++) {
        const st_tensor *t = st_model_at(m, i);
        const void *nd = replacement_of(changed, data, n_changed, t);
        /* Untouched tensors go out straight from the input's mapping:
         * byte-identical, and never held twice in memory. */
        rc = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, nd ? nd : t->data);
    }
    size_t max = o->max_shard_bytes ? o->max_shard_bytes : hfdir_shard_bytes(m, o->model_dir);
    if (!rc)
        rc = llmq_outdir_create(d);
    if (!rc)
        rc = st_write_sharded(w, d->tmp, max);
    if (!rc)
        rc = hfdir_copy_side_files(o->model_dir, d->tmp);
    if (!rc)
        rc = llmq_outdir_commit(d);
    else
        llmq_outdir_abort(d);
    st_writer_free(w);
    return rc;
}

char *smooth_alphas_json(const smooth_result *r)
{
    size_t cap = 64 + (size_t)SMOOTH_NGROUPS * (32 + 8 * (size_t)r->n_layers), len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    len += (size_t)snprintf(s + len, cap - len, "{");
    int first = 1;
    for (int g = 0; g < SMOOTH_NGROUPS; g++) {
        if (!(r->mask & (1u << g)))
            continue;
        len += (size_t)snprintf(s + len, cap - len, "%s\"%s\":[", first ? "" : ",", smooth_group_name((smooth_group)g));
        for (int i = 0; i < r->n_layers; i++)
            len += (size_t)snprintf(s + len, cap - len, "%s%.2f", i ? "," : "", r->alpha[g][i]);
        len += (size_t)snprintf(s + len, cap - len, "]");
        first = 0;
    }
    snprintf(s + len, cap - len, "}");
    return s;
}

