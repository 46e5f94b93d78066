/* Folding the smoothing factors into one decoder layer (fp32, in place). */
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "smooth.h"

int smooth_group_in(const smooth_layer *L, smooth_group g)
{
    switch (g) {
    case SMOOTH_QKV:
    case SMOOTH_GATEUP: return L->hidden;
    case SMOOTH_O: return L->n_heads * L->head_dim;
    default: return L->ffn;
    }
}

int smooth_group_out(const smooth_layer *L, smooth_group g)
{
    switch (g) {
    case SMOOTH_QKV: return (L->n_heads + 2 * L->n_kv) * L->head_dim;
    case SMOOTH_GATEUP: return 2 * L->ffn;
    default: return L->hidden;
    }
}

/* The linears of group g and their row counts; returns how many. */
static int group_linears(const smooth_layer *L, smooth_group g, float *w[3], int rows[3])
{
    int q = L->n_heads * L->head_dim, kv = L->n_kv * L->head_dim;
    switch (g) {
    case SMOOTH_QKV:
        w[0] = L->q, rows[0] = q;
        w[1] = L->k, rows[1] = kv;
        w[2] = L->v, rows[2] = kv;
        return 3;
    case SMOOTH_GATEUP:
        w[0] = L->gate, rows[0] = L->ffn;
        w[1] = L->up, rows[1] = L->ffn;
        return 2;
    case SMOOTH_O: w[0] = L->o, rows[0] = L->hidden; return 1;
    default: w[0] = L->down, rows[0] = L->hidden; return 1;
    }
}

void smooth_group_weights(const smooth_layer *L, smooth_group g, float *w)
{
    float *lin[3];
    int rows[3], n = group_linears(L, g, lin, rows), in = smooth_group_in(L, g);
    for (int i = 0; i < n; i++) {
        size_t len = (size_t)rows[i] * in;
        memcpy(w, lin[i], len * sizeof *w);
        w += len;
    }
}

/* o channels reading one v channel must share its factor: replace each
 * per-o value by the max over the query heads of its KV head. */
static void tie_over_query_heads(const smooth_layer *L, float *per_o, float *scratch_v)
{
    smooth_vo_reduce(per_o, L->n_heads, L->n_kv, L->head_dim, scratch_v);
    smooth_vo_expand(scratch_v, L->n_heads, L->n_kv, L->head_dim, per_o);
}

int smooth_group_stats(const smooth_layer *L, smooth_group g, const float *act, float *act_out, float *wmax_out)
{
    float *lin[3];
    int rows[3], n = group_linears(L, g, lin, rows), in = smooth_group_in(L, g);
    memcpy(act_out, act, (size_t)in * sizeof *act_out);
    memset(wmax_out, 0, (size_t)in * sizeof *wmax_out);
    for (int i = 0; i < n; i++)
        smooth_colmax(lin[i], rows[i], in, wmax_out);
    if (g == SMOOTH_O) {
        float *v = malloc((size_t)L->n_kv * L->head_dim * sizeof *v);
        if (!v)
            return llmq_fail("smooth: out of memory");
        tie_over_query_heads(L, act_out, v);
        tie_over_query_heads(L, wmax_out, v);
        free(v);
    }
    return 0;
}

static void div_vec(float *x, const float *s, int n)
{
    for (int j = 0; j < n; j++)
        x[j] /= s[j];
}

/* W[:, j] *= s[j] for a row-major [rows, cols] matrix. */
static void mul_cols(float *w, int rows, int cols, const float *s)
{
    for (int r = 0; r < rows; r++) {
        float *row = w + (size_t)r * cols;
        for (int j = 0; j < cols; j++)
            row[j] *= s[j];
    }
}

/* W[r, :] /= s[r]. */
static void div_rows(float *w, int rows, int cols, const float *s)
{
    for (int r = 0; r < rows; r++) {
        float *row = w + (size_t)r * cols;
        for (int j = 0; j < cols; j++)
            row[j] /= s[r];
    }
}

/* Fold the factors s of group g: the producer of the input divides, the
 * consumers' columns multiply. */
static int fold_group(smooth_layer *L, smooth_group g, const float *s)
{
    float *lin[3];
    int rows[3], n = group_linears(L, g, lin, rows), in = smooth_group_in(L, g);
    switch (g) {
    case SMOOTH_QKV: div_vec(L->ln1, s, L->hidden); break;
    case SMOOTH_GATEUP: div_vec(L->ln2, s, L->hidden); break;
    case SMOOTH_O: {
        /* s is tied over the query heads, so the factor of v row r is the
         * one of any o channel it feeds. */
        int nv = L->n_kv * L->head_dim;
        float *sv = malloc((size_t)nv * sizeof *sv);
        if (!sv)
            return llmq_fail("smooth: out of memory");
        smooth_vo_reduce(s, L->n_heads, L->n_kv, L->head_dim, sv);
        div_rows(L->v, nv, L->hidden, sv);
        if (L->v_bias)
            div_vec(L->v_bias, sv, nv);
        free(sv);
        break;
    }
    default: div_rows(L->up, L->ffn, L->hidden, s); break;
    }
    for (int i = 0; i < n; i++)
        mul_cols(lin[i], rows[i], in, s);
    return 0;
}

int smooth_layer_apply(smooth_layer *L, unsigned mask, const float *const act[SMOOTH_NGROUPS],
                       const double alpha[SMOOTH_NGROUPS], float *const s_out[SMOOTH_NGROUPS])
{
    float *s[SMOOTH_NGROUPS] = {0};
    int rc = 0;
    /* Every factor from the weights as stored: the folds of one group
     * change rows of another group's linear (v, up). */
    for (int g = 0; g < SMOOTH_NGROUPS && !rc; g++) {
        if (!(mask & (1u << g)))
            continue;
        size_t in = (size_t)smooth_group_in(L, (smooth_group)g);
        float *a = malloc(in * sizeof *a), *w = malloc(in * sizeof *w);
        s[g] = malloc(in * sizeof *s[g]);
        if (!a || !w || !s[g])
            rc = llmq_fail("smooth: out of memory");
        else
            rc = smooth_group_stats(L, (smooth_group)g, act[g], a, w);
        if (!rc) {
            smooth_factors(a, w, (int)in, alpha[g], s[g]);
            if (s_out && s_out[g])
                memcpy(s_out[g], s[g], in * sizeof *s[g]);
        }
        free(a);
        free(w);
    }
    for (int g = 0; g < SMOOTH_NGROUPS && !rc; g++)
        if (mask & (1u << g))
            rc = fold_group(L, (smooth_group)g, s[g]);
    for (int g = 0; g < SMOOTH_NGROUPS; g++)
        free(s[g]);
    return rc;
}
