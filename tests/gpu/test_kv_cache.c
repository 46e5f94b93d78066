/* The CUDA KV cache (kv_store, attention_kv) against the CPU reference.
 *
 * For each storage type (F32, F16, BF16) and cache kind (dt, int8) and a
 * list of shapes (head_dim 2..256, decode n = 1 and chunks n = 3, 17, 512,
 * positions 0..32767, batch 1..16, GQA groups 1..8), both backends get the
 * same random inputs (rounded through dt first) and:
 *
 *   kv-store   write positions 0..pos-1, then pos..pos+n-1, into caches
 *              whose other positions hold poison; the whole caches must
 *              agree: dt caches exactly, int8 scales exactly, int8 codes
 *              exactly except for one-step differences where x/s lies within
 *              rounding of a .5 tie (counted; at most 1 per 10000 codes,
 *              and always printed). Unwritten positions must keep their poison.
 *   attention  attention_kv into a NaN-poisoned output: relative L2 error
 *              ||cuda - cpu|| / ||cpu|| below 1e-5 (F32), 2e-3 (F16), 1e-2
 *              (BF16); an unwritten element is NaN and fails. In F32 the CPU
 *              reference's own rounding reaches ~1e-5 at 20000+ positions
 *              (its sums run over all keys one by one, and adding each tiny
 *              weight to a large sum loses it), so F32 also computes the
 *              attention in fp64 from the CPU's caches and requires
 *              ||cuda - fp64|| < 1e-5 ||fp64|| and ||cuda - cpu|| within 1e-5
 *              plus the CPU's own distance to fp64.
 *   repeat     the same call again into a fresh poisoned output: bitwise
 *              equal (a result that moves between runs is a race).
 *
 * K/V rows are scaled per (position, head) by factors from 1e-7 to 4 and
 * a few are all zero, so that the int8 scales meet their 1e-5 floor and
 * some keys stand out; q is N(0, 1). Then the argument errors: each call must fail with a message
 * naming the operation.
 *
 * Prints "ok|FAIL check dt cache shape err=...", then "N passed, N failed";
 * exits 1 on any failure, 77 (skipped) where no GPU is usable. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/backend.h"
#include "src/dtype.h"
#include "src/error.h"

#define GT_PROG "test_kv_cache"
#define GT_SEED 0x5851F42D4C957F2Dull
#include "tests/gpu/gpu_test.h"

static int n_pass, n_fail;
static llmq_backend *cpu, *gpu;
static llmq_dtype g_dt;

#define POISON_CODE 0x55 /* int8 codes of positions never written */

static float nrand(void)
{
    double u1 = urand(), u2 = urand();
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* rows x cols normal values times scale; each row of `seg` values gets
 * its own magnitude (mostly 1; sometimes tiny, small, large or zero), then
 * everything is rounded through the storage type. */
static float *rand_rows(size_t rows, int cols, int seg, float scale)
{
    float *x = xmalloc(rows * cols * sizeof *x);
    for (size_t r = 0; r < rows; r++)
        for (int j0 = 0; j0 < cols; j0 += seg) {
            double u = urand();
            float mag = u < 0.01 ? 0.0f : u < 0.02 ? 1e-7f : u < 0.04 ? 0.01f : u < 0.05 ? 4.0f : 1.0f;
            for (int j = j0; j < j0 + seg && j < cols; j++)
                x[r * cols + j] = nrand() * scale * mag;
        }
    llmq_round_through(x, rows * cols, g_dt);
    return x;
}

static double rel_l2_d(const float *got, const double *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return NAN;
        double d = got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

static double limit(void) { return g_dt == LLMQ_F32 ? 1e-5 : g_dt == LLMQ_F16 ? 2e-3 : 1e-2; }

static void report(const char *what, const char *shape, int ok, const char *fmt, double v)
{
    printf("%s %s %s %s ", ok ? "ok" : "FAIL", what, llmq_dtype_name(g_dt), shape);
    printf(fmt, v);
    printf("\n");
    fflush(stdout);
    if (ok)
        n_pass++;
    else
        n_fail++;
}

static void report_error(const char *what, const char *shape)
{
    printf("FAIL %s %s %s error: %s\n", what, llmq_dtype_name(g_dt), shape, llmq_last_error());
    fflush(stdout);
    n_fail++;
}

#define TRY(what, call)                                                                                      \
    do {                                                                                                     \
        if ((call) != 0) {                                                                                   \
            report_error(what, shape);                                                                       \
            goto done;                                                                                       \
        }                                                                                                    \
    } while (0)

/* ---- device buffers ---- */

static int same_float(float a, float b) { return (isnan(a) && isnan(b)) || a == b; }

/* ---- one shape ---- */

struct shape {
    int batch, n, pos, n_heads, n_kv, hd;
    int misalign; /* GPU caches start 2 elements into their allocation (no 16-byte loads) */
};

/* The value stored at (sequence b, position p, column j): from the prefix
 * rows (p < pos) or the new rows. */
static float src_at(const struct shape *s, const float *pre, const float *neu, int b, int p, int j)
{
    const int kvdim = s->n_kv * s->hd;
    return p < s->pos ? pre[((size_t)b * s->pos + p) * kvdim + j] : neu[((size_t)b * s->n + p - s->pos) * kvdim + j];
}

/* Compare one GPU cache (and scales) with the CPU's. Returns 1 if it passes. */
static int compare_cache(const struct shape *s, int kv8, int cap, const void *dcache, const float *dscales,
                         const void *ccache, const float *cscales, const float *pre, const float *neu,
                         const char *which, const char *shape)
{
    const int kvdim = s->n_kv * s->hd;
    const size_t nel = (size_t)s->batch * cap * kvdim, nsc = (size_t)s->batch * cap * s->n_kv;
    char what[32];
    snprintf(what, sizeof what, "kv-store-%s", which);
    if (!kv8) {
        float *got = gt_host_from(gpu, dcache, nel, g_dt);
        if (!got) {
            report_error(what, shape);
            return 0;
        }
        size_t bad = 0;
        for (size_t i = 0; i < nel; i++)
            bad += !same_float(got[i], ((const float *)ccache)[i]);
        free(got);
        report(what, shape, bad == 0, "mismatches=%.0f", (double)bad);
        return bad == 0;
    }
    int8_t *codes = xmalloc(nel);
    float *sc = gt_host_from(gpu, dscales, nsc, LLMQ_F32);
    cudaError_t e = cudaMemcpy(codes, dcache, nel, cudaMemcpyDeviceToHost);
    if (!sc || e != cudaSuccess) {
        printf("FAIL %s %s %s download: %s\n", what, llmq_dtype_name(g_dt), shape,
               e != cudaSuccess ? cudaGetErrorString(e) : llmq_last_error());
        n_fail++;
        free(codes), free(sc);
        return 0;
    }
    size_t bad_scale = 0, ties = 0, bad = 0;
    for (size_t i = 0; i < nsc; i++)
        bad_scale += !same_float(sc[i], cscales[i]);
    const int8_t *cc = ccache;
    for (int b = 0; b < s->batch; b++)
        for (int p = 0; p < cap; p++)
            for (int j = 0; j < kvdim; j++) {
                const size_t i = ((size_t)b * cap + p) * kvdim + j;
                if (codes[i] == cc[i])
                    continue;
                if (p >= s->pos + s->n) { /* a poisoned position was written */
                    bad++;
                    continue;
                }
                /* A one-step difference where x/s is within rounding of a tie. */
                const float x = src_at(s, pre, neu, b, p, j), sx = cscales[((size_t)b * cap + p) * s->n_kv + j / s->hd];
                const double r = (double)x / sx, frac = fabs(r - floor(r) - 0.5);
                if (abs(codes[i] - cc[i]) == 1 && frac < 1e-6 * (fabs(r) + 1.0))
                    ties++;
                else
                    bad++;
            }
    free(codes), free(sc);
    const int ok = bad_scale == 0 && bad == 0 && ties <= 1 + nel / 10000;
    printf("%s %s %s %s scale-mismatches=%zu code-mismatches=%zu tie-mismatches=%zu\n", ok ? "ok" : "FAIL", what,
           llmq_dtype_name(g_dt), shape, bad_scale, bad, ties);
    fflush(stdout);
    if (ok)
        n_pass++;
    else
        n_fail++;
    return ok;
}

/* One cache entry of the CPU's caches in fp64. */
static double kv64(const void *c, const float *sc, int kv8, size_t slot, int n_kv, int hd, int h, int d)
{
    size_t i = slot * n_kv * hd + (size_t)h * hd + d;
    return kv8 ? (double)((const int8_t *)c)[i] * sc[slot * n_kv + h] : (double)((const float *)c)[i];
}

/* attention_kv in fp64 over the CPU backend's caches (the same values). */
static void attention_f64(double *out, const float *q, const void *kc, const float *ks, const void *vc,
                          const float *vs, const struct shape *s, int cap, int kv8)
{
    const int hd = s->hd, group = s->n_heads / s->n_kv, qdim = s->n_heads * hd;
    double *p = xmalloc((size_t)(s->pos + s->n) * sizeof *p);
    for (int b = 0; b < s->batch; b++)
        for (int i = 0; i < s->n; i++)
            for (int h = 0; h < s->n_heads; h++) {
                const float *qv = q + ((size_t)b * s->n + i) * qdim + (size_t)h * hd;
                double *o = out + ((size_t)b * s->n + i) * qdim + (size_t)h * hd, mx = -INFINITY, sum = 0.0;
                const int len = s->pos + i + 1, kh = h / group;
                for (int t = 0; t < len; t++) {
                    double dot = 0.0;
                    for (int d = 0; d < hd; d++)
                        dot += qv[d] * kv64(kc, ks, kv8, (size_t)b * cap + t, s->n_kv, hd, kh, d);
                    p[t] = dot / sqrt((double)hd);
                    mx = p[t] > mx ? p[t] : mx;
                }
                for (int t = 0; t < len; t++)
                    sum += (p[t] = exp(p[t] - mx));
                for (int d = 0; d < hd; d++) {
                    double acc = 0.0;
                    for (int t = 0; t < len; t++)
                        acc += p[t] * kv64(vc, vs, kv8, (size_t)b * cap + t, s->n_kv, hd, kh, d);
                    o[d] = acc / sum;
                }
            }
    free(p);
}

static void check(struct shape s, int kv8)
{
    char shape[160];
    snprintf(shape, sizeof shape, "%s batch=%d n=%d pos=%d heads=%d kv=%d hd=%d%s", kv8 ? "int8" : "dt", s.batch, s.n,
             s.pos, s.n_heads, s.n_kv, s.hd, s.misalign ? " misaligned" : "");
    const int L = s.pos + s.n, cap = L + 3; /* 3 positions past the end stay poisoned */
    const int kvdim = s.n_kv * s.hd, qdim = s.n_heads * s.hd;
    const size_t npre = (size_t)s.batch * s.pos * kvdim, nnew = (size_t)s.batch * s.n * kvdim;
    const size_t nel = (size_t)s.batch * cap * kvdim, nsc = (size_t)s.batch * cap * s.n_kv;
    const size_t nq = (size_t)s.batch * s.n * qdim;
    const size_t esz = kv8 ? 1 : llmq_dtype_size(g_dt), off = s.misalign ? 2 * esz : 0;

    float *kpre = rand_rows((size_t)s.batch * s.pos, kvdim, s.hd, 1.0f);
    float *vpre = rand_rows((size_t)s.batch * s.pos, kvdim, s.hd, 1.0f);
    float *knew = rand_rows((size_t)s.batch * s.n, kvdim, s.hd, 1.0f);
    float *vnew = rand_rows((size_t)s.batch * s.n, kvdim, s.hd, 1.0f);
    float *q = xmalloc(nq * sizeof *q);
    for (size_t i = 0; i < nq; i++)
        q[i] = nrand();
    llmq_round_through(q, nq, g_dt);
    float *ref = xmalloc(nq * sizeof *ref), *got = NULL, *again = NULL;

    /* CPU caches: float or int8 + scales, poisoned like the GPU's. */
    void *ck = xmalloc(nel * (kv8 ? 1 : sizeof(float))), *cv = xmalloc(nel * (kv8 ? 1 : sizeof(float)));
    float *cks = xmalloc(nsc * sizeof(float)), *cvs = xmalloc(nsc * sizeof(float));
    for (size_t i = 0; i < nel; i++) {
        if (kv8) {
            ((int8_t *)ck)[i] = ((int8_t *)cv)[i] = POISON_CODE;
        } else {
            ((float *)ck)[i] = ((float *)cv)[i] = NAN;
        }
    }
    for (size_t i = 0; i < nsc; i++)
        cks[i] = cvs[i] = NAN;

    void *dkraw = NULL, *dvraw = NULL, *dks = NULL, *dvs = NULL, *dq = NULL, *dout = NULL;
    void *dkpre = NULL, *dvpre = NULL, *dknew = NULL, *dvnew = NULL;
    int32_t *dpos = NULL;
    if (kv8) {
        dkraw = gpu->alloc(gpu, nel + off);
        dvraw = gpu->alloc(gpu, nel + off);
        TRY("alloc", dkraw && dvraw ? 0 : -1);
        cuda_ok(cudaMemset(dkraw, POISON_CODE, nel + off), "memset");
        cuda_ok(cudaMemset(dvraw, POISON_CODE, nel + off), "memset");
        dks = gt_dev_nan(gpu, nsc, LLMQ_F32);
        dvs = gt_dev_nan(gpu, nsc, LLMQ_F32);
        TRY("alloc", dks && dvs ? 0 : -1);
    } else {
        dkraw = gt_dev_nan(gpu, nel + 2, g_dt);
        dvraw = gt_dev_nan(gpu, nel + 2, g_dt);
        TRY("alloc", dkraw && dvraw ? 0 : -1);
    }
    void *dk = (char *)dkraw + off, *dv = (char *)dvraw + off;
    dkpre = gt_dev_from(gpu, kpre, npre, g_dt), dvpre = gt_dev_from(gpu, vpre, npre, g_dt);
    dknew = gt_dev_from(gpu, knew, nnew, g_dt), dvnew = gt_dev_from(gpu, vnew, nnew, g_dt);
    dq = gt_dev_from(gpu, q, nq, g_dt);
    dout = gt_dev_nan(gpu, nq, g_dt);
    TRY("alloc", dkpre && dvpre && dknew && dvnew && dq && dout ? 0 : -1);

    /* The prefix in one call, then the new rows at pos. */
    if (s.pos > 0) {
        TRY("kv-store", cpu->kv_store(cpu, ck, cks, kpre, s.batch, s.pos, 0, cap, s.n_kv, s.hd, kv8, NULL));
        TRY("kv-store", cpu->kv_store(cpu, cv, cvs, vpre, s.batch, s.pos, 0, cap, s.n_kv, s.hd, kv8, NULL));
        TRY("kv-store", gpu->kv_store(gpu, dk, dks, dkpre, s.batch, s.pos, 0, cap, s.n_kv, s.hd, kv8, NULL));
        TRY("kv-store", gpu->kv_store(gpu, dv, dvs, dvpre, s.batch, s.pos, 0, cap, s.n_kv, s.hd, kv8, NULL));
    }
    TRY("kv-store", cpu->kv_store(cpu, ck, cks, knew, s.batch, s.n, s.pos, cap, s.n_kv, s.hd, kv8, NULL));
    TRY("kv-store", cpu->kv_store(cpu, cv, cvs, vnew, s.batch, s.n, s.pos, cap, s.n_kv, s.hd, kv8, NULL));
    TRY("kv-store", gpu->kv_store(gpu, dk, dks, dknew, s.batch, s.n, s.pos, cap, s.n_kv, s.hd, kv8, NULL));
    TRY("kv-store", gpu->kv_store(gpu, dv, dvs, dvnew, s.batch, s.n, s.pos, cap, s.n_kv, s.hd, kv8, NULL));
    compare_cache(&s, kv8, cap, dk, dks, ck, cks, kpre, knew, "k", shape);
    compare_cache(&s, kv8, cap, dv, dvs, cv, cvs, vpre, vnew, "v", shape);

    TRY("attention", cpu->attention_kv(cpu, ref, q, ck, cks, cv, cvs, s.batch, s.n, s.pos, cap, s.n_heads, s.n_kv,
                                       s.hd, kv8, NULL));
    TRY("attention", gpu->attention_kv(gpu, dout, dq, dk, dks, dv, dvs, s.batch, s.n, s.pos, cap, s.n_heads, s.n_kv,
                                       s.hd, kv8, NULL));
    got = gt_host_from(gpu, dout, nq, g_dt);
    TRY("attention", got ? 0 : -1);
    double err = gt_rel_l2(got, ref, nq);
    if (g_dt == LLMQ_F32) {
        double *ref64 = xmalloc(nq * sizeof *ref64);
        attention_f64(ref64, q, ck, cks, cv, cvs, &s, cap, kv8);
        const double e64 = rel_l2_d(got, ref64, nq), cpu64 = rel_l2_d(ref, ref64, nq);
        free(ref64);
        const int ok = e64 < limit() && err < limit() + cpu64;
        printf("%s attention %s %s err=%.3g err-vs-fp64=%.3g cpu-vs-fp64=%.3g\n", ok ? "ok" : "FAIL",
               llmq_dtype_name(g_dt), shape, err, e64, cpu64);
        fflush(stdout);
        if (ok)
            n_pass++;
        else
            n_fail++;
    } else {
        report("attention", shape, err < limit(), "err=%.3g", err);
    }

    /* Again, with the position read from device memory (the path of the
     * decode graphs): the new rows stored once more must leave the caches
     * as they were, and the result must repeat bit for bit (a result that
     * moves between runs is a race). */
    dpos = gpu->alloc(gpu, sizeof(int32_t));
    TRY("pos_dev", dpos ? 0 : -1);
    TRY("pos_dev", gpu->upload_bytes(gpu, dpos, &s.pos, sizeof s.pos));
    TRY("kv-store pos_dev", gpu->kv_store(gpu, dk, dks, dknew, s.batch, s.n, s.pos, cap, s.n_kv, s.hd, kv8, dpos));
    TRY("kv-store pos_dev", gpu->kv_store(gpu, dv, dvs, dvnew, s.batch, s.n, s.pos, cap, s.n_kv, s.hd, kv8, dpos));
    compare_cache(&s, kv8, cap, dk, dks, ck, cks, kpre, knew, "k (pos_dev)", shape);
    compare_cache(&s, kv8, cap, dv, dvs, cv, cvs, vpre, vnew, "v (pos_dev)", shape);
    gt_dfree(gpu, dout);
    dout = gt_dev_nan(gpu, nq, g_dt);
    TRY("attention-repeat", dout ? 0 : -1);
    TRY("attention-repeat", gpu->attention_kv(gpu, dout, dq, dk, dks, dv, dvs, s.batch, s.n, s.pos, cap, s.n_heads,
                                              s.n_kv, s.hd, kv8, dpos));
    again = gt_host_from(gpu, dout, nq, g_dt);
    TRY("attention-repeat", again ? 0 : -1);
    err = gt_rel_l2(again, got, nq);
    report("attention-repeat", shape, err == 0.0, "diff=%.3g", err);
done:
    free(kpre), free(vpre), free(knew), free(vnew), free(q), free(ref), free(got), free(again);
    free(ck), free(cv), free(cks), free(cvs);
    gt_dfree(gpu, dkraw), gt_dfree(gpu, dvraw), gt_dfree(gpu, dks), gt_dfree(gpu, dvs), gt_dfree(gpu, dq), gt_dfree(gpu, dout);
    gt_dfree(gpu, dkpre), gt_dfree(gpu, dvpre), gt_dfree(gpu, dknew), gt_dfree(gpu, dvnew), gt_dfree(gpu, dpos);
}

/* ---- argument errors ---- */

static void expect_fail(const char *what, int rc, const char *op)
{
    const char *msg = llmq_last_error();
    int ok = rc == -1 && msg && strstr(msg, op) != NULL;
    printf("%s error %s %s: %s\n", ok ? "ok" : "FAIL", llmq_dtype_name(g_dt), what, rc == -1 ? msg : "(accepted)");
    fflush(stdout);
    if (ok)
        n_pass++;
    else
        n_fail++;
}

static void check_errors(void)
{
    /* Small real buffers, so that a launch that wrongly goes ahead cannot
     * fault; nothing may be launched anyway. */
    void *buf = gpu->alloc(gpu, 1 << 20);
    float *sc = gpu->alloc(gpu, 1 << 16);
    if (!buf || !sc) {
        report_error("errors", "alloc");
        gt_dfree(gpu, buf), gt_dfree(gpu, sc);
        return;
    }
    expect_fail("kv_store pos+n>cap", gpu->kv_store(gpu, buf, NULL, buf, 1, 2, 7, 8, 2, 8, 0, NULL), "kv_store");
    expect_fail("kv_store pos<0", gpu->kv_store(gpu, buf, NULL, buf, 1, 1, -1, 8, 2, 8, 0, NULL), "kv_store");
    expect_fail("kv_store odd head_dim", gpu->kv_store(gpu, buf, sc, buf, 1, 1, 0, 8, 2, 7, 1, NULL), "kv_store");
    expect_fail("kv_store head_dim 258", gpu->kv_store(gpu, buf, NULL, buf, 1, 1, 0, 8, 1, 258, 0, NULL), "kv_store");
    expect_fail("kv_store int8 without scales", gpu->kv_store(gpu, buf, NULL, buf, 1, 1, 0, 8, 2, 8, 1, NULL), "kv_store");
    expect_fail("attention_kv pos+n>cap",
                gpu->attention_kv(gpu, buf, buf, buf, NULL, buf, NULL, 1, 3, 6, 8, 2, 2, 8, 0, NULL), "attention_kv");
    expect_fail("attention_kv odd head_dim",
                gpu->attention_kv(gpu, buf, buf, buf, NULL, buf, NULL, 1, 1, 0, 8, 2, 2, 9, 0, NULL), "attention_kv");
    expect_fail("attention_kv head_dim 512",
                gpu->attention_kv(gpu, buf, buf, buf, NULL, buf, NULL, 1, 1, 0, 8, 1, 1, 512, 0, NULL), "attention_kv");
    expect_fail("attention_kv heads % kv",
                gpu->attention_kv(gpu, buf, buf, buf, NULL, buf, NULL, 1, 1, 0, 8, 6, 4, 8, 0, NULL), "attention_kv");
    expect_fail("attention_kv int8 without scales",
                gpu->attention_kv(gpu, buf, buf, buf, NULL, buf, NULL, 1, 1, 0, 8, 2, 2, 8, 1, NULL), "attention_kv");
    /* Nothing was enqueued that failed. */
    int rc = gpu->sync(gpu);
    printf("%s error %s stream clean after rejected calls\n", rc == 0 ? "ok" : "FAIL", llmq_dtype_name(g_dt));
    if (rc == 0)
        n_pass++;
    else
        n_fail++;
    gt_dfree(gpu, buf), gt_dfree(gpu, sc);
}

static const struct shape shapes[] = {
    /* decode */
    {1, 1, 0, 4, 4, 8, 0},       /* one key */
    {3, 1, 1, 4, 2, 64, 0},      /* GQA 2 */
    {3, 1, 100, 8, 2, 128, 0},   /* GQA 4 */
    {16, 1, 100, 4, 4, 128, 0},  /* batch 16 */
    {1, 1, 5000, 8, 8, 128, 0},  /* batch 1: keys split over a cluster of 8 */
    {1, 1, 1500, 4, 4, 64, 0},   /* ... of 4 (on a 132-SM GPU) */
    {3, 1, 5000, 4, 2, 256, 0},
    {2, 1, 100, 6, 3, 96, 0},
    {16, 1, 5000, 8, 4, 64, 0},
    {2, 1, 1000, 16, 2, 128, 0}, /* GQA 8: a full row tile */
    {2, 1, 3000, 4, 4, 256, 0},  /* int8: the tensor-core kernel at head_dim 256 */
    {5, 1, 777, 3, 3, 128, 0},   /* ... a partial last step */
    {2, 1, 700, 2, 2, 128, 1},   /* ... misaligned: the fp32 kernel */
    /* chunks of n > 1 queries */
    {1, 3, 0, 4, 4, 8, 0},
    {3, 3, 100, 8, 4, 128, 0},
    {2, 3, 5000, 4, 1, 96, 0},   /* 12 rows: two tiles */
    {2, 17, 1, 4, 1, 64, 0},
    {1, 17, 5000, 2, 1, 96, 0},
    {3, 17, 0, 8, 8, 8, 0},
    {16, 17, 100, 4, 2, 128, 0},
    {2, 512, 0, 8, 4, 8, 0},     /* a stories260K prefill chunk */
    {1, 512, 100, 8, 4, 8, 0},
    /* head sizes without 16-byte rows, misaligned caches */
    {2, 5, 37, 4, 2, 6, 0},
    {1, 2, 300, 2, 1, 2, 0},
    {2, 3, 700, 4, 4, 40, 0},
    {1, 1, 1000, 2, 2, 250, 0},
    {2, 3, 600, 4, 2, 128, 1},
    {3, 1, 1000, 2, 1, 64, 1},
    /* long contexts */
    {1, 1, 20000, 4, 2, 128, 0},
    {1, 3, 24999, 8, 2, 128, 0},
    {1, 1, 32767, 2, 2, 64, 0},
    {1, 1, 32767, 2, 2, 128, 0},
};

int main(void)
{
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 77; /* meson's "skipped" */
    }
    if (llmq_backend_cpu(&cpu) != 0) {
        llmq_print_error(GT_PROG);
        return 1;
    }
    static const llmq_dtype dts[] = {LLMQ_F32, LLMQ_F16, LLMQ_BF16};
    for (int i = 0; i < 3; i++) {
        g_dt = dts[i];
        if (llmq_backend_cuda(&gpu, 0, g_dt) != 0) {
            report_error("backend", "create");
            continue;
        }
        for (int kv8 = 0; kv8 <= 1; kv8++)
            for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
                check(shapes[k], kv8);
        check_errors();
        gpu->destroy(gpu);
        gpu = NULL;
    }
    cpu->destroy(cpu);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
