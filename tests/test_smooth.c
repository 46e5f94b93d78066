/* Tests for smooth/: the factor formula on hand-computed values, the folds
 * being exact (a random GQA layer in memory and the real stories260K, with
 * reference forwards in double precision written here), --alpha auto on a
 * layer with an outlier channel, the output directory (byte-identical
 * copies, dtype, sharding, metadata) and the bad inputs that must fail
 * before anything is written.
 *
 * Build and run (from the repository root):
 *   gcc -std=c11 -D_GNU_SOURCE -Wall -Wextra -g -fsanitize=address,undefined -I. \
 *       tests/test_smooth.c smooth/[a-z]*.c formats/safetensors.c formats/config.c \
 *       src/dtype.c src/error.c src/fileio.c -lcjson -lopenblas -lcmocka -lm -o /tmp/tsm
 *   LLMQ_TEST_DATA=tests/data /tmp/tsm
 */
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "tests/testutil.h"

#include "formats/config.h"
#include "formats/safetensors.h"
#include "smooth/smooth.h"
#include "src/error.h"
#include "src/fileio.h"

static char g_tmp[256];
static const char *g_data_dir;

/* stories260K: 5 layers, hidden 64, 8 heads / 4 KV heads of 8, FFN 172. */
enum { NL = 5, HID = 64, QD = 64, KVD = 32, FFN = 172 };

/* ---- helpers ---- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static double urand(void) /* [0, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

static float nrand(void)
{
    double u = urand() + 1e-12, v = urand();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static float *rand_vec(size_t n, float scale)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * nrand();
    return x;
}

static float *uniform_vec(size_t n, float lo, float hi)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * (float)urand();
    return x;
}

static char *tmp_path(const char *name)
{
    char *p = llmq_path_join(g_tmp, name);
    assert_non_null(p);
    return p;
}

static char *model_dir(void)
{
    char *p = llmq_path_join(g_data_dir, "models/stories260K");
    assert_non_null(p);
    return p;
}

static void expect_contains(const char *msg, const char *part)
{
    if (!strstr(msg, part))
        fail_msg("message \"%s\" does not contain \"%s\"", msg, part);
}

/* No entry of g_tmp starts with prefix (the output, its *.tmp.<pid>). */
static void expect_no_entry(const char *prefix)
{
    DIR *d = opendir(g_tmp);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            fail_msg("%s/%s exists after a failed run", g_tmp, e->d_name);
    closedir(d);
}

static int files_equal(const char *a, const char *b)
{
    char *da, *db;
    size_t na, nb;
    if (llmq_read_file(a, &da, &na))
        fail_msg("%s", llmq_last_error());
    if (llmq_read_file(b, &db, &nb))
        fail_msg("%s", llmq_last_error());
    int eq = na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return eq;
}

/* ---- an act-scales fixture for stories260K, written with the writer ---- */

typedef struct {
    const char *omit;     /* a tensor name left out */
    const char *bad_name; /* a tensor given length bad_len */
    int bad_len;
    int extra_layer;      /* add statistics for layer NL */
    int heldout_T;        /* held-out rows per group (0: none) */
    int dead_channel;     /* layer 1's q/k/v input channel 3 never active (max 0) */
} scales_spec;

static void write_scales(const char *path, const scales_spec *sp)
{
    static const char *lins[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                  "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    static const int ins[7] = {HID, HID, HID, QD, HID, HID, FFN};
    static const char *groups[4] = {"qkv", "gateup", "o", "down"};
    static const int gin[4] = {HID, HID, QD, FFN};
    st_writer *w = st_writer_new();
    void *bufs[256];
    int nb = 0;
    char name[128];
    for (int i = 0; i < NL + (sp->extra_layer ? 1 : 0); i++) {
        /* q/k/v share one input and so one vector, as do gate/up. */
        float *qkv = uniform_vec(HID, 0.05f, 4.0f), *gu = uniform_vec(HID, 0.05f, 4.0f);
        qkv[7] = 60.0f; /* an outlier channel, as real models have */
        if (sp->dead_channel && i == 1)
            qkv[3] = 0.0f;
        bufs[nb++] = qkv;
        bufs[nb++] = gu;
        for (int l = 0; l < 7; l++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", i, lins[l]);
            if (sp->omit && !strcmp(sp->omit, name))
                continue;
            int64_t n = sp->bad_name && !strcmp(sp->bad_name, name) ? sp->bad_len : ins[l];
            float *v = l < 3 && n == HID ? qkv : (l == 4 || l == 5) && n == HID ? gu : NULL;
            if (!v) {
                v = uniform_vec((size_t)n, 0.05f, 4.0f);
                bufs[nb++] = v;
            }
            assert_int_equal(st_writer_add(w, name, LLMQ_F32, 1, &n, v), 0);
        }
        for (int g = 0; sp->heldout_T && g < 4; g++) {
            int64_t shape[2] = {sp->heldout_T, gin[g]};
            size_t n = (size_t)shape[0] * (size_t)shape[1];
            float *x = rand_vec(n, 1.0f);
            for (int t = 0; t < sp->heldout_T; t++)
                x[(size_t)t * gin[g] + 7] *= 40.0f;
            uint16_t *h = malloc(n * sizeof *h);
            assert_non_null(h);
            assert_int_equal(llmq_convert(h, LLMQ_F16, x, LLMQ_F32, n), 0);
            free(x);
            bufs[nb++] = h;
            snprintf(name, sizeof name, "model.layers.%d.heldout.%s", i, groups[g]);
            assert_int_equal(st_writer_add(w, name, LLMQ_F16, 2, shape, h), 0);
        }
    }
    assert_int_equal(st_writer_meta(w, "format", "llmq-act-scales"), 0);
    if (st_writer_commit(w, path))
        fail_msg("%s", llmq_last_error());
    st_writer_free(w);
    for (int i = 0; i < nb; i++)
        free(bufs[i]);
}

/* ---- a decoder layer in memory, and its forward in double ---- */

static void layer_alloc_random(smooth_layer *L, int hidden, int ffn, int nh, int nkv, int hd, int bias)
{
    *L = (smooth_layer){.hidden = hidden, .ffn = ffn, .n_heads = nh, .n_kv = nkv, .head_dim = hd};
    float sc = 1.0f / sqrtf((float)hidden);
    L->ln1 = uniform_vec((size_t)hidden, 0.5f, 1.5f);
    L->ln2 = uniform_vec((size_t)hidden, 0.5f, 1.5f);
    L->q = rand_vec((size_t)nh * hd * hidden, sc);
    L->k = rand_vec((size_t)nkv * hd * hidden, sc);
    L->v = rand_vec((size_t)nkv * hd * hidden, sc);
    L->o = rand_vec((size_t)hidden * nh * hd, sc);
    L->gate = rand_vec((size_t)ffn * hidden, sc);
    L->up = rand_vec((size_t)ffn * hidden, sc);
    L->down = rand_vec((size_t)hidden * ffn, 1.0f / sqrtf((float)ffn));
    L->v_bias = bias ? rand_vec((size_t)nkv * hd, 0.1f) : NULL;
}

static float *dup_vec(const float *x, size_t n)
{
    if (!x)
        return NULL;
    float *y = malloc(n * sizeof *y);
    assert_non_null(y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static void layer_copy(smooth_layer *d, const smooth_layer *s)
{
    size_t h = (size_t)s->hidden, q = (size_t)s->n_heads * s->head_dim, kv = (size_t)s->n_kv * s->head_dim;
    *d = *s;
    d->ln1 = dup_vec(s->ln1, h);
    d->ln2 = dup_vec(s->ln2, h);
    d->q = dup_vec(s->q, q * h);
    d->k = dup_vec(s->k, kv * h);
    d->v = dup_vec(s->v, kv * h);
    d->o = dup_vec(s->o, h * q);
    d->gate = dup_vec(s->gate, (size_t)s->ffn * h);
    d->up = dup_vec(s->up, (size_t)s->ffn * h);
    d->down = dup_vec(s->down, h * (size_t)s->ffn);
    d->v_bias = dup_vec(s->v_bias, kv);
}

static void layer_free(smooth_layer *L)
{
    float *p[] = {L->ln1, L->ln2, L->q, L->k, L->v, L->o, L->gate, L->up, L->down, L->v_bias};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        free(p[i]);
    memset(L, 0, sizeof *L);
}

static void rmsnorm(const float *x, const float *g, int n, double *out)
{
    double ms = 0;
    for (int j = 0; j < n; j++)
        ms += (double)x[j] * x[j];
    double r = 1.0 / sqrt(ms / n + 1e-5);
    for (int j = 0; j < n; j++)
        out[j] = x[j] * r * g[j];
}

/* y[out] = W[out, in] x */
static void linear(const double *x, const float *w, int out, int in, double *y)
{
    for (int r = 0; r < out; r++) {
        double s = 0;
        for (int j = 0; j < in; j++)
            s += (double)w[(size_t)r * in + j] * x[j];
        y[r] = s;
    }
}

/* The attention block (without the residual) over T tokens x [T, hidden]:
 * o_proj(causal softmax attention with repeat_kv). RoPE only rotates q and
 * k, whose outputs no fold changes, so it is left out. */
static void attention_block(const smooth_layer *L, const float *x, int T, double *y)
{
    int H = L->hidden, hd = L->head_dim, qd = L->n_heads * hd, kvd = L->n_kv * hd, rep = L->n_heads / L->n_kv;
    double *h = malloc(sizeof(double) * H), *q = malloc(sizeof(double) * T * qd);
    double *k = malloc(sizeof(double) * T * kvd), *v = malloc(sizeof(double) * T * kvd);
    double *a = malloc(sizeof(double) * qd), *p = malloc(sizeof(double) * T);
    for (int t = 0; t < T; t++) {
        rmsnorm(x + (size_t)t * H, L->ln1, H, h);
        linear(h, L->q, qd, H, q + (size_t)t * qd);
        linear(h, L->k, kvd, H, k + (size_t)t * kvd);
        linear(h, L->v, kvd, H, v + (size_t)t * kvd);
        for (int r = 0; L->v_bias && r < kvd; r++)
            v[(size_t)t * kvd + r] += L->v_bias[r];
    }
    for (int t = 0; t < T; t++) {
        for (int hq = 0; hq < L->n_heads; hq++) {
            int g = hq / rep;
            double mx = -1e300, sum = 0;
            for (int u = 0; u <= t; u++) {
                double s = 0;
                for (int d = 0; d < hd; d++)
                    s += q[(size_t)t * qd + hq * hd + d] * k[(size_t)u * kvd + g * hd + d];
                p[u] = s / sqrt((double)hd);
                mx = fmax(mx, p[u]);
            }
            for (int u = 0; u <= t; u++)
                sum += p[u] = exp(p[u] - mx);
            for (int d = 0; d < hd; d++) {
                double s = 0;
                for (int u = 0; u <= t; u++)
                    s += p[u] / sum * v[(size_t)u * kvd + g * hd + d];
                a[hq * hd + d] = s;
            }
        }
        linear(a, L->o, H, qd, y + (size_t)t * H);
    }
    free(h), free(q), free(k), free(v), free(a), free(p);
}

/* The MLP block: down(silu(gate h) * up h), h = RMSNorm(x) * ln2. */
static void mlp_block(const smooth_layer *L, const float *x, int T, double *y)
{
    int H = L->hidden, F = L->ffn;
    double *h = malloc(sizeof(double) * H), *g = malloc(sizeof(double) * F), *u = malloc(sizeof(double) * F);
    for (int t = 0; t < T; t++) {
        rmsnorm(x + (size_t)t * H, L->ln2, H, h);
        linear(h, L->gate, F, H, g);
        linear(h, L->up, F, H, u);
        for (int j = 0; j < F; j++)
            g[j] = g[j] / (1.0 + exp(-g[j])) * u[j];
        linear(g, L->down, H, F, y + (size_t)t * H);
    }
    free(h), free(g), free(u);
}

/* The linears' raw outputs for the norm -> group folds: RMSNorm(x) * w W^T. */
static void group_outputs(const smooth_layer *L, const float *x, int T, double *y)
{
    int H = L->hidden, qd = L->n_heads * L->head_dim, kvd = L->n_kv * L->head_dim, F = L->ffn;
    int per = qd + 2 * kvd + 2 * F;
    double *h = malloc(sizeof(double) * H);
    for (int t = 0; t < T; t++) {
        double *o = y + (size_t)t * per;
        rmsnorm(x + (size_t)t * H, L->ln1, H, h);
        linear(h, L->q, qd, H, o);
        linear(h, L->k, kvd, H, o + qd);
        linear(h, L->v, kvd, H, o + qd + kvd);
        rmsnorm(x + (size_t)t * H, L->ln2, H, h);
        linear(h, L->gate, F, H, o + qd + 2 * kvd);
        linear(h, L->up, F, H, o + qd + 2 * kvd + F);
    }
    free(h);
}

/* max |a - b| / max |a| */
static double rel_diff(const double *a, const double *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs(a[i] - b[i]));
        m = fmax(m, fabs(a[i]));
    }
    return d / m;
}

/* Act maxima with an outlier channel, so the factors are far from 1. */
static void outlier_acts(const smooth_layer *L, float *act[SMOOTH_NGROUPS])
{
    for (int g = 0; g < SMOOTH_NGROUPS; g++) {
        int in = smooth_group_in(L, (smooth_group)g);
        act[g] = uniform_vec((size_t)in, 0.1f, 3.0f);
        act[g][1] = 80.0f;
        act[g][in - 2] = 0.0f; /* a dead channel: s clamps to 1e-5 at alpha > 0 */
    }
}

/* The layer functions that smoothing must preserve, before and after: the
 * attention and MLP blocks, and the raw outputs of the linears after the
 * norms, except v (the o fold rescales its rows) and up (the down fold)
 * when those folds are in mask. */
static void expect_same_function(const smooth_layer *a, const smooth_layer *b, const float *x, int T, double tol,
                                 unsigned mask)
{
    int H = a->hidden, qd = a->n_heads * a->head_dim, kvd = a->n_kv * a->head_dim, F = a->ffn;
    int per = qd + 2 * kvd + 2 * F;
    double *ya = malloc(sizeof(double) * T * per), *yb = malloc(sizeof(double) * T * per);
    group_outputs(a, x, T, ya);
    group_outputs(b, x, T, yb);
    for (int t = 0; t < T; t++) {
        double *ra = ya + (size_t)t * per, *rb = yb + (size_t)t * per;
        if (mask & (1u << SMOOTH_O))
            memset(ra + qd + kvd, 0, sizeof(double) * kvd), memset(rb + qd + kvd, 0, sizeof(double) * kvd);
        if (mask & (1u << SMOOTH_DOWN))
            memset(ra + qd + 2 * kvd + F, 0, sizeof(double) * F), memset(rb + qd + 2 * kvd + F, 0, sizeof(double) * F);
    }
    double d_lin = rel_diff(ya, yb, (size_t)T * per);
    attention_block(a, x, T, ya);
    attention_block(b, x, T, yb);
    double d_att = rel_diff(ya, yb, (size_t)T * H);
    mlp_block(a, x, T, ya);
    mlp_block(b, x, T, yb);
    double d_mlp = rel_diff(ya, yb, (size_t)T * H);
    free(ya);
    free(yb);
    if (!(d_lin < tol && d_att < tol && d_mlp < tol))
        fail_msg("smoothing changed the function: linears %.3g, attention %.3g, mlp %.3g (tolerance %.1g)", d_lin,
                 d_att, d_mlp, tol);
}

/* ---- (b) the formula ---- */

static void test_factor_formula(void **state)
{
    (void)state;
    /* Two channels: act {4, 9}, weights whose column maxima are {1, 4}. */
    const float act[2] = {4.0f, 9.0f};
    const float w[2 * 2] = {1.0f, -4.0f, 0.5f, 2.0f};
    float wmax[2] = {0, 0}, s[2];
    smooth_colmax(w, 2, 2, wmax);
    assert_true(wmax[0] == 1.0f && wmax[1] == 4.0f);
    smooth_factors(act, wmax, 2, 0.5, s);
    assert_true(s[0] == 2.0f && s[1] == 1.5f); /* sqrt(4)/sqrt(1), sqrt(9)/sqrt(4) */
    smooth_factors(act, wmax, 2, 1.0, s);
    assert_true(s[0] == 4.0f && s[1] == 9.0f); /* alpha 1: s = act */
    smooth_factors(act, wmax, 2, 0.0, s);
    assert_true(s[0] == 1.0f && s[1] == 0.25f); /* alpha 0: s = 1 / w */
    /* Clamps: a zero act gives s = 1e-5, a zero weight column counts as 1e-5. */
    assert_true(smooth_factor(0.0f, 1.0f, 0.5) == 1e-5f);
    assert_true(smooth_factor(0.0f, 0.0f, 1.0) == 1e-5f);
    assert_float_equal(smooth_factor(4.0f, 0.0f, 0.5), 2.0f / sqrtf(1e-5f), 1e-2);
    assert_float_equal(smooth_factor(1.0f, 1e-9f, 0.0), 1e5f, 1e-1);
    assert_float_equal(smooth_factor(8.0f, 2.0f, 0.25), powf(8.0f, 0.25f) / powf(2.0f, 0.75f), 1e-6);
    /* The grid. */
    assert_true(smooth_grid_alpha(0) == 0.0 && smooth_grid_alpha(10) == 0.5 && smooth_grid_alpha(20) == 1.0);
}

static void test_vo_map(void **state)
{
    (void)state;
    /* 8 query heads, 4 KV heads of 4: heads 2q and 2q+1 read KV head q. */
    assert_int_equal(smooth_vo_source(0, 8, 4, 4), 0);
    assert_int_equal(smooth_vo_source(5, 8, 4, 4), 1);  /* head 1 -> kv 0 */
    assert_int_equal(smooth_vo_source(13, 8, 4, 4), 5); /* head 3 -> kv 1 */
    assert_int_equal(smooth_vo_source(31, 8, 4, 4), 15);
    assert_int_equal(smooth_vo_source(13, 8, 8, 4), 13); /* no GQA: identity */
    float per_o[32], per_v[16], back[32];
    for (int c = 0; c < 32; c++)
        per_o[c] = (float)((c * 7) % 11);
    smooth_vo_reduce(per_o, 8, 4, 4, per_v);
    for (int r = 0; r < 16; r++) {
        int g = r / 4, d = r % 4;
        assert_true(per_v[r] == fmaxf(per_o[(2 * g) * 4 + d], per_o[(2 * g + 1) * 4 + d]));
    }
    smooth_vo_expand(per_v, 8, 4, 4, back);
    for (int c = 0; c < 32; c++)
        assert_true(back[c] == per_v[smooth_vo_source(c, 8, 4, 4)]);
}

/* Round half to even and the clamp, as torch.round / fake_quant.py. */
static void test_q8(void **state)
{
    (void)state;
    float x[6] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -126.5f};
    smooth_q8_rows(x, 1, 6);
    const float want[6] = {127.0f, 0.0f, 2.0f, 2.0f, 0.0f, -126.0f};
    for (int j = 0; j < 6; j++)
        assert_true(x[j] == want[j]);
    float z[3] = {0, 0, 0};
    smooth_q8_rows(z, 1, 3); /* scale 1e-5 / 127: no NaN */
    for (int j = 0; j < 3; j++)
        assert_true(z[j] == 0.0f);
}

/* ---- (a) the folds are exact ---- */

static void run_fold_case(unsigned mask, int bias, double alpha)
{
    smooth_layer L, S;
    layer_alloc_random(&L, 32, 48, 8, 4, 4, bias);
    layer_copy(&S, &L);
    float *act[SMOOTH_NGROUPS];
    outlier_acts(&L, act);
    double al[SMOOTH_NGROUPS] = {alpha, alpha, alpha, alpha};
    float *s[SMOOTH_NGROUPS] = {0};
    for (int g = 0; g < SMOOTH_NGROUPS; g++)
        s[g] = malloc(sizeof(float) * (size_t)smooth_group_in(&L, (smooth_group)g));
    assert_int_equal(smooth_layer_apply(&S, mask, (const float *const *)act, al, s), 0);
    /* The factors really are far from 1 (else the test proves nothing). */
    for (int g = 0; g < SMOOTH_NGROUPS; g++) {
        if (!(mask & (1u << g)))
            continue;
        float lo = 1e30f, hi = 0;
        for (int j = 0; j < smooth_group_in(&L, (smooth_group)g); j++)
            lo = fminf(lo, s[g][j]), hi = fmaxf(hi, s[g][j]);
        assert_true(hi / lo > 10.0f);
    }
    /* With the o fold, v rows scale by the tied o factors. */
    if (mask & (1u << SMOOTH_O)) {
        for (int c = 0; c < 32; c++)
            assert_true(s[SMOOTH_O][c] == s[SMOOTH_O][smooth_vo_source(c, 8, 4, 4) / 4 * 8 + c % 4]);
        assert_true(S.o[1] == L.o[1] * s[SMOOTH_O][1]);
    }
    float *x = rand_vec(6 * 32, 1.0f);
    for (int t = 0; t < 6; t++)
        x[t * 32 + 1] *= 30.0f; /* the outlier the act maxima describe */
    expect_same_function(&L, &S, x, 6, 2e-6, mask);
    free(x);
    for (int g = 0; g < SMOOTH_NGROUPS; g++)
        free(act[g]), free(s[g]);
    layer_free(&L);
    layer_free(&S);
}

static void test_fold_norm_groups(void **state)
{
    (void)state;
    run_fold_case(1u << SMOOTH_QKV | 1u << SMOOTH_GATEUP, 0, 0.5);
    run_fold_case(1u << SMOOTH_QKV | 1u << SMOOTH_GATEUP, 0, 0.85);
}

static void test_fold_vo_gqa(void **state)
{
    (void)state;
    run_fold_case(1u << SMOOTH_O, 0, 0.5);
    run_fold_case(1u << SMOOTH_O, 1, 0.5); /* Qwen2-style v bias */
    run_fold_case(0xF, 1, 0.7);
}

static void test_fold_up_down(void **state)
{
    (void)state;
    run_fold_case(1u << SMOOTH_DOWN, 0, 0.5);
    run_fold_case(1u << SMOOTH_GATEUP | 1u << SMOOTH_DOWN, 0, 0.3);
}

/* ---- (d) --alpha auto ---- */

static void test_auto_alpha_outlier(void **state)
{
    (void)state;
    enum { T = 96, IN = 32, OUT = 24 };
    float *x = rand_vec((size_t)T * IN, 1.0f), *w = rand_vec((size_t)OUT * IN, 0.2f);
    for (int t = 0; t < T; t++)
        x[t * IN + 5] *= 100.0f; /* one huge-outlier channel */
    float act[IN] = {0}, wmax[IN] = {0};
    for (int t = 0; t < T; t++)
        for (int j = 0; j < IN; j++)
            act[j] = fmaxf(act[j], fabsf(x[t * IN + j]));
    smooth_colmax(w, OUT, IN, wmax);
    double alpha = -1, errs[SMOOTH_NGRID];
    assert_int_equal(smooth_auto_alpha(x, T, IN, w, OUT, act, wmax, LLMQ_F32, &alpha, errs), 0);
    int k = (int)lround(alpha * 20);
    assert_true(k > 0 && k < SMOOTH_NGRID && smooth_grid_alpha(k) == alpha);
    for (int i = 0; i < SMOOTH_NGRID; i++)
        assert_true(errs[k] <= errs[i] && (i >= k || errs[k] < errs[i])); /* least; ties -> smaller */
    /* The same numbers from the error function alone, at alpha 0 and 0.5. */
    float s[IN];
    smooth_factors(act, wmax, IN, 0.0, s);
    double e0 = smooth_w8a8_error(x, T, IN, w, OUT, s, NULL, LLMQ_F32);
    smooth_factors(act, wmax, IN, 0.5, s);
    double e5 = smooth_w8a8_error(x, T, IN, w, OUT, s, NULL, LLMQ_F32);
    assert_float_equal(e0, errs[0], 1e-9 * e0);
    assert_float_equal(e5, errs[10], 1e-9 * e5);
    assert_true(errs[k] <= e0 && errs[k] <= e5);
    /* Unsmoothed W8A8 (s = 1) is far worse than the chosen alpha. */
    for (int j = 0; j < IN; j++)
        s[j] = 1.0f;
    double e1 = smooth_w8a8_error(x, T, IN, w, OUT, s, NULL, LLMQ_F32);
    assert_true(errs[k] < 0.5 * e1);

    /* The error itself against a direct double-precision evaluation. */
    smooth_factors(act, wmax, IN, alpha, s);
    float xq[T * IN], wq[OUT * IN];
    for (int i = 0; i < T * IN; i++)
        xq[i] = x[i] / s[i % IN];
    for (int i = 0; i < OUT * IN; i++)
        wq[i] = w[i] * s[i % IN];
    smooth_q8_rows(xq, T, IN);
    smooth_q8_rows(wq, OUT, IN);
    double ref = 0;
    for (int t = 0; t < T; t++)
        for (int o = 0; o < OUT; o++) {
            double y = 0, yq = 0;
            for (int j = 0; j < IN; j++) {
                y += (double)x[t * IN + j] * w[o * IN + j];
                yq += (double)xq[t * IN + j] * wq[o * IN + j];
            }
            ref += (y - yq) * (y - yq);
        }
    assert_float_equal(errs[k], ref, 1e-3 * ref);
    free(x);
    free(w);
}

/* ---- the whole model ---- */

static float *read_tensor(const st_model *m, const char *name)
{
    const st_tensor *t = st_model_find(m, name);
    if (!t)
        fail_msg("no tensor %s", name);
    float *x = malloc(sizeof(float) * (size_t)t->numel);
    assert_non_null(x);
    assert_int_equal(st_read_f32(t, x), 0);
    return x;
}

static void load_layer(const st_model *m, int i, smooth_layer *L)
{
    char n[128];
    *L = (smooth_layer){.hidden = HID, .ffn = FFN, .n_heads = 8, .n_kv = 4, .head_dim = 8};
#define RD(field, fmt)                                                                                             \
    snprintf(n, sizeof n, "model.layers.%d." fmt, i);                                                              \
    L->field = read_tensor(m, n)
    RD(ln1, "input_layernorm.weight");
    RD(ln2, "post_attention_layernorm.weight");
    RD(q, "self_attn.q_proj.weight");
    RD(k, "self_attn.k_proj.weight");
    RD(v, "self_attn.v_proj.weight");
    RD(o, "self_attn.o_proj.weight");
    RD(gate, "mlp.gate_proj.weight");
    RD(up, "mlp.up_proj.weight");
    RD(down, "mlp.down_proj.weight");
#undef RD
}

static st_model *open_model(const char *dir)
{
    st_model *m = NULL;
    if (st_model_open(&m, dir))
        fail_msg("%s", llmq_last_error());
    return m;
}

static st_file *open_file(const char *path)
{
    st_file *f = NULL;
    if (st_open(&f, path))
        fail_msg("%s", llmq_last_error());
    return f;
}

static int layer_equal(const smooth_layer *a, const smooth_layer *b)
{
    size_t h = HID;
    return !memcmp(a->ln1, b->ln1, h * 4) && !memcmp(a->ln2, b->ln2, h * 4) && !memcmp(a->q, b->q, QD * h * 4) &&
           !memcmp(a->k, b->k, KVD * h * 4) && !memcmp(a->v, b->v, KVD * h * 4) && !memcmp(a->o, b->o, h * QD * 4) &&
           !memcmp(a->gate, b->gate, FFN * h * 4) && !memcmp(a->up, b->up, FFN * h * 4) &&
           !memcmp(a->down, b->down, h * FFN * 4);
}

/* alpha 0.5 with both extra folds on stories260K (F32, GQA 8/4): the
 * output is a complete directory that computes the same function. */
static void test_model_fixed_alpha(void **state)
{
    (void)state;
    char *mdir = model_dir(), *scales = tmp_path("act_fixed.safetensors"), *out = tmp_path("out_fixed");
    write_scales(scales, &(scales_spec){0});
    smooth_opts o = {.model_dir = mdir, .scales = scales, .out_dir = out, .alpha = 0.5, .fold_vo = 1, .fold_ud = 1};
    smooth_result r;
    if (smooth_model(&o, &r))
        fail_msg("%s", llmq_last_error());
    assert_int_equal(r.n_layers, NL);
    assert_int_equal(r.tensors_total, 47);
    assert_int_equal(r.tensors_changed, NL * 9); /* every layer tensor; embed and norm untouched */
    for (int i = 0; i < NL; i++)
        assert_true(r.alpha[SMOOTH_QKV][i] == 0.5 && r.alpha[SMOOTH_DOWN][i] == 0.5);
    smooth_result_free(&r);

    /* Side files byte for byte; no temporary left. */
    const char *side[] = {"config.json", "tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 3; i++) {
        char *a = llmq_path_join(mdir, side[i]), *b = llmq_path_join(out, side[i]);
        assert_true(files_equal(a, b));
        free(a);
        free(b);
    }
    expect_no_entry("out_fixed.");

    st_model *m = open_model(mdir), *s = open_model(out);
    char *path = llmq_path_join(out, "model.safetensors");
    st_file *f = open_file(path);
    free(path);
    assert_string_equal(st_metadata(f, "format"), "pt");
    assert_string_equal(st_metadata(f, "llmq_smooth_alpha"), "0.5");
    assert_string_equal(st_metadata(f, "llmq_smooth_scales"), scales);
    expect_contains(st_metadata(f, "llmq_smooth_folds"), "v_proj>o_proj");
    expect_contains(st_metadata(f, "llmq_smooth_folds"), "up_proj>down_proj");
    st_close(f);
    assert_int_equal(st_model_count(s), st_model_count(m));
    for (int i = 0; i < st_model_count(m); i++) {
        const st_tensor *a = st_model_at(m, i), *b = st_model_at(s, i);
        assert_string_equal(a->name, b->name); /* same order */
        assert_int_equal(a->dtype, b->dtype);
        assert_int_equal(a->nbytes, b->nbytes);
        if (strncmp(a->name, "model.layers.", 13) != 0)
            assert_memory_equal(a->data, b->data, a->nbytes);
    }
    /* Each layer: what smooth_layer_apply gives, and the same function. */
    st_file *sf = open_file(scales);
    float *x = rand_vec(7 * HID, 1.0f);
    for (int i = 0; i < NL; i++) {
        smooth_layer L, S, E;
        load_layer(m, i, &L);
        load_layer(s, i, &S);
        layer_copy(&E, &L);
        float *act[SMOOTH_NGROUPS];
        for (int g = 0; g < SMOOTH_NGROUPS; g++)
            assert_int_equal(smooth_read_act(sf, scales, i, (smooth_group)g, &act[g]), 0);
        double al[SMOOTH_NGROUPS] = {0.5, 0.5, 0.5, 0.5};
        assert_int_equal(smooth_layer_apply(&E, 0xF, (const float *const *)act, al, NULL), 0);
        assert_true(layer_equal(&E, &S));
        assert_false(layer_equal(&L, &S));
        for (int t = 0; t < 7; t++)
            x[t * HID + 7] = 20.0f * nrand(); /* the scales' outlier channel */
        expect_same_function(&L, &S, x, 7, 1e-5, 0xF);
        for (int g = 0; g < SMOOTH_NGROUPS; g++)
            free(act[g]);
        layer_free(&L);
        layer_free(&S);
        layer_free(&E);
    }
    free(x);
    st_close(sf);
    st_model_close(m);
    st_model_close(s);
    llmq_remove_tree(out);
    free(mdir);
    free(scales);
    free(out);
}

/* --alpha auto: alphas on the grid, printed into the metadata as JSON. */
static void test_model_auto(void **state)
{
    (void)state;
    char *mdir = model_dir(), *scales = tmp_path("act_auto.safetensors"), *out = tmp_path("out_auto");
    write_scales(scales, &(scales_spec){.heldout_T = 24});
    smooth_opts o = {.model_dir = mdir, .scales = scales, .out_dir = out, .alpha = SMOOTH_ALPHA_AUTO, .fold_vo = 1};
    smooth_result r;
    if (smooth_model(&o, &r))
        fail_msg("%s", llmq_last_error());
    assert_int_equal(r.mask, 1u << SMOOTH_QKV | 1u << SMOOTH_GATEUP | 1u << SMOOTH_O);
    assert_null(r.alpha[SMOOTH_DOWN]);
    char *path = llmq_path_join(out, "model.safetensors");
    st_file *f = open_file(path);
    assert_string_equal(st_metadata(f, "llmq_smooth_alpha"), "auto");
    cJSON *js = cJSON_Parse(st_metadata(f, "llmq_smooth_alphas"));
    assert_non_null(js);
    assert_null(cJSON_GetObjectItem(js, "down"));
    for (int g = 0; g < SMOOTH_O + 1; g++) {
        const cJSON *arr = cJSON_GetObjectItem(js, smooth_group_name((smooth_group)g));
        assert_int_equal(cJSON_GetArraySize(arr), NL);
        for (int i = 0; i < NL; i++) {
            double a = r.alpha[g][i];
            const double *e = r.err[g] + (size_t)i * SMOOTH_NGRID;
            int k = (int)lround(a * 20);
            assert_true(fabs(a * 20 - k) < 1e-9 && k >= 0 && k < SMOOTH_NGRID);
            assert_float_equal(cJSON_GetArrayItem(arr, i)->valuedouble, a, 1e-9);
            for (int j = 0; j < SMOOTH_NGRID; j++)
                assert_true(e[k] <= e[j]);
        }
    }
    cJSON_Delete(js);
    st_close(f);
    free(path);
    smooth_result_free(&r);
    llmq_remove_tree(out);
    free(mdir);
    free(scales);
    free(out);
}

/* An F16 model in two shards: the output keeps F16 and the same split. */
static void test_model_f16_sharded(void **state)
{
    (void)state;
    char *mdir = model_dir(), *m16 = tmp_path("m16"), *out = tmp_path("out16");
    char *scales = tmp_path("act16.safetensors");
    write_scales(scales, &(scales_spec){0});
    st_model *m = open_model(mdir);
    st_writer *w = st_writer_new();
    int n = st_model_count(m);
    uint16_t **h = calloc((size_t)n, sizeof *h);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_model_at(m, i);
        float *x = read_tensor(m, t->name);
        h[i] = malloc(2 * (size_t)t->numel);
        assert_int_equal(llmq_convert(h[i], LLMQ_F16, x, LLMQ_F32, (size_t)t->numel), 0);
        free(x);
        assert_int_equal(st_writer_add(w, t->name, LLMQ_F16, t->ndim, t->shape, h[i]), 0);
    }
    assert_int_equal(llmq_mkdirs(m16), 0);
    assert_int_equal(st_write_sharded(w, m16, st_writer_bytes(w) / 2 + 1), 0);
    char *cfg = llmq_path_join(mdir, "config.json"), *cfg16 = llmq_path_join(m16, "config.json");
    assert_int_equal(llmq_copy_file(cfg, cfg16), 0);
    st_writer_free(w);

    smooth_opts o = {.model_dir = m16, .scales = scales, .out_dir = out, .alpha = 0.5, .fold_vo = 1, .fold_ud = 1};
    if (smooth_model(&o, NULL))
        fail_msg("%s", llmq_last_error());
    /* Split like the input: the same shard files (two or three, by the
     * greedy plan), an index, no single file. */
    DIR *dir = opendir(m16);
    assert_non_null(dir);
    struct dirent *e;
    int shards = 0;
    while ((e = readdir(dir))) {
        if (!strstr(e->d_name, ".safetensors"))
            continue;
        shards += strstr(e->d_name, "-of-") != NULL;
        char *p = llmq_path_join(out, e->d_name);
        if (!llmq_file_exists(p))
            fail_msg("input has %s, output has not", e->d_name);
        free(p);
    }
    closedir(dir);
    assert_true(shards >= 2);
    char *single = llmq_path_join(out, "model.safetensors");
    assert_false(llmq_file_exists(single));
    free(single);
    st_model *a = open_model(m16), *b = open_model(out);
    for (int i = 0; i < st_model_count(a); i++) {
        const st_tensor *ta = st_model_at(a, i), *tb = st_model_find(b, ta->name);
        assert_non_null(tb);
        assert_int_equal(tb->dtype, LLMQ_F16);
        if (strncmp(ta->name, "model.layers.", 13) != 0)
            assert_memory_equal(ta->data, tb->data, ta->nbytes);
    }
    /* The function survives fp16 storage to fp16 rounding. */
    smooth_layer L, S;
    load_layer(a, 2, &L);
    load_layer(b, 2, &S);
    float *x = rand_vec(5 * HID, 1.0f);
    expect_same_function(&L, &S, x, 5, 3e-3, 0xF);
    free(x);
    layer_free(&L);
    layer_free(&S);
    st_model_close(a);
    st_model_close(b);

    /* A dead channel gets s = 1e-5 and input_layernorm / s overflows F16:
     * an error naming the tensor, not inf in the output. */
    char *out2 = tmp_path("out16_dead");
    write_scales(scales, &(scales_spec){.dead_channel = 1});
    o.out_dir = out2;
    llmq_clear_error();
    assert_int_equal(smooth_model(&o, NULL), -1);
    expect_contains(llmq_last_error(), "model.layers.1.input_layernorm.weight");
    expect_contains(llmq_last_error(), "F16");
    assert_false(llmq_file_exists(out2));
    expect_no_entry("out16_dead");
    free(out2);
    for (int i = 0; i < n; i++)
        free(h[i]);
    free(h);
    st_model_close(m);
    llmq_remove_tree(out);
    llmq_remove_tree(m16);
    free(cfg);
    free(cfg16);
    free(mdir);
    free(m16);
    free(out);
    free(scales);
}

/* ---- (c) bad input: a clear error, nothing on disk ---- */

static void expect_smooth_fails(const smooth_opts *o, const char *part, const char *part2)
{
    llmq_clear_error();
    smooth_result r;
    if (smooth_model(o, &r) == 0)
        fail_msg("smooth_model succeeded; expected an error mentioning \"%s\"", part);
    expect_contains(llmq_last_error(), part);
    if (part2)
        expect_contains(llmq_last_error(), part2);
    for (int g = 0; g < SMOOTH_NGROUPS; g++)
        assert_null(r.alpha[g]);
    assert_false(llmq_file_exists(o->out_dir));
}

static void test_errors(void **state)
{
    (void)state;
    char *mdir = model_dir(), *scales = tmp_path("act_bad.safetensors");
    char *out = tmp_path("bad_out"), *deep = tmp_path("bad_parent/x/out");
    smooth_opts o = {.model_dir = mdir, .scales = scales, .out_dir = out, .alpha = 0.5};

    write_scales(scales, &(scales_spec){.omit = "model.layers.2.mlp.down_proj"});
    expect_smooth_fails(&o, "model.layers.2.mlp.down_proj", scales);

    write_scales(scales, &(scales_spec){.bad_name = "model.layers.3.self_attn.o_proj", .bad_len = 60});
    expect_smooth_fails(&o, "model.layers.3.self_attn.o_proj", "[60]");
    expect_contains(llmq_last_error(), "[64]");

    write_scales(scales, &(scales_spec){.extra_layer = 1});
    expect_smooth_fails(&o, "model.layers.5", "5 layers");

    write_scales(scales, &(scales_spec){0});
    o.alpha = 1.5;
    expect_smooth_fails(&o, "alpha 1.5", "[0, 1]");
    o.alpha = NAN;
    expect_smooth_fails(&o, "alpha", "[0, 1]");
    o.alpha = -0.1;
    expect_smooth_fails(&o, "alpha", "[0, 1]");

    o.alpha = SMOOTH_ALPHA_AUTO; /* this file has no held-out activations */
    expect_smooth_fails(&o, "heldout", "--alpha auto");

    o.alpha = 0.5;
    o.out_dir = deep; /* a failure must not leave the parents it would create */
    write_scales(scales, &(scales_spec){.omit = "model.layers.0.self_attn.k_proj"});
    expect_smooth_fails(&o, "k_proj", NULL);
    expect_no_entry("bad_parent");
    o.out_dir = out;

    o.scales = "/nonexistent/act.safetensors";
    expect_smooth_fails(&o, "/nonexistent/act.safetensors", NULL);
    o.scales = scales;
    o.model_dir = "/nonexistent/model";
    expect_smooth_fails(&o, "/nonexistent/model", NULL);
    o.model_dir = mdir;
    expect_no_entry("bad_");

    /* Writing into the model directory itself is refused, even with force. */
    o.out_dir = mdir;
    o.force = 1;
    write_scales(scales, &(scales_spec){0});
    llmq_clear_error();
    assert_int_equal(smooth_model(&o, NULL), -1);
    expect_contains(llmq_last_error(), "input model directory");
    char *cfg = llmq_path_join(mdir, "config.json");
    assert_true(llmq_file_exists(cfg));
    free(cfg);

    free(mdir);
    free(scales);
    free(out);
    free(deep);
}

/* An existing non-empty OUTDIR needs --force, which replaces it whole. */
static void test_force(void **state)
{
    (void)state;
    char *mdir = model_dir(), *scales = tmp_path("act_force.safetensors"), *out = tmp_path("out_force");
    write_scales(scales, &(scales_spec){0});
    assert_int_equal(llmq_mkdirs(out), 0);
    smooth_opts o = {.model_dir = mdir, .scales = scales, .out_dir = out, .alpha = 0.5};
    /* An empty directory is fine to fill. */
    if (smooth_model(&o, NULL))
        fail_msg("%s", llmq_last_error());
    char *old = llmq_path_join(out, "old.txt");
    assert_int_equal(llmq_write_file(old, "x", 1), 0);
    llmq_clear_error();
    assert_int_equal(smooth_model(&o, NULL), -1);
    expect_contains(llmq_last_error(), "not empty");
    expect_contains(llmq_last_error(), "--force");
    assert_true(llmq_file_exists(old)); /* untouched */
    o.force = 1;
    if (smooth_model(&o, NULL))
        fail_msg("%s", llmq_last_error());
    assert_false(llmq_file_exists(old)); /* replaced whole */
    char *st = llmq_path_join(out, "model.safetensors");
    assert_true(llmq_file_exists(st));
    free(st);
    expect_no_entry("out_force.");
    llmq_remove_tree(out);
    free(old);
    free(mdir);
    free(scales);
    free(out);
}

static int group_setup(void **state)
{
    (void)state;
    g_data_dir = test_data_dir();
    return test_make_tmpdir(g_tmp, sizeof g_tmp, "llmq_smooth_");
}

static int group_teardown(void **state)
{
    (void)state;
    llmq_remove_tree(g_tmp);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_factor_formula),    cmocka_unit_test(test_vo_map),
        cmocka_unit_test(test_q8),                cmocka_unit_test(test_fold_norm_groups),
        cmocka_unit_test(test_fold_vo_gqa),       cmocka_unit_test(test_fold_up_down),
        cmocka_unit_test(test_auto_alpha_outlier), cmocka_unit_test(test_model_fixed_alpha),
        cmocka_unit_test(test_model_auto),        cmocka_unit_test(test_model_f16_sharded),
        cmocka_unit_test(test_errors),            cmocka_unit_test(test_force),
    };
    return cmocka_run_group_tests_name("smooth", tests, group_setup, group_teardown);
}
