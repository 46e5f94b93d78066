#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/safetensors.h"
#include "../src/error.h"

static const char *g_group_names[IN_COUNT] = {"qkv", "o", "gateup", "down"};
static const llmq_input g_lin_group[LIN_COUNT] = {IN_QKV, IN_QKV, IN_QKV, IN_O, IN_GATEUP, IN_GATEUP, IN_DOWN};

typedef struct {
    int cols;
    float *amax_dev, *abssum_dev; /* backend F32 [cols] while the layer runs */
    float *amax, *mean_abs;       /* host results */
    uint32_t *tok_hist;           /* host histogram of the per-token abs-max (see hist_bin) */
    double tok_sum;
    float tok_min, tok_max;
    long ntok;
    uint16_t *heldout; /* host F16 [nheld, cols] */
    int nheld;
    float quantiles[7];
} group_stats;

struct calib_stats {
    llmq_model *m;
    llmq_backend *b;
    int n_layers, heldout_cap, heldout_on;
    group_stats *g; /* [n_layers][IN_COUNT] */
    float *row_dev, *row_host, *x_host;
    const int32_t *held_ids, *held_lens;
    int held_n;
    int row_cap;
    size_t x_cap;
};

static group_stats *gs(const calib_stats *st, int layer, int which) { return &st->g[layer * IN_COUNT + which]; }

int calib_stats_new(calib_stats **out, llmq_model *m, int heldout_cap)
{
    calib_stats *st = calloc(1, sizeof *st);
    if (!st)
        return llmq_fail("out of memory");
    const llmq_config *c = model_config(m);
    st->m = m;
    st->b = model_backend(m);
    st->n_layers = c->n_layers;
    st->heldout_cap = heldout_cap;
    st->g = calloc((size_t)c->n_layers * IN_COUNT, sizeof *st->g);
    if (!st->g) {
        free(st);
        return llmq_fail("out of memory");
    }
    int cols[IN_COUNT] = {c->hidden, c->n_heads * c->head_dim, c->hidden, c->ffn};
    for (int l = 0; l < c->n_layers; l++)
        for (int w = 0; w < IN_COUNT; w++)
            gs(st, l, w)->cols = cols[w];
    *out = st;
    return 0;
}

void calib_stats_free(calib_stats *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->n_layers * IN_COUNT; i++) {
        group_stats *g = &st->g[i];
        if (g->amax_dev)
            st->b->free(st->b, g->amax_dev);
        if (g->abssum_dev)
            st->b->free(st->b, g->abssum_dev);
        free(g->amax), free(g->mean_abs), free(g->tok_hist), free(g->heldout);
    }
    if (st->row_dev)
        st->b->free(st->b, st->row_dev);
    free(st->row_host), free(st->x_host), free(st->g), free(st);
}

void calib_stats_set_heldout(calib_stats *st, int on) { st->heldout_on = on; }

void calib_stats_set_heldout_ids(calib_stats *st, const int32_t *ids, const int32_t *lens, int n)
{
    st->held_ids = ids, st->held_lens = lens, st->held_n = n;
}

static int ensure_rows(calib_stats *st, int rows)
{
    if (rows <= st->row_cap)
        return 0;
    if (st->row_dev)
        st->b->free(st->b, st->row_dev);
    free(st->row_host);
    st->row_dev = st->b->alloc(st->b, (size_t)rows * sizeof(float));
    st->row_host = malloc((size_t)rows * sizeof(float));
    st->row_cap = rows;
    if (!st->row_dev || !st->row_host) {
        st->row_cap = 0;
        return llmq_fail("out of memory for per-token statistics");
    }
    return 0;
}

static int keep_heldout(calib_stats *st, group_stats *g, const void *x, int rows)
{
    int take = st->heldout_cap - g->nheld;
    if (take <= 0)
        return 0;
    take = take < rows ? take : rows;
    size_t n = (size_t)take * g->cols;
    if (n > st->x_cap) {
        free(st->x_host);
        if (!(st->x_host = malloc(n * sizeof(float))))
            return llmq_fail("out of memory for held-out activations");
        st->x_cap = n;
    }
    uint16_t *nh = realloc(g->heldout, ((size_t)g->nheld + take) * g->cols * sizeof(uint16_t));
    if (!nh)
        return llmq_fail("out of memory for held-out activations");
    g->heldout = nh;
    if (st->b->download_f32(st->b, st->x_host, x, st->b->dt, n))
        return -1;
    for (size_t i = 0; i < n; i++)
        g->heldout[(size_t)g->nheld * g->cols + i] = llmq_f32_to_f16(st->x_host[i]);
    g->nheld += take;
    return 0;
}

/* The per-token abs-max distribution is kept as a histogram rather than
 * sorted (a sort of every token's value per input and layer cost more than
 * the statistics themselves): 80 octaves from 2^-40, each cut in 256 linear
 * bins, so a quantile is known to within 0.4% of its value. */
#define HIST_OCTAVES 80
#define HIST_SUB 256
#define HIST_BINS (HIST_OCTAVES * HIST_SUB)

static int hist_bin(float v)
{
    if (!(v > 0.0f))
        return 0;
    int e;
    float m = frexpf(v, &e); /* v = m 2^e, m in [0.5, 1) */
    int oct = e + 40;
    if (oct < 0)
        return 0;
    if (oct >= HIST_OCTAVES)
        return HIST_BINS - 1;
    return oct * HIST_SUB + (int)((m - 0.5f) * 2.0f * HIST_SUB);
}

static float hist_value(int bin) /* the middle of the bin */
{
    int oct = bin / HIST_SUB, sub = bin % HIST_SUB;
    return ldexpf(0.5f + ((float)sub + 0.5f) / (2.0f * HIST_SUB), oct - 40);
}

static int on_input(void *ctx, llmq_backend *b, int layer, llmq_input which, void *x, int rows, int cols)
{
    calib_stats *st = ctx;
    group_stats *g = gs(st, layer, which);
    if (st->heldout_on)
        return keep_heldout(st, g, x, rows);
    if (!g->amax_dev) {
        float *zero = calloc((size_t)cols, sizeof(float));
        g->amax_dev = b->alloc(b, (size_t)cols * sizeof(float));
        g->abssum_dev = b->alloc(b, (size_t)cols * sizeof(float));
        int bad = !zero || !g->amax_dev || !g->abssum_dev ||
                  b->upload(b, g->amax_dev, LLMQ_F32, zero, LLMQ_F32, (size_t)cols) ||
                  b->upload(b, g->abssum_dev, LLMQ_F32, zero, LLMQ_F32, (size_t)cols);
        free(zero);
        if (bad)
            return llmq_wrap("statistics buffers");
    }
    if (ensure_rows(st, rows) || b->act_stats(b, g->amax_dev, g->abssum_dev, st->row_dev, x, rows, cols) ||
        b->download_f32(b, st->row_host, st->row_dev, LLMQ_F32, (size_t)rows))
        return -1;
    if (!g->tok_hist) {
        if (!(g->tok_hist = calloc(HIST_BINS, sizeof *g->tok_hist)))
            return llmq_fail("out of memory for per-token statistics");
        g->tok_min = INFINITY, g->tok_max = 0.0f;
    }
    for (int r = 0; r < rows; r++) {
        float v = st->row_host[r];
        g->tok_hist[hist_bin(v)]++;
        g->tok_sum += v;
        g->tok_min = v < g->tok_min ? v : g->tok_min;
        g->tok_max = v > g->tok_max ? v : g->tok_max;
    }
    g->ntok += rows;
    return 0;
}

llmq_hooks calib_stats_hooks(calib_stats *st)
{
    llmq_hooks h = {.ctx = st, .on_input = on_input};
    return h;
}

/* min, p50, p90, p99, p99.9, max (exact), mean (exact); the inner
 * quantiles nearest-rank from the histogram. */
static void token_quantiles(group_stats *g)
{
    if (g->ntok == 0 || !g->tok_hist)
        return;
    const double q[3] = {0.5, 0.9, 0.99}, q4 = 0.999;
    long cum = 0;
    int k = 0;
    for (int bin = 0; bin < HIST_BINS && k < 4; bin++) {
        cum += g->tok_hist[bin];
        while (k < 4 && cum > (long)floor((k < 3 ? q[k] : q4) * (double)(g->ntok - 1) + 0.5))
            g->quantiles[1 + k++] = hist_value(bin);
    }
    g->quantiles[0] = g->tok_min;
    g->quantiles[5] = g->tok_max;
    for (int i = 1; i < 5; i++) /* the bin middle may stray past the exact extremes */
        g->quantiles[i] = fminf(fmaxf(g->quantiles[i], g->tok_min), g->tok_max);
    g->quantiles[6] = (float)(g->tok_sum / (double)g->ntok);
}

int calib_stats_finish_layer(calib_stats *st, int layer)
{
    for (int w = 0; w < IN_COUNT; w++) {
        group_stats *g = gs(st, layer, w);
        if (!g->amax_dev)
            return llmq_fail("layer %d: no calibration token reached the %s input", layer, g_group_names[w]);
        g->amax = malloc((size_t)g->cols * sizeof(float));
        g->mean_abs = malloc((size_t)g->cols * sizeof(float));
        if (!g->amax || !g->mean_abs)
            return llmq_fail("out of memory");
        if (st->b->download_f32(st->b, g->amax, g->amax_dev, LLMQ_F32, (size_t)g->cols) ||
            st->b->download_f32(st->b, g->mean_abs, g->abssum_dev, LLMQ_F32, (size_t)g->cols))
            return -1;
        for (int j = 0; j < g->cols; j++) {
            g->mean_abs[j] /= (float)g->ntok;
            if (!isfinite(g->amax[j]))
                return llmq_fail("layer %d: the %s input has a non-finite activation (channel %d): NaN or Inf "
                                 "in the model's weights?",
                                 layer, g_group_names[w], j);
        }
        token_quantiles(g);
        free(g->tok_hist);
        g->tok_hist = NULL;
        st->b->free(st->b, g->amax_dev);
        st->b->free(st->b, g->abssum_dev);
        g->amax_dev = g->abssum_dev = NULL;
    }
    return 0;
}

long calib_stats_tokens(const calib_stats *st) { return st->n_layers ? gs(st, 0, IN_QKV)->ntok : 0; }
long calib_stats_heldout_tokens(const calib_stats *st) { return st->n_layers ? gs(st, 0, IN_QKV)->nheld : 0; }

int calib_stats_write(calib_stats *st, const char *path, const char *const (*meta)[2], int n)
{
    st_writer *w = st_writer_new();
    if (!w)
        return llmq_fail("out of memory");
    char name[192], prefix[128];
    int rc = 0;
    for (int l = 0; l < st->n_layers && rc == 0; l++) {
        for (int i = 0; i < LIN_COUNT && rc == 0; i++) {
            group_stats *g = gs(st, l, g_lin_group[i]);
            int64_t shape[1] = {g->cols}, qshape[1] = {7};
            model_lin_prefix(l, (llmq_lin)i, prefix, sizeof prefix);
            rc = st_writer_add(w, prefix, LLMQ_F32, 1, shape, g->amax);
            snprintf(name, sizeof name, "%s.input_mean_abs", prefix);
            rc = rc ? rc : st_writer_add(w, name, LLMQ_F32, 1, shape, g->mean_abs);
            snprintf(name, sizeof name, "%s.token_absmax", prefix);
            rc = rc ? rc : st_writer_add(w, name, LLMQ_F32, 1, qshape, g->quantiles);
        }
        for (int k = 0; k < IN_COUNT && rc == 0; k++) {
            group_stats *g = gs(st, l, k);
            if (g->nheld == 0)
                continue;
            int64_t shape[2] = {g->nheld, g->cols};
            snprintf(name, sizeof name, "model.layers.%d.heldout.%s", l, g_group_names[k]);
            rc = st_writer_add(w, name, LLMQ_F16, 2, shape, g->heldout);
        }
    }
    if (rc == 0 && st->held_n > 0) {
        int64_t ntok = 0;
        for (int i = 0; i < st->held_n; i++)
            ntok += st->held_lens[i];
        int64_t s1[1] = {ntok}, s2[1] = {st->held_n};
        rc = st_writer_add(w, "heldout.ids", LLMQ_I32, 1, s1, st->held_ids) ||
             st_writer_add(w, "heldout.lengths", LLMQ_I32, 1, s2, st->held_lens);
    }
    for (int i = 0; i < n && rc == 0; i++)
        rc = st_writer_meta(w, meta[i][0], meta[i][1]);
    if (rc == 0)
        rc = st_writer_commit(w, path);
    st_writer_free(w);
    return rc;
}

typedef struct {
    float v;
    int j;
} chan;

static int cmp_chan_desc(const void *a, const void *b)
{
    const chan *x = a, *y = b;
    return x->v < y->v ? 1 : x->v > y->v ? -1 : x->j - y->j;
}

void calib_stats_report(const calib_stats *st, FILE *out, int top)
{
    fprintf(out, "%-6s %-7s %10s %10s %9s  %s\n", "layer", "input", "max", "median", "max/med",
            "largest channels (index:abs-max)");
    for (int l = 0; l < st->n_layers; l++)
        for (int k = 0; k < IN_COUNT; k++) {
            const group_stats *g = gs(st, l, k);
            if (!g->amax)
                continue;
            chan *c = malloc((size_t)g->cols * sizeof *c);
            if (!c)
                return;
            for (int j = 0; j < g->cols; j++)
                c[j] = (chan){g->amax[j], j};
            qsort(c, (size_t)g->cols, sizeof *c, cmp_chan_desc);
            float med = c[g->cols / 2].v;
            fprintf(out, "%-6d %-7s %10.4g %10.4g %9.1f ", l, g_group_names[k], c[0].v, med,
                    med > 0 ? c[0].v / med : INFINITY);
            for (int i = 0; i < top && i < g->cols; i++)
                fprintf(out, " %d:%.3g", c[i].j, c[i].v);
            fputc('\n', out);
            free(c);
        }
}
