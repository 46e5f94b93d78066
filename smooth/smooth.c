/* The llmq-smooth driver: check every input first, smooth the model layer
 * by layer in memory, then write the output directory in one transaction.
 *
 * Nothing touches the disk until every input has been checked and every
 * layer computed, so a bad scales file, a wrong alpha or a model llmq cannot
 * smooth leaves no trace; write errors after that remove the temporary
 * directory (smooth/outdir.c). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "smooth.h"

typedef struct {
    const st_tensor *ln1, *ln2, *lin[LIN_COUNT], *v_bias;
} layer_tensors;

/* Tensors whose data the output replaces: new bytes in the tensor's own dtype. */
typedef struct {
    const st_tensor **t;
    void **data;
    int n, cap;
} replacements;

static void replacements_free(replacements *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->data[i]);
    free(r->t);
    free(r->data);
}

/* Store the fp32 result f32 (ownership taken) as tensor t's new data. */
static int replace_tensor(replacements *r, const st_tensor *t, float *f32)
{
    /* A factor near the 1e-5 clamp (a dead channel) scales by up to 1e5:
     * refuse a result the storage dtype cannot hold rather than write inf. */
    float limit = t->dtype == LLMQ_F16 ? 65504.0f : FLT_MAX;
    for (int64_t i = 0; i < t->numel; i++) {
        if (!(fabsf(f32[i]) <= limit)) {
            double v = f32[i];
            free(f32);
            return llmq_fail("smoothing makes '%s'[%lld] = %g, which %s cannot hold (a near-zero activation "
                             "or weight channel?); try another alpha",
                             t->name, (long long)i, v, llmq_dtype_name(t->dtype));
        }
    }
    void *data = f32;
    if (t->dtype != LLMQ_F32) {
        data = malloc(t->nbytes + 1);
        if (!data || llmq_convert(data, t->dtype, f32, LLMQ_F32, (size_t)t->numel)) {
            free(data);
            free(f32);
            return data ? llmq_wrap("tensor '%s'", t->name) : llmq_fail("out of memory storing '%s'", t->name);
        }
        free(f32);
    }
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        const st_tensor **nt = realloc(r->t, (size_t)cap * sizeof *nt);
        if (nt)
            r->t = nt;
        void **nd = nt ? realloc(r->data, (size_t)cap * sizeof *nd) : NULL;
        if (!nd) {
            free(data);
            return llmq_fail("out of memory storing '%s'", t->name);
        }
        r->data = nd;
        r->cap = cap;
    }
    r->t[r->n] = t;
    r->data[r->n++] = data;
    return 0;
}

/* A linear of each group: its dtype is the one the group's smoothed
 * weights are stored in (what --alpha auto rounds through). */
static const llmq_lin g_first_lin[SMOOTH_NGROUPS] = {LIN_Q, LIN_GATE, LIN_O, LIN_DOWN};

/* ---- the model's tensors ---- */

static int model_tensor(const st_model *m, const char *dir, const char *name, int ndim, int64_t d0, int64_t d1,
                        const st_tensor **out)
{
    const st_tensor *t = st_model_find(m, name);
    if (!t)
        return llmq_fail("%s: the model has no tensor '%s'", dir, name);
    if (!llmq_dtype_is_float(t->dtype))
        return llmq_fail("%s: tensor '%s' has dtype %s; llmq-smooth needs a float model (F32, F16 or BF16)", dir, name,
                         llmq_dtype_name(t->dtype));
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        char want[64], have[96];
        if (ndim == 2)
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
        else
            snprintf(want, sizeof want, "[%lld]", (long long)d0);
        smooth_shape_str(t, have, sizeof have);
        return llmq_fail("%s: tensor '%s' has shape %s, config.json implies %s", dir, name, have, want);
    }
    *out = t;
    return 0;
}

static int find_layer(const st_model *m, const char *dir, const llmq_config *c, int i, layer_tensors *lt)
{
    char name[160];
    memset(lt, 0, sizeof *lt);
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", i);
    if (model_tensor(m, dir, name, 1, c->hidden, 0, &lt->ln1))
        return -1;
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", i);
    if (model_tensor(m, dir, name, 1, c->hidden, 0, &lt->ln2))
        return -1;
    for (int l = 0; l < LIN_COUNT; l++) {
        int in, out;
        config_lin_shape(c, (llmq_lin)l, &in, &out);
        snprintf(name, sizeof name, "model.layers.%d.%s.weight", i, config_lin_name((llmq_lin)l));
        if (model_tensor(m, dir, name, 2, out, in, &lt->lin[l]))
            return -1;
    }
    /* Qwen2's v bias scales with the v rows in the o fold. */
    snprintf(name, sizeof name, "model.layers.%d.self_attn.v_proj.bias", i);
    if (st_model_find(m, name) && model_tensor(m, dir, name, 1, (int64_t)c->n_kv * c->head_dim, 0, &lt->v_bias))
        return -1;
    return 0;
}

/* ---- one layer ---- */

typedef struct {
    smooth_layer L;
    float **slot[LIN_COUNT + 3]; /* &L.ln1, ... in the order of tensor_of */
} layer_buf;

static float *load_f32(const st_tensor *t)
{
    float *x = malloc((size_t)t->numel * sizeof *x + 1);
    if (!x) {
        llmq_fail("out of memory reading '%s'", t->name);
        return NULL;
    }
    if (st_read_f32(t, x)) {
        free(x);
        return NULL;
    }
    return x;
}

/* Slots 0..6 are the linears (llmq_lin order), then ln1, ln2, v bias. */
static void layer_slots(layer_buf *b)
{
    smooth_layer *L = &b->L;
    float **s[LIN_COUNT + 3] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down, &L->ln1, &L->ln2, &L->v_bias};
    memcpy(b->slot, s, sizeof s);
}

static const st_tensor *tensor_of(const layer_tensors *lt, int slot)
{
    return slot < LIN_COUNT ? lt->lin[slot] : slot == LIN_COUNT ? lt->ln1 : slot == LIN_COUNT + 1 ? lt->ln2 : lt->v_bias;
}

static void layer_free(layer_buf *b)
{
    for (int s = 0; s < LIN_COUNT + 3; s++) {
        free(*b->slot[s]);
        *b->slot[s] = NULL;
    }
}

static int layer_load(layer_buf *b, const layer_tensors *lt, const llmq_config *c)
{
    memset(b, 0, sizeof *b);
    layer_slots(b);
    b->L = (smooth_layer){.hidden = c->hidden, .ffn = c->ffn, .n_heads = c->n_heads, .n_kv = c->n_kv,
                          .head_dim = c->head_dim};
    for (int s = 0; s < LIN_COUNT + 3; s++) {
        const st_tensor *t = tensor_of(lt, s);
        if (t && !(*b->slot[s] = load_f32(t))) {
            layer_free(b);
            return -1;
        }
    }
    return 0;
}

/* Which slots group g changes. */
static int group_changes(smooth_group g, int slot)
{
    switch (g) {
    case SMOOTH_QKV: return slot == LIN_Q || slot == LIN_K || slot == LIN_V || slot == LIN_COUNT;
    case SMOOTH_GATEUP: return slot == LIN_GATE || slot == LIN_UP || slot == LIN_COUNT + 1;
    case SMOOTH_O: return slot == LIN_V || slot == LIN_O || slot == LIN_COUNT + 2;
    default: return slot == LIN_UP || slot == LIN_DOWN;
    }
}

/* Choose alpha for group g of a layer from its held-out inputs. */
static int auto_alpha(const smooth_layer *L, smooth_group g, const float *act, const st_file *sf, const char *spath,
                      int layer, llmq_dtype dt, double *alpha, double *errs)
{
    int in = smooth_group_in(L, g), out = smooth_group_out(L, g), T = 0, rc = -1;
    float *x = NULL, *w = malloc((size_t)out * in * sizeof *w);
    float *a = malloc((size_t)in * sizeof *a), *wm = malloc((size_t)in * sizeof *wm);
    if (!w || !a || !wm) {
        llmq_fail("out of memory");
        goto done;
    }
    if (smooth_read_heldout(sf, spath, layer, g, &x, &T) || smooth_group_stats(L, g, act, a, wm))
        goto done;
    smooth_group_weights(L, g, w);
    if (smooth_auto_alpha(x, T, in, w, out, a, wm, dt, alpha, errs)) {
        llmq_wrap("layer %d, %s", layer, smooth_group_name(g));
        goto done;
    }
    rc = 0;
done:
    free(x);
    free(w);
    free(a);
    free(wm);
    return rc;
}

/* choose_only: compute the auto alphas of layer i into res and stop;
 * otherwise smooth layer i with res's alphas (auto) or o->alpha. */
static int smooth_one_layer(const smooth_opts *o, const llmq_config *c, const st_model *m, const st_file *sf, int i,
                            smooth_result *res, replacements *rep, int choose_only)
{
    layer_tensors lt;
    layer_buf b;
    float *act[SMOOTH_NGROUPS] = {0};
    double alpha[SMOOTH_NGROUPS] = {0};
    int rc = -1;
    if (find_layer(m, o->model_dir, c, i, &lt) || layer_load(&b, &lt, c))
        return -1;
    for (int g = 0; g < SMOOTH_NGROUPS; g++) {
        if (!(res->mask & (1u << g)))
            continue;
        if (smooth_read_act(sf, o->scales, i, (smooth_group)g, &act[g]))
            goto done;
        alpha[g] = o->alpha == SMOOTH_ALPHA_AUTO ? res->alpha[g][i] : o->alpha;
        if (choose_only &&
            auto_alpha(&b.L, (smooth_group)g, act[g], sf, o->scales, i, lt.lin[g_first_lin[g]]->dtype, &alpha[g],
                       res->err[g] + (size_t)i * SMOOTH_NGRID))
            goto done;
        res->alpha[g][i] = alpha[g];
    }
    if (choose_only) {
        rc = 0;
        goto done;
    }
    if (smooth_layer_apply(&b.L, res->mask, (const float *const *)act, alpha, NULL)) {
        llmq_wrap("layer %d", i);
        goto done;
    }
    for (int s = 0; s < LIN_COUNT + 3; s++) {
        int changed = 0;
        for (int g = 0; g < SMOOTH_NGROUPS; g++)
            changed |= (res->mask & (1u << g)) && group_changes((smooth_group)g, s);
        if (!changed || !*b.slot[s])
            continue;
        float *x = *b.slot[s];
        *b.slot[s] = NULL; /* replace_tensor owns it now */
        if (replace_tensor(rep, tensor_of(&lt, s), x))
            goto done;
        res->tensors_changed++;
    }
    rc = 0;
done:
    for (int g = 0; g < SMOOTH_NGROUPS; g++)
        free(act[g]);
    layer_free(&b);
    return rc;
}

/* ---- results ---- */

void smooth_result_free(smooth_result *r)
{
    if (!r)
        return;
    for (int g = 0; g < SMOOTH_NGROUPS; g++) {
        free(r->alpha[g]);
        free(r->err[g]);
    }
    memset(r, 0, sizeof *r);
}

static int result_init(smooth_result *r, int n_layers, unsigned mask, int with_err)
{
    memset(r, 0, sizeof *r);
    r->n_layers = n_layers;
    r->mask = mask;
    for (int g = 0; g < SMOOTH_NGROUPS; g++) {
        if (!(mask & (1u << g)))
            continue;
        r->alpha[g] = calloc((size_t)n_layers, sizeof *r->alpha[g]);
        r->err[g] = with_err ? calloc((size_t)n_layers * SMOOTH_NGRID, sizeof *r->err[g]) : NULL;
        if (!r->alpha[g] || (with_err && !r->err[g])) {
            smooth_result_free(r);
            return llmq_fail("out of memory");
        }
    }
    return 0;
}

/* Score the per-layer choice and every uniform alpha by held-out W8A8
 * loss (smooth/select.c) and keep the best in res->alpha. */
static int select_by_heldout_loss(const smooth_opts *o, const llmq_config *c, const st_file *sf, smooth_result *res)
{
    double *cand[SMOOTH_NGROUPS] = {0}, *local[SMOOTH_NGROUPS] = {0};
    int rc = -1;
    for (int g = 0; g < SMOOTH_NGROUPS; g++) {
        if (!(res->mask & (1u << g)))
            continue;
        cand[g] = malloc((size_t)c->n_layers * sizeof(double));
        local[g] = malloc((size_t)c->n_layers * sizeof(double));
        if (!cand[g] || !local[g]) {
            llmq_fail("out of memory");
            goto done;
        }
        memcpy(local[g], res->alpha[g], (size_t)c->n_layers * sizeof(double));
    }
    for (int k = -1; k < SMOOTH_NGRID; k++) { /* -1: the per-layer choice */
        for (int g = 0; g < SMOOTH_NGROUPS; g++)
            if (cand[g])
                for (int i = 0; i < c->n_layers; i++)
                    cand[g][i] = k < 0 ? local[g][i] : smooth_grid_alpha(k);
        double nll;
        long count;
        if (smooth_heldout_nll(o->model_dir, o->backend, c, sf, o->scales, res->mask, cand, &nll, &count))
            goto done;
        res->cand_nll[k + 1] = nll / (double)count;
        if (res->cand_nll[k + 1] < res->cand_nll[res->chosen])
            res->chosen = k + 1;
    }
    res->scored = 1;
    for (int g = 0; g < SMOOTH_NGROUPS; g++)
        if (cand[g])
            for (int i = 0; i < c->n_layers; i++)
                res->alpha[g][i] = res->chosen == 0 ? local[g][i] : smooth_grid_alpha(res->chosen - 1);
    rc = 0;
done:
    for (int g = 0; g < SMOOTH_NGROUPS; g++)
        free(cand[g]), free(local[g]);
    return rc;
}

/* ---- the whole model ---- */

int smooth_model(const smooth_opts *o, smooth_result *res)
{
    smooth_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    if (!o->model_dir || !o->scales || !o->out_dir)
        return llmq_fail("smooth: the model directory, the scales file and the output directory are required");
    int is_auto = o->alpha == SMOOTH_ALPHA_AUTO;
    if (!is_auto && !(o->alpha >= 0.0 && o->alpha <= 1.0))
        return llmq_fail("alpha %g is outside [0, 1]", o->alpha);

    llmq_outdir d;
    if (llmq_outdir_begin(&d, o->out_dir, o->model_dir, o->force))
        return -1;
    llmq_config c;
    st_model *m = NULL;
    st_file *sf = NULL;
    replacements rep = {0};
    int rc = -1, layers_done = 0;
    unsigned mask = 1u << SMOOTH_QKV | 1u << SMOOTH_GATEUP | (o->fold_vo ? 1u << SMOOTH_O : 0) |
                    (o->fold_ud ? 1u << SMOOTH_DOWN : 0);
    if (config_load(&c, o->model_dir))
        goto fail;
    if (c.quant_method[0]) {
        llmq_fail("%s: the model is already quantized (%s); smooth the float model", o->model_dir, c.quant_method);
        goto fail;
    }
    if (st_model_open(&m, o->model_dir) || st_open(&sf, o->scales) ||
        smooth_check_scales(sf, o->scales, &c, mask, is_auto) || result_init(res, c.n_layers, mask, is_auto))
        goto fail;
    if (is_auto) {
        for (int i = 0; i < c.n_layers; i++)
            if (smooth_one_layer(o, &c, m, sf, i, res, &rep, 1))
                goto fail;
        if (o->backend && select_by_heldout_loss(o, &c, sf, res))
            goto fail;
    }
    for (int i = 0; i < c.n_layers; i++) {
        if (smooth_one_layer(o, &c, m, sf, i, res, &rep, 0))
            goto fail;
        layers_done++;
        if (o->on_layer)
            o->on_layer(o->ctx, layers_done, c.n_layers);
    }
    res->tensors_total = st_model_count(m);
    rc = smooth_write_output(o, m, rep.t, (const void *const *)rep.data, rep.n, res, &d); /* commits or aborts d */
    goto done;
fail:
    llmq_outdir_abort(&d);
done:
    if (rc || res == &local)
        smooth_result_free(res);
    replacements_free(&rep);
    st_close(sf);
    st_model_close(m);
    return rc;
}
