/* The CUDA backend against the fp32 CPU reference, operation by operation.
 *
 * For each storage type (F32, F16, BF16) every operation of src/backend.h
 * runs on both backends with the same fresh random inputs (rounded through
 * dt first, so both see identical values), CUDA outputs poisoned with NaN
 * beforehand so that an unwritten element fails, and the results are
 * compared by relative L2 error ||cuda - cpu|| / ||cpu||. NaN never passes.
 *
 * Prints one line per check, "ok|FAIL op dt shape err=...", then
 * "N passed, N failed"; exits 1 on any failure and 77 (skipped) with "skipped: no GPU"
 * where no device is usable. No test framework: this runs on GPU machines
 * that lack cmocka. "test_backend_cuda quick" runs the small shapes only,
 * fast enough under compute-sanitizer. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/backend.h"
#include "src/dtype.h"
#include "src/error.h"

#define GT_PROG "test_backend_cuda"
#define GT_SEED 0x9E3779B97F4A7C15ull
#include "tests/gpu/gpu_test.h"

static int n_pass, n_fail;
static int g_quick; /* "quick": small shapes only (for compute-sanitizer) */
static llmq_backend *cpu, *gpu;
static llmq_dtype g_dt;

/* ---- random numbers (xorshift64*, Box-Muller) ---- */


static float nrand(void)
{
    double u1 = urand(), u2 = urand();
    return (float)(sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2));
}

/* n normal values times scale, rounded through the storage type. */
static float *randn(size_t n, float scale)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    if (!x) {
        fprintf(stderr, "out of host memory\n");
        exit(2);
    }
    for (size_t i = 0; i < n; i++)
        x[i] = nrand() * scale;
    llmq_round_through(x, n, g_dt);
    return x;
}

/* ---- comparison and reporting ---- */

/* Threshold by storage type; `loose` for attention and nll in F32. */
static double thr(int loose)
{
    switch (g_dt) {
    case LLMQ_F16: return 2e-3;
    case LLMQ_BF16: return 1.6e-2;
    default: return loose ? 1e-4 : 1e-5;
    }
}

static void report(const char *op, const char *shape, double err, double limit)
{
    int ok = err <= limit; /* false for NaN */
    printf("%s %s %s %s err=%.3g\n", ok ? "ok" : "FAIL", op, llmq_dtype_name(g_dt), shape, err);
    fflush(stdout);
    if (ok)
        n_pass++;
    else
        n_fail++;
}

static void report_error(const char *op, const char *shape)
{
    printf("FAIL %s %s %s error: %s\n", op, llmq_dtype_name(g_dt), shape, llmq_last_error());
    fflush(stdout);
    n_fail++;
}

/* Evaluate a backend call; on failure report it and leave the check. */
#define TRY(op, shape, call)                                                                                 \
    do {                                                                                                     \
        if ((call) != 0) {                                                                                   \
            report_error(op, shape);                                                                         \
            goto done;                                                                                       \
        }                                                                                                    \
    } while (0)

/* ---- device buffers ---- */

/* ---- checks ---- */

static void check_transfer(llmq_dtype src_dt, size_t n)
{
    char shape[64];
    snprintf(shape, sizeof shape, "src=%s n=%zu", llmq_dtype_name(src_dt), n);
    float *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want), *got = NULL;
    void *src = malloc(n * llmq_dtype_size(src_dt)), *d = NULL;
    for (size_t i = 0; i < n; i++)
        x[i] = nrand() * 3.0f;
    llmq_convert(src, src_dt, x, LLMQ_F32, n);
    llmq_convert(want, LLMQ_F32, src, src_dt, n);
    llmq_round_through(want, n, g_dt);
    d = gpu->alloc(gpu, n * llmq_dtype_size(g_dt));
    TRY("upload", shape, d ? 0 : -1);
    TRY("upload", shape, gpu->upload(gpu, d, g_dt, src, src_dt, n));
    memset(src, 0xff, n * llmq_dtype_size(src_dt)); /* upload must not read src after returning */
    got = gt_host_from(gpu, d, n, g_dt);
    TRY("upload", shape, got ? 0 : -1);
    report("upload", shape, gt_rel_l2(got, want, n), 0.0); /* conversion is exact: both round to nearest even */
done:
    free(x), free(want), free(got), free(src);
    gt_dfree(gpu, d);
}

static void check_embed(int rows, int dim)
{
    char shape[64];
    snprintf(shape, sizeof shape, "rows=%d dim=%d", rows, dim);
    const int vocab = 1000;
    float *table = randn((size_t)vocab * dim, 1.0f), *ref = malloc((size_t)rows * dim * sizeof(float)), *got = NULL;
    int32_t *ids = malloc(rows * sizeof *ids);
    for (int r = 0; r < rows; r++)
        ids[r] = (int32_t)(urand() * vocab);
    void *dt_ = gt_dev_from(gpu, table, (size_t)vocab * dim, g_dt), *dout = gt_dev_nan(gpu, (size_t)rows * dim, g_dt);
    void *dids = gpu->alloc(gpu, rows * sizeof *ids);
    TRY("embed", shape, dt_ && dout && dids ? 0 : -1);
    TRY("embed", shape, gpu->upload_bytes(gpu, dids, ids, rows * sizeof *ids));
    TRY("embed", shape, cpu->embed(cpu, ref, table, ids, rows, dim));
    TRY("embed", shape, gpu->embed(gpu, dout, dt_, dids, rows, dim));
    got = gt_host_from(gpu, dout, (size_t)rows * dim, g_dt);
    TRY("embed", shape, got ? 0 : -1);
    report("embed", shape, gt_rel_l2(got, ref, (size_t)rows * dim), 0.0); /* a copy */
done:
    free(table), free(ref), free(got), free(ids);
    gt_dfree(gpu, dt_), gt_dfree(gpu, dout), gt_dfree(gpu, dids);
}

static void check_rmsnorm(int rows, int dim)
{
    char shape[64];
    snprintf(shape, sizeof shape, "rows=%d dim=%d", rows, dim);
    size_t n = (size_t)rows * dim;
    float *x = randn(n, 2.0f), *w = malloc(dim * sizeof(float)), *ref = malloc(n * sizeof(float)), *got = NULL;
    for (int i = 0; i < dim; i++)
        w[i] = 1.0f + 0.2f * nrand();
    llmq_round_through(w, dim, g_dt);
    void *dx = gt_dev_from(gpu, x, n, g_dt), *dw = gt_dev_from(gpu, w, dim, g_dt), *dout = gt_dev_nan(gpu, n, g_dt);
    TRY("rmsnorm", shape, dx && dw && dout ? 0 : -1);
    TRY("rmsnorm", shape, cpu->rmsnorm(cpu, ref, x, w, rows, dim, 1e-5f));
    TRY("rmsnorm", shape, gpu->rmsnorm(gpu, dout, dx, dw, rows, dim, 1e-5f));
    got = gt_host_from(gpu, dout, n, g_dt);
    TRY("rmsnorm", shape, got ? 0 : -1);
    report("rmsnorm", shape, gt_rel_l2(got, ref, n), thr(0));
done:
    free(x), free(w), free(ref), free(got);
    gt_dfree(gpu, dx), gt_dfree(gpu, dw), gt_dfree(gpu, dout);
}

static void check_linear(int rows, int in, int out, int with_bias)
{
    char shape[96];
    snprintf(shape, sizeof shape, "rows=%d in=%d out=%d%s", rows, in, out, with_bias ? " bias" : "");
    size_t nx = (size_t)rows * in, nw = (size_t)out * in, ny = (size_t)rows * out;
    float *x = randn(nx, 1.0f), *w = randn(nw, 1.0f / sqrtf((float)in)), *bias = randn(out, 0.5f);
    float *ref = malloc(ny * sizeof(float)), *got = NULL;
    void *dx = gt_dev_from(gpu, x, nx, g_dt), *dw = gt_dev_from(gpu, w, nw, g_dt), *db = gt_dev_from(gpu, bias, out, g_dt);
    void *dy = gt_dev_nan(gpu, ny, g_dt);
    TRY("linear", shape, dx && dw && db && dy ? 0 : -1);
    TRY("linear", shape, cpu->linear(cpu, ref, x, w, with_bias ? bias : NULL, rows, in, out));
    TRY("linear", shape, gpu->linear(gpu, dy, dx, dw, with_bias ? db : NULL, rows, in, out));
    got = gt_host_from(gpu, dy, ny, g_dt);
    TRY("linear", shape, got ? 0 : -1);
    report("linear", shape, gt_rel_l2(got, ref, ny), thr(0));
done:
    free(x), free(w), free(bias), free(ref), free(got);
    gt_dfree(gpu, dx), gt_dfree(gpu, dw), gt_dfree(gpu, db), gt_dfree(gpu, dy);
}

static float *rope_table(int seq, int hd)
{
    float *t = malloc((size_t)seq * hd * sizeof(float));
    int half = hd / 2;
    for (int p = 0; p < seq; p++)
        for (int i = 0; i < half; i++) {
            double f = pow(10000.0, -2.0 * i / hd), a = p * f;
            t[(size_t)p * hd + i] = (float)cos(a);
            t[(size_t)p * hd + half + i] = (float)sin(a);
        }
    return t;
}

static void check_rope(int rows, int seq, int heads, int hd)
{
    char shape[96];
    snprintf(shape, sizeof shape, "rows=%d seq=%d heads=%d hd=%d", rows, seq, heads, hd);
    size_t n = (size_t)rows * heads * hd;
    float *x = randn(n, 1.0f), *tab = rope_table(seq, hd), *got = NULL;
    void *dx = gt_dev_from(gpu, x, n, g_dt), *dtab = gt_dev_from(gpu, tab, (size_t)seq * hd, LLMQ_F32);
    TRY("rope", shape, dx && dtab ? 0 : -1);
    TRY("rope", shape, cpu->rope(cpu, x, tab, rows, seq, heads, hd));
    TRY("rope", shape, gpu->rope(gpu, dx, dtab, rows, seq, heads, hd));
    got = gt_host_from(gpu, dx, n, g_dt);
    TRY("rope", shape, got ? 0 : -1);
    report("rope", shape, gt_rel_l2(got, x, n), thr(0));
done:
    free(x), free(tab), free(got);
    gt_dfree(gpu, dx), gt_dfree(gpu, dtab);
}

/* rope_at: positions pos + r % seq with pos read from backend memory (the
 * decode graphs' path), against the CPU's rope_at. */
static void check_rope_at(int rows, int seq, int heads, int hd, int pos)
{
    char shape[96];
    snprintf(shape, sizeof shape, "rows=%d seq=%d heads=%d hd=%d pos=%d", rows, seq, heads, hd, pos);
    size_t n = (size_t)rows * heads * hd;
    float *x = randn(n, 1.0f), *tab = rope_table(pos + seq, hd), *got = NULL;
    int32_t *dpos = gpu->alloc(gpu, sizeof(int32_t));
    void *dx = gt_dev_from(gpu, x, n, g_dt), *dtab = gt_dev_from(gpu, tab, (size_t)(pos + seq) * hd, LLMQ_F32);
    TRY("rope_at", shape, dx && dtab && dpos ? 0 : -1);
    TRY("rope_at", shape, gpu->upload_bytes(gpu, dpos, &pos, sizeof pos));
    TRY("rope_at", shape, cpu->rope_at(cpu, x, tab, &pos, rows, seq, heads, hd));
    TRY("rope_at", shape, gpu->rope_at(gpu, dx, dtab, dpos, rows, seq, heads, hd));
    got = gt_host_from(gpu, dx, n, g_dt);
    TRY("rope_at", shape, got ? 0 : -1);
    report("rope_at", shape, gt_rel_l2(got, x, n), thr(0));
done:
    free(x), free(tab), free(got);
    gt_dfree(gpu, dx), gt_dfree(gpu, dtab), gt_dfree(gpu, dpos);
}

static void check_attention(int batch, int seq, int heads, int kv, int hd)
{
    char shape[96];
    snprintf(shape, sizeof shape, "batch=%d seq=%d heads=%d kv=%d hd=%d", batch, seq, heads, kv, hd);
    size_t nq = (size_t)batch * seq * heads * hd, nk = (size_t)batch * seq * kv * hd;
    float *q = randn(nq, 1.0f), *k = randn(nk, 1.0f), *v = randn(nk, 1.0f);
    float *ref = malloc(nq * sizeof(float)), *got = NULL, *again = NULL;
    void *dq = gt_dev_from(gpu, q, nq, g_dt), *dk = gt_dev_from(gpu, k, nk, g_dt), *dv = gt_dev_from(gpu, v, nk, g_dt);
    void *dout = gt_dev_nan(gpu, nq, g_dt);
    TRY("attention", shape, dq && dk && dv && dout ? 0 : -1);
    TRY("attention", shape, cpu->attention(cpu, ref, q, k, v, batch, seq, heads, kv, hd));
    TRY("attention", shape, gpu->attention(gpu, dout, dq, dk, dv, batch, seq, heads, kv, hd));
    got = gt_host_from(gpu, dout, nq, g_dt);
    TRY("attention", shape, got ? 0 : -1);
    report("attention", shape, gt_rel_l2(got, ref, nq), thr(1));
    /* Same inputs again into a fresh poisoned buffer: a result that moves
     * between runs is a race. */
    gt_dfree(gpu, dout);
    dout = gt_dev_nan(gpu, nq, g_dt);
    TRY("attention-repeat", shape, dout ? 0 : -1);
    TRY("attention-repeat", shape, gpu->attention(gpu, dout, dq, dk, dv, batch, seq, heads, kv, hd));
    again = gt_host_from(gpu, dout, nq, g_dt);
    TRY("attention-repeat", shape, again ? 0 : -1);
    report("attention-repeat", shape, gt_rel_l2(again, got, nq), 0.0);
done:
    free(q), free(k), free(v), free(ref), free(got), free(again);
    gt_dfree(gpu, dq), gt_dfree(gpu, dk), gt_dfree(gpu, dv), gt_dfree(gpu, dout);
}

static void check_silu_add(size_t n)
{
    char shape[64];
    snprintf(shape, sizeof shape, "n=%zu", n);
    float *g = randn(n, 3.0f), *u = randn(n, 1.0f), *ref = malloc((n ? n : 1) * sizeof(float)), *got = NULL;
    void *dg = gt_dev_from(gpu, g, n, g_dt), *du = gt_dev_from(gpu, u, n, g_dt), *dout = gt_dev_nan(gpu, n, g_dt);
    TRY("silu_mul", shape, dg && du && dout ? 0 : -1);
    TRY("silu_mul", shape, cpu->silu_mul(cpu, ref, g, u, n));
    TRY("silu_mul", shape, gpu->silu_mul(gpu, dout, dg, du, n));
    got = gt_host_from(gpu, dout, n, g_dt);
    TRY("silu_mul", shape, got ? 0 : -1);
    report("silu_mul", shape, gt_rel_l2(got, ref, n), thr(0));
    free(got);
    got = NULL;
    /* add in place: g += u */
    TRY("add", shape, cpu->add(cpu, g, u, n));
    TRY("add", shape, gpu->add(gpu, dg, du, n));
    got = gt_host_from(gpu, dg, n, g_dt);
    TRY("add", shape, got ? 0 : -1);
    report("add", shape, gt_rel_l2(got, g, n), thr(0));
done:
    free(g), free(u), free(ref), free(got);
    gt_dfree(gpu, dg), gt_dfree(gpu, du), gt_dfree(gpu, dout);
}

static void check_nll(int rows, int vocab)
{
    char shape[64];
    snprintf(shape, sizeof shape, "rows=%d vocab=%d", rows, vocab);
    size_t n = (size_t)rows * vocab;
    float *l = randn(n, 3.0f);
    int32_t *t = malloc(rows * sizeof *t);
    for (int r = 0; r < rows; r++)
        t[r] = r % 5 == 4 ? -100 : (int32_t)(urand() * vocab); /* some ignored positions */
    void *dl = gt_dev_from(gpu, l, n, g_dt), *dtg = gpu->alloc(gpu, rows * sizeof *t);
    double ref = 0.0, got = 0.0;
    TRY("nll", shape, dl && dtg ? 0 : -1);
    TRY("nll", shape, gpu->upload_bytes(gpu, dtg, t, rows * sizeof *t));
    TRY("nll", shape, cpu->nll(cpu, &ref, l, t, rows, vocab));
    TRY("nll", shape, gpu->nll(gpu, &got, dl, dtg, rows, vocab));
    report("nll", shape, isfinite(got) ? fabs(got - ref) / fabs(ref) : NAN, thr(1));
done:
    free(l), free(t);
    gt_dfree(gpu, dl), gt_dfree(gpu, dtg);
}

static void check_col_absmax(int rows, int cols)
{
    char shape[64];
    snprintf(shape, sizeof shape, "rows=%d cols=%d", rows, cols);
    size_t n = (size_t)rows * cols;
    float *x = randn(n, 1.0f), *amax = malloc(cols * sizeof(float)), *got = NULL;
    for (int j = 0; j < cols; j++) /* running maxima from earlier batches: some win, some lose */
        amax[j] = (float)(urand() * 3.0);
    void *dx = gt_dev_from(gpu, x, n, g_dt), *da = gt_dev_from(gpu, amax, cols, LLMQ_F32);
    TRY("col_absmax", shape, dx && da ? 0 : -1);
    TRY("col_absmax", shape, cpu->col_absmax(cpu, amax, x, rows, cols));
    TRY("col_absmax", shape, gpu->col_absmax(gpu, da, dx, rows, cols));
    got = gt_host_from(gpu, da, cols, LLMQ_F32);
    TRY("col_absmax", shape, got ? 0 : -1);
    report("col_absmax", shape, gt_rel_l2(got, amax, cols), 0.0); /* maxima of identical values: exact */
done:
    free(x), free(amax), free(got);
    gt_dfree(gpu, dx), gt_dfree(gpu, da);
}

/* which: bit 0 col_amax, bit 1 col_abssum, bit 2 row_amax (others NULL). */
static void check_act_stats(int rows, int cols, int which)
{
    char shape[96];
    snprintf(shape, sizeof shape, "rows=%d cols=%d outputs=%s%s%s", rows, cols, which & 1 ? "A" : "-",
             which & 2 ? "S" : "-", which & 4 ? "R" : "-");
    size_t n = (size_t)rows * cols;
    float *x = randn(n, 1.0f), *amax = malloc(cols * sizeof(float)), *sum = malloc(cols * sizeof(float));
    float *rmax = malloc(rows * sizeof(float)), *ga = NULL, *gs = NULL, *gr = NULL;
    for (int j = 0; j < cols; j++) { /* running statistics from earlier batches */
        amax[j] = (float)(urand() * 3.0);
        sum[j] = (float)(urand() * rows);
    }
    for (int r = 0; r < rows; r++)
        rmax[r] = NAN; /* an output: must be written */
    void *dx = gt_dev_from(gpu, x, n, g_dt), *da = gt_dev_from(gpu, amax, cols, LLMQ_F32), *ds = gt_dev_from(gpu, sum, cols, LLMQ_F32);
    void *dr = gt_dev_from(gpu, rmax, rows, LLMQ_F32);
    TRY("act_stats", shape, dx && da && ds && dr ? 0 : -1);
    TRY("act_stats", shape,
        cpu->act_stats(cpu, which & 1 ? amax : NULL, which & 2 ? sum : NULL, which & 4 ? rmax : NULL, x, rows, cols));
    TRY("act_stats", shape,
        gpu->act_stats(gpu, which & 1 ? da : NULL, which & 2 ? ds : NULL, which & 4 ? dr : NULL, dx, rows, cols));
    ga = gt_host_from(gpu, da, cols, LLMQ_F32);
    gs = gt_host_from(gpu, ds, cols, LLMQ_F32);
    gr = gt_host_from(gpu, dr, rows, LLMQ_F32);
    TRY("act_stats", shape, ga && gs && gr ? 0 : -1);
    /* Unrequested outputs stay as they were (rmax: NaN, compared bitwise below). */
    report("act_stats col_amax", shape, gt_rel_l2(ga, amax, cols), 0.0);
    report("act_stats col_abssum", shape, gt_rel_l2(gs, sum, cols), 1e-5); /* fp32 sums of identical values */
    if (which & 4)
        report("act_stats row_amax", shape, gt_rel_l2(gr, rmax, rows), 0.0);
    else
        report("act_stats row_amax untouched", shape, memcmp(gr, rmax, rows * sizeof(float)) ? 1.0 : 0.0, 0.0);
done:
    free(x), free(amax), free(sum), free(rmax), free(ga), free(gs), free(gr);
    gt_dfree(gpu, dx), gt_dfree(gpu, da), gt_dfree(gpu, ds), gt_dfree(gpu, dr);
}

static void check_fq_tensor(size_t n, int qmax)
{
    char shape[64];
    snprintf(shape, sizeof shape, "n=%zu qmax=%d", n, qmax);
    float *x = randn(n, 1.0f), *got = NULL;
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++)
        mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
    const float scale = 0.7f * mx / (float)qmax; /* the largest values clip */
    void *dx = gt_dev_from(gpu, x, n, g_dt);
    TRY("fq_tensor", shape, dx ? 0 : -1);
    TRY("fq_tensor", shape, cpu->fq_tensor(cpu, x, n, scale, qmax));
    TRY("fq_tensor", shape, gpu->fq_tensor(gpu, dx, n, scale, qmax));
    got = gt_host_from(gpu, dx, n, g_dt);
    TRY("fq_tensor", shape, got ? 0 : -1);
    report("fq_tensor", shape, gt_rel_l2(got, x, n), thr(0));
done:
    free(x), free(got);
    gt_dfree(gpu, dx);
}

static void check_xtx(int rows, int cols)
{
    char shape[64];
    snprintf(shape, sizeof shape, "rows=%d cols=%d", rows, cols);
    size_t n = (size_t)rows * cols, nh = (size_t)cols * cols;
    float *x = randn(n, 1.0f), *h = malloc(nh * sizeof(float)), *got = NULL;
    for (size_t i = 0; i < nh; i++)
        h[i] = nrand(); /* an accumulated Hessian (F32 whatever dt is) */
    const float alpha = 1.0f / (float)rows;
    void *dx = gt_dev_from(gpu, x, n, g_dt), *dh = gt_dev_from(gpu, h, nh, LLMQ_F32);
    TRY("xtx", shape, dx && dh ? 0 : -1);
    TRY("xtx", shape, cpu->xtx(cpu, h, x, rows, cols, alpha));
    TRY("xtx", shape, gpu->xtx(gpu, dh, dx, rows, cols, alpha));
    got = gt_host_from(gpu, dh, nh, LLMQ_F32);
    TRY("xtx", shape, got ? 0 : -1);
    /* fp32 accumulation on identical inputs: within fp32 rounding for every dt. */
    report("xtx", shape, gt_rel_l2(got, h, nh), g_dt == LLMQ_F32 ? thr(0) : 1e-5);
done:
    free(x), free(h), free(got);
    gt_dfree(gpu, dx), gt_dfree(gpu, dh);
}

static void check_fq(int rows, int cols, int qmax, int tiny_row)
{
    char shape[96];
    snprintf(shape, sizeof shape, "rows=%d cols=%d qmax=%d%s", rows, cols, qmax, tiny_row ? " tiny-row" : "");
    size_t n = (size_t)rows * cols;
    float *x = randn(n, 1.0f), *got = NULL;
    if (tiny_row) { /* a row below the 1e-5 floor of the scale */
        for (int j = 0; j < cols; j++)
            x[j] *= 1e-7f;
        llmq_round_through(x, cols, g_dt);
    }
    void *dx = gt_dev_from(gpu, x, n, g_dt);
    TRY("fq_per_token", shape, dx ? 0 : -1);
    TRY("fq_per_token", shape, cpu->fq_per_token(cpu, x, rows, cols, qmax));
    TRY("fq_per_token", shape, gpu->fq_per_token(gpu, dx, rows, cols, qmax));
    got = gt_host_from(gpu, dx, n, g_dt);
    TRY("fq_per_token", shape, got ? 0 : -1);
    report("fq_per_token", shape, gt_rel_l2(got, x, n), thr(0));
done:
    free(x), free(got);
    gt_dfree(gpu, dx);
}

static void run_all(void)
{
    const int big = !g_quick;
    static const llmq_dtype srcs[] = {LLMQ_F32, LLMQ_F16, LLMQ_BF16, LLMQ_F64};
    for (int i = 0; i < 4; i++)
        check_transfer(srcs[i], big ? 1000003 : 1003);
    if (big) {
        check_transfer(LLMQ_F32, 20000001); /* 80 MB: several staging chunks */
        check_transfer(LLMQ_BF16, 20000001);
    }

    static const int rd[][2] = {{1, 64}, {3, 172}, {17, 4096}, {1000, 172}, {1000, 4096}, {17, 11008}};
    for (int i = 0; i < 6; i++) {
        if (!big && rd[i][0] * rd[i][1] > 100000)
            continue;
        check_embed(rd[i][0], rd[i][1]);
        check_rmsnorm(rd[i][0], rd[i][1]);
        check_col_absmax(rd[i][0], rd[i][1]);
        check_fq(rd[i][0], rd[i][1], 127, 0);
    }
    check_fq(17, 172, 7, 1);
    check_fq(3, 4096, 7, 1);
    check_act_stats(1, 64, 7);
    check_act_stats(17, 172, 7);
    check_act_stats(3, 4096, 4);
    check_act_stats(100, 4096, 3);
    if (big) {
        check_act_stats(1000, 4096, 7);
        check_act_stats(1000, 172, 5);
        check_act_stats(1000, 11008, 6);
    }
    check_fq_tensor(1, 127);
    check_fq_tensor(17, 127);
    check_fq_tensor(1003, 7);
    if (big)
        check_fq_tensor(4096 * 1000 + 3, 127);
    if (big) {
        check_col_absmax(262144, 64);
        check_col_absmax(20000, 4096);
    }

    check_linear(1, 64, 172, 0);
    check_linear(3, 172, 64, 1);
    check_linear(17, 4096, 172, 0);
    if (big) {
        check_linear(1000, 172, 4096, 1);
        check_linear(1000, 4096, 4096, 0);
        check_linear(256, 11008, 4096, 0);
    }

    check_rope(17, 5, 3, 8);
    check_rope(3, 7, 2, 172);
    check_rope_at(4, 1, 32, 128, 300);
    check_rope_at(6, 3, 2, 8, 17);
    if (big) {
        check_rope(1000, 512, 8, 8);
        check_rope(4096, 2048, 32, 128);
    }

    if (big) {
        check_attention(2, 512, 8, 4, 8);     /* stories260K */
        check_attention(1, 2048, 32, 8, 128); /* 7B-like, GQA 32:8 */
        check_attention(2, 256, 32, 32, 128); /* MHA, 2 windows */
    } else {
        check_attention(1, 130, 2, 1, 8);
        check_attention(2, 130, 2, 1, 128);
    }
    check_attention(3, 17, 4, 2, 64);  /* seq not a multiple of the tile */
    check_attention(1, 1, 2, 1, 128);  /* one row */
    check_attention(2, 130, 4, 4, 96);
    check_attention(1, 77, 2, 2, 32);
    check_attention(1, 100, 2, 1, 256);
    check_attention(1, 65, 3, 3, 48);  /* no tensor-core variant: SIMT */
    check_attention(2, 33, 6, 2, 172); /* odd large head_dim */

    static const size_t ns[] = {1, 3, 17, 1000 * 172, 4096 * 17 + 5};
    for (int i = 0; i < (big ? 5 : 3); i++)
        check_silu_add(ns[i]);

    check_nll(1, 64);
    check_nll(17, 172);
    if (big) {
        check_nll(100, 32000);
        check_nll(1000, 4096);
    }

    check_xtx(17, 64);
    check_xtx(3, 4096);
    if (big) {
        check_xtx(1000, 172);
        check_xtx(2048, 1024);
    }
}

int main(int argc, char **argv)
{
    g_quick = argc > 1 && strcmp(argv[1], "quick") == 0;
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 77; /* meson's "skipped" */
    }
    if (llmq_backend_cpu(&cpu) != 0) {
        llmq_print_error("test_backend_cuda");
        return 1;
    }
    static const llmq_dtype dts[] = {LLMQ_F32, LLMQ_F16, LLMQ_BF16};
    for (int i = 0; i < 3; i++) {
        g_dt = dts[i];
        if (llmq_backend_cuda(&gpu, 0, g_dt) != 0) {
            report_error("backend", "create");
            continue;
        }
        run_all();
        gpu->destroy(gpu);
        gpu = NULL;
    }
    cpu->destroy(cpu);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
