#include "gptq/gptq.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gptq/hinv.h"
#include "quant/rtn.h"
#include "src/error.h"
#include "src/parallel.h"

void gptq_params_default(gptq_params *p)
{
    p->bits = 4;
    p->group = 128;
    p->sym = 1;
    p->act_order = 0;
    p->static_groups = 0;
    p->damp = 0.01f;
    p->block = 128;
    p->scale_f16 = 0;
    p->damp_step = 0.01f;
    p->max_retries = 100;
    p->threads = 0;
}

/* Everything the per-row block work reads or writes. */
typedef struct {
    const gptq_params *p;
    int N, K, G, maxq;
    float *W;             /* [N, K] permuted, with the updates of earlier blocks */
    const float *U;       /* [K, K] upper triangle: factor of H^-1 */
    const int32_t *perm;  /* quantization order -> original channel */
    const int32_t *cgrp;  /* quantization order -> group row */
    llmq_qweight *res;
    float *W1, *E;        /* [N, block]: block copy of W, errors */
    double *rowloss;      /* [N] */
    int i1, i2;           /* current block */
} solve_ctx;

/* y[0..n) -= a * x[0..n). Unrolled by 8 so that the compiler's basic-block
 * vectorizer turns it into SIMD even at -O2 (GCC's -O2 does not vectorize
 * loops of unknown length); each element is still one rounded product and
 * one rounded subtraction. */
static void axpy_neg(float *restrict y, const float *restrict x, float a, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float *restrict yy = y + i;
        const float *restrict xx = x + i;
        yy[0] -= a * xx[0];
        yy[1] -= a * xx[1];
        yy[2] -= a * xx[2];
        yy[3] -= a * xx[3];
        yy[4] -= a * xx[4];
        yy[5] -= a * xx[5];
        yy[6] -= a * xx[6];
        yy[7] -= a * xx[7];
    }
    for (; i < n; i++)
        y[i] -= a * x[i];
}

/* The GPTQ inner loop for rows [n0, n1) over the current block. */
static void block_rows(solve_ctx *c, int n0, int n1)
{
    const size_t K = (size_t)c->K, N = (size_t)c->N, B = (size_t)c->p->block;
    const int cnt = c->i2 - c->i1;
    const int dyn_groups = c->p->group > 0 && !c->p->static_groups;
    llmq_qweight *res = c->res;

    for (size_t n = (size_t)n0; n < (size_t)n1; n++) {
        float *w1 = c->W1 + n * B, *e = c->E + n * B;
        const float *wrow = c->W + n * K;
        memcpy(w1, wrow + c->i1, (size_t)cnt * sizeof(float));
        double loss = 0.0;
        for (int i = 0; i < cnt; i++) {
            const int j = c->i1 + i;
            if (dyn_groups && j % c->G == 0) {
                int len = c->K - j < c->G ? c->K - j : c->G;
                size_t g = (size_t)(j / c->G);
                rtn_find_params(wrow + j, len, c->maxq, c->p->sym, c->p->scale_f16, &res->scales[g * N + n],
                                &res->zeros[g * N + n]);
            }
            const size_t g = (size_t)c->cgrp[j];
            const float s = res->scales[g * N + n], z = res->zeros[g * N + n];
            const float d = c->U[(size_t)j * K + (size_t)j];
            const float x = w1[i];
            const float q = rtn_code(x, s, z, (float)c->maxq);
            const float diff = x - rtn_dequant(q, s, z);
            res->q[n * K + (size_t)c->perm[j]] = (uint8_t)q;
            loss += (double)((diff * diff) / (d * d) / 2.0f);
            const float err = diff / d;
            e[i] = err;
            /* W1[:, i+1:] -= err * U[j, i+1:]  (each product rounded, then
             * subtracted, as the reference's outer-product matmul) */
            axpy_neg(w1 + i + 1, c->U + (size_t)j * K + (size_t)(j + 1), err, cnt - i - 1);
        }
        c->rowloss[n] += loss;
    }
}

static void rows_fn(void *c, int n0, int n1) { block_rows(c, n0, n1); }

/* ---- act-order permutation ---- */

typedef struct {
    float d;
    int32_t i;
} diag_key;

static int cmp_diag_desc(const void *a, const void *b)
{
    const diag_key *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? 1 : -1;
    return (x->i > y->i) - (x->i < y->i); /* ties: lower index first (stable) */
}

/* H := H[perm][:, perm] in place: rows by following the permutation's
 * cycles, then each row's columns through a scratch row. */
static int permute_sym(float *H, size_t K, const int32_t *perm)
{
    float *tmp = malloc(K * sizeof(float));
    unsigned char *seen = calloc(K, 1);
    if (!tmp || !seen) {
        free(tmp);
        free(seen);
        return -1;
    }
    for (size_t s = 0; s < K; s++) {
        if (seen[s])
            continue;
        memcpy(tmp, H + s * K, K * sizeof(float));
        size_t a = s;
        for (;;) {
            seen[a] = 1;
            size_t src = (size_t)perm[a];
            if (src == s) {
                memcpy(H + a * K, tmp, K * sizeof(float));
                break;
            }
            memcpy(H + a * K, H + src * K, K * sizeof(float));
            a = src;
        }
    }
    for (size_t r = 0; r < K; r++) {
        float *row = H + r * K;
        for (size_t a = 0; a < K; a++)
            tmp[a] = row[perm[a]];
        memcpy(row, tmp, K * sizeof(float));
    }
    free(tmp);
    free(seen);
    return 0;
}

static int permute_cols(float *W, size_t N, size_t K, const int32_t *perm)
{
    float *tmp = malloc(K * sizeof(float));
    if (!tmp)
        return -1;
    for (size_t n = 0; n < N; n++) {
        float *row = W + n * K;
        for (size_t a = 0; a < K; a++)
            tmp[a] = row[perm[a]];
        memcpy(row, tmp, K * sizeof(float));
    }
    free(tmp);
    return 0;
}

/* ---- the solve ---- */

static int check_params(const gptq_params *p, int out, int in)
{
    if (out <= 0 || in <= 0)
        return llmq_fail("gptq: bad shape [%d, %d]", out, in);
    if (p->bits < 2 || p->bits > 8)
        return llmq_fail("gptq: %d bits not supported (2..8)", p->bits);
    if (p->group == 0 || p->group < -1)
        return llmq_fail("gptq: bad group size %d (> 0, or -1)", p->group);
    if (p->block <= 0)
        return llmq_fail("gptq: bad block size %d", p->block);
    if (!(p->damp >= 0.0f) || !(p->damp_step > 0.0f) || p->max_retries < 0)
        return llmq_fail("gptq: bad damping (damp %g, step %g, retries %d)", (double)p->damp,
                         (double)p->damp_step, p->max_retries);
    return 0;
}

static int all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

static int thread_count(const gptq_params *p, int N)
{
    int t = p->threads;
    if (t <= 0)
        t = llmq_cpu_count();
    /* below ~32 rows per thread the thread start costs more than it saves */
    int most = N / 32 > 0 ? N / 32 : 1;
    return t < most ? t : most;
}

int gptq_solve(float *W, int out, int in, float *H, const gptq_params *p, llmq_qweight *res, gptq_stats *st)
{
    memset(res, 0, sizeof *res);
    if (check_params(p, out, in) < 0)
        return -1;
    const size_t N = (size_t)out, K = (size_t)in;
    if (!all_finite(W, N * K))
        return llmq_fail("gptq: the weight [%d, %d] contains NaN or Inf", out, in);
    if (!all_finite(H, K * K))
        return llmq_fail("gptq: the Hessian [%d, %d] contains NaN or Inf", in, in);
    if (qweight_alloc(res, out, in, p->bits, p->group, p->sym) < 0)
        return llmq_wrap("gptq");

    const int maxq = (1 << p->bits) - 1;
    const int G = p->group > 0 ? p->group : in;
    int32_t *perm = malloc(K * sizeof(int32_t)), *cgrp = malloc(K * sizeof(int32_t));
    float *W1 = malloc(N * (size_t)p->block * sizeof(float));
    float *E = malloc(N * (size_t)p->block * sizeof(float));
    double *rowloss = calloc(N, sizeof(double));
    if (!perm || !cgrp || !W1 || !E || !rowloss)
        goto oom;

    /* 1. group -1: one grid per row, from W before dead columns are zeroed
     * (the reference's initial find_params(W)). */
    if (p->group == -1)
        for (size_t n = 0; n < N; n++)
            rtn_find_params(W + n * K, in, maxq, p->sym, p->scale_f16, &res->scales[n], &res->zeros[n]);

    /* 2. dead channels: never seen a nonzero input, so their weights do not
     * matter; zero them and make H invertible there. */
    for (size_t i = 0; i < K; i++)
        if (H[i * K + i] == 0.0f) {
            H[i * K + i] = 1.0f;
            for (size_t n = 0; n < N; n++)
                W[n * K + i] = 0.0f;
        }

    /* 3. static groups: grids from the whole (dead-zeroed) W, original order. */
    const int static_g = p->group > 0 && p->static_groups;
    if (static_g)
        for (int g = 0; g < res->ngroups; g++) {
            int k0 = g * G, len = in - k0 < G ? in - k0 : G;
            for (size_t n = 0; n < N; n++)
                rtn_find_params(W + n * K + k0, len, maxq, p->sym, p->scale_f16, &res->scales[(size_t)g * N + n],
                                &res->zeros[(size_t)g * N + n]);
        }

    /* 4. act-order. */
    for (size_t i = 0; i < K; i++)
        perm[i] = (int32_t)i;
    if (p->act_order) {
        diag_key *keys = malloc(K * sizeof *keys);
        if (!keys)
            goto oom;
        for (size_t i = 0; i < K; i++)
            keys[i] = (diag_key){H[i * K + i], (int32_t)i};
        qsort(keys, K, sizeof *keys, cmp_diag_desc);
        for (size_t i = 0; i < K; i++)
            perm[i] = keys[i].i;
        free(keys);
        if (permute_sym(H, K, perm) < 0 || permute_cols(W, N, K, perm) < 0)
            goto oom;
    }
    /* Group row of the column quantized j-th, and g_idx. */
    for (size_t j = 0; j < K; j++) {
        if (p->group == -1)
            cgrp[j] = 0;
        else if (static_g)
            cgrp[j] = perm[j] / G;
        else
            cgrp[j] = (int32_t)j / G;
        res->g_idx[perm[j]] = cgrp[j];
    }

    /* 5. damping and the inverse Hessian factor. */
    gptq_stats local;
    if (gptq_hinv(H, in, p->damp, p->damp_step, p->max_retries, &local.damp, &local.retries) < 0) {
        free(perm);
        free(cgrp);
        free(W1);
        free(E);
        free(rowloss);
        qweight_free(res);
        return -1;
    }

    /* 6. the blocks. */
    solve_ctx c = {.p = p, .N = out, .K = in, .G = G, .maxq = maxq, .W = W, .U = H, .perm = perm, .cgrp = cgrp,
                   .res = res, .W1 = W1, .E = E, .rowloss = rowloss};
    const int nthreads = thread_count(p, out);
    for (int i1 = 0; i1 < in; i1 += p->block) {
        c.i1 = i1;
        c.i2 = i1 + p->block < in ? i1 + p->block : in;
        llmq_parallel_rows(c.N, nthreads, rows_fn, &c);
        if (c.i2 < in) /* W[:, i2:] -= Err1 @ U[i1:i2, i2:] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in - c.i2, c.i2 - i1, -1.0f, E, p->block,
                        H + (size_t)i1 * K + (size_t)c.i2, in, 1.0f, W + c.i2, in);
    }

    /* 7. W := the dequantized weights in the original order. */
    qweight_dequant(res, W);
    local.loss = 0.0;
    for (size_t n = 0; n < N; n++) /* row order: independent of threads */
        local.loss += rowloss[n];
    if (st)
        *st = local;
    free(perm);
    free(cgrp);
    free(W1);
    free(E);
    free(rowloss);
    return 0;
oom:
    free(perm);
    free(cgrp);
    free(W1);
    free(E);
    free(rowloss);
    qweight_free(res);
    return llmq_fail("gptq: out of memory for [%d, %d]", out, in);
}
