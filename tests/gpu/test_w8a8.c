/* kernels/w8a8.cu against the C reference (quant/w8a8_ref.h).
 *
 * Every kernel runs on fresh random inputs (never zeros; activation rows
 * with outlier channels, and one all-zero row where rows > 2 for the 1e-5
 * clamp) at awkward shapes: rows 1, 3, 17, 512 and widths 64, 172, 4096,
 * 11008, in F16, BF16 and F32. Outputs are poisoned first (int8 codes with
 * -128, which the quantizer never writes; int32 with 0x80808080, beyond any
 * product of these sizes; floats with NaN) and every element is checked.
 *
 *   quantizers   codes equal to the reference's except for at most one step
 *                in rare elements (the GPU sums mean(x^2) and picks the
 *                absmax in another order), the scales within one ulp of dt
 *                at the row max; the dequantized rows by relative L2 error.
 *                The residual written by the fused add must equal x + delta
 *                rounded to dt exactly.
 *   int8 GEMM    the int32 product exactly (rows sampled where the host
 *                reference would take too long: all rows up to 4e9 MACs,
 *                else 32 rows including the first and last; the poison check
 *                covers every row); the rescaled output of each available
 *                epilogue by relative L2 error against the reference's.
 *
 * Prints "ok|FAIL what dt shape numbers" per check, then "N passed, N
 * failed"; exits 1 on any failure, 77 (skipped) where no GPU is usable. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/w8a8.h"
#include "quant/w8a8_ref.h"
#include "src/backend.h"
#include "src/dtype.h"
#include "src/error.h"
#include "src/parallel.h"

#define GT_PROG "test_w8a8"
#define GT_SEED 0x9E3779B97F4A7C15ull
#include "tests/gpu/gpu_test.h"

static int n_pass, n_fail;

/* ---- random numbers (xorshift64*) ---- */


static float nrand(void)
{
    double u1 = urand(), u2 = urand();
    return (float)(sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2));
}

/* Activations [rows, cols]: normal times scale, every 97th channel an
 * outlier (x30), row 1 all zero when rows > 2; rounded through dt. */
static float *act(int rows, int cols, float scale, llmq_dtype dt, int zero_row)
{
    size_t n = (size_t)rows * cols;
    float *x = xmalloc(n * sizeof *x);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++)
            x[(size_t)r * cols + j] = (zero_row && rows > 2 && r == 1) ? 0.0f
                                      : nrand() * scale * (j % 97 == 5 ? 30.0f : 1.0f);
    llmq_round_through(x, n, dt);
    return x;
}

/* ---- device buffers ---- */

static void *dalloc(size_t nbytes, int poison_byte)
{
    void *d = NULL;
    if (cudaMalloc(&d, nbytes ? nbytes : 1) != cudaSuccess)
        return NULL;
    if (cudaMemset(d, poison_byte, nbytes) != cudaSuccess) {
        cudaFree(d);
        return NULL;
    }
    return d;
}

/* Floats to a new device buffer of type dt. */
static void *dev_from(const float *h, size_t n, llmq_dtype dt)
{
    size_t nb = n * llmq_dtype_size(dt);
    void *tmp = xmalloc(nb), *d = NULL;
    if (llmq_convert(tmp, dt, h, LLMQ_F32, n) == 0 && cudaMalloc(&d, nb ? nb : 1) == cudaSuccess &&
        cudaMemcpy(d, tmp, nb, cudaMemcpyHostToDevice) != cudaSuccess) {
        cudaFree(d);
        d = NULL;
    }
    free(tmp);
    return d;
}

static void *dev_bytes(const void *h, size_t nb)
{
    void *d = NULL;
    if (cudaMalloc(&d, nb ? nb : 1) != cudaSuccess)
        return NULL;
    if (cudaMemcpy(d, h, nb, cudaMemcpyHostToDevice) != cudaSuccess) {
        cudaFree(d);
        return NULL;
    }
    return d;
}

/* Device buffer of dt -> host floats (NULL on error). */
static float *host_f(const void *d, size_t n, llmq_dtype dt)
{
    size_t nb = n * llmq_dtype_size(dt);
    void *tmp = xmalloc(nb);
    float *h = xmalloc(n * sizeof *h);
    if (cudaDeviceSynchronize() != cudaSuccess || cudaMemcpy(tmp, d, nb, cudaMemcpyDeviceToHost) != cudaSuccess ||
        llmq_convert(h, LLMQ_F32, tmp, dt, n) != 0) {
        free(h);
        h = NULL;
    }
    free(tmp);
    return h;
}

static void *host_bytes(const void *d, size_t nb)
{
    void *h = xmalloc(nb);
    if (cudaDeviceSynchronize() != cudaSuccess || cudaMemcpy(h, d, nb, cudaMemcpyDeviceToHost) != cudaSuccess) {
        free(h);
        return NULL;
    }
    return h;
}

/* ---- reporting ---- */

static void report(int ok, const char *what, llmq_dtype dt, const char *shape, const char *numbers)
{
    printf("%s %s %s %s %s\n", ok ? "ok" : "FAIL", what, llmq_dtype_name(dt), shape, numbers);
    fflush(stdout);
    if (ok)
        n_pass++;
    else
        n_fail++;
}

static void report_error(const char *what, llmq_dtype dt, const char *shape)
{
    const char *e = llmq_last_error();
    cudaError_t ce = cudaGetLastError();
    printf("FAIL %s %s %s error: %s%s%s\n", what, llmq_dtype_name(dt), shape, e,
           ce != cudaSuccess ? " / CUDA: " : "", ce != cudaSuccess ? cudaGetErrorString(ce) : "");
    fflush(stdout);
    n_fail++;
}

#define TRY(what, dt, shape, cond)                                                                                \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            report_error(what, dt, shape);                                                                        \
            goto done;                                                                                            \
        }                                                                                                         \
    } while (0)

/* Allowed relative difference of a row scale: one ulp of dt at 1.0 for
 * F16/BF16; four fp32 ulps for F32, where the max itself may differ by an
 * ulp or two (1/rms in the last bit, then the product) before the division
 * rounds again (2.7e-7 seen on an H200). */
static double dt_eps(llmq_dtype dt)
{
    return dt == LLMQ_F16 ? 1.0 / 1024 : dt == LLMQ_BF16 ? 1.0 / 128 : 4.8e-7;
}

/* Codes and scales of a quantizer against the reference. A row whose
 * absmax element rounded differently gets a scale off by an ulp of dt and
 * may then shift codes by one step. In F16/BF16 such rows must be rare
 * (<= 1% + 1: the rounding to dt absorbs the GPU's other summation order);
 * in F32 nothing absorbs it (rmsnorm's 1/rms differs in the last bit in
 * 10-20% of rows, seen on an H200), so there only the scale's size of
 * difference and the dequantized error bound them. In rows with equal
 * scales at most 0.1% of the codes may differ. */
static void compare_q(const char *what, llmq_dtype dt, const char *shape, const int8_t *qg, const float *sg,
                      const int8_t *qr, const float *sr, int rows, int cols)
{
    size_t n = (size_t)rows * cols, mism = 0, unwritten = 0;
    int maxdq = 0, rows_off = 0, bad_scale = 0;
    double serr = 0.0, num = 0.0, den = 0.0;
    for (int r = 0; r < rows; r++) {
        if (!isfinite(sg[r]) || sg[r] <= 0.0f) {
            bad_scale = 1;
            continue;
        }
        double e = fabs((double)sg[r] - sr[r]) / sr[r];
        serr = e > serr ? e : serr;
        rows_off += sg[r] != sr[r];
        for (int j = 0; j < cols; j++) {
            size_t i = (size_t)r * cols + j;
            if (qg[i] == -128) {
                unwritten++;
                continue;
            }
            int d = abs((int)qg[i] - (int)qr[i]);
            maxdq = d > maxdq ? d : maxdq;
            mism += d && sg[r] == sr[r];
            double a = (double)qg[i] * sg[r], b = (double)qr[i] * sr[r];
            num += (a - b) * (a - b);
            den += b * b;
        }
    }
    double err = den > 0 ? sqrt(num / den) : sqrt(num);
    int ok = !bad_scale && !unwritten && maxdq <= 1 && (double)mism <= 1e-3 * (double)n + 2 &&
             (dt == LLMQ_F32 || rows_off <= rows / 100 + 1) && serr <= 1.01 * dt_eps(dt) && err <= 2e-3;
    char numbers[192];
    snprintf(numbers, sizeof numbers, "mismatch=%zu/%zu maxdq=%d rows_other_scale=%d scale_rel=%.2g deq_err=%.2g%s",
             mism, n, maxdq, rows_off, serr, err, bad_scale || unwritten ? " UNWRITTEN" : "");
    report(ok, what, dt, shape, numbers);
}

/* ---- quantizing producers ---- */

static void check_quant(llmq_dtype dt, int rows, int cols)
{
    char shape[64];
    snprintf(shape, sizeof shape, "rows=%d cols=%d", rows, cols);
    size_t n = (size_t)rows * cols;
    float *x = act(rows, cols, 1.0f, dt, 1), *sr = xmalloc(rows * sizeof(float)), *sg = NULL;
    int8_t *qr = xmalloc(n), *qg = NULL;
    void *dx = dev_from(x, n, dt), *dq = dalloc(n, 0x80), *ds = dalloc(rows * sizeof(float), 0xFF);
    TRY("quant_per_token", dt, shape, dx && dq && ds);
    quant_per_token_ref(x, rows, cols, qr, sr);
    TRY("quant_per_token", dt, shape, llmq_quant_per_token(NULL, dt, dq, ds, dx, rows, cols) == 0);
    qg = host_bytes(dq, n);
    sg = host_f(ds, rows, LLMQ_F32);
    TRY("quant_per_token", dt, shape, qg && sg);
    compare_q("quant_per_token", dt, shape, qg, sg, qr, sr, rows, cols);
done:
    free(x), free(sr), free(sg), free(qr), free(qg);
    cudaFree(dx), cudaFree(dq), cudaFree(ds);
}

static void check_rmsnorm_quant(llmq_dtype dt, int rows, int dim, int add)
{
    char shape[64];
    snprintf(shape, sizeof shape, "rows=%d dim=%d%s", rows, dim, add ? " +residual" : "");
    size_t n = (size_t)rows * dim;
    float *x = act(rows, dim, 1.0f, dt, !add), *delta = act(rows, dim, 0.5f, dt, 0);
    float *w = xmalloc(dim * sizeof(float)), *sr = xmalloc(rows * sizeof(float)), *sg = NULL, *xg = NULL;
    int8_t *qr = xmalloc(n), *qg = NULL;
    for (int i = 0; i < dim; i++)
        w[i] = 1.0f + 0.2f * nrand();
    llmq_round_through(w, dim, dt);
    void *dx = dev_from(x, n, dt), *dd = dev_from(delta, n, dt), *dw = dev_from(w, dim, dt);
    void *dq = dalloc(n, 0x80), *ds = dalloc(rows * sizeof(float), 0xFF);
    TRY("rmsnorm_quant", dt, shape, dx && dd && dw && dq && ds);
    rmsnorm_quant_ref(dt, x, add ? delta : NULL, w, rows, dim, 1e-5f, qr, sr); /* x becomes the residual */
    TRY("rmsnorm_quant", dt, shape, llmq_rmsnorm_quant(NULL, dt, dq, ds, dx, add ? dd : NULL, dw, rows, dim, 1e-5f) == 0);
    qg = host_bytes(dq, n);
    sg = host_f(ds, rows, LLMQ_F32);
    xg = host_f(dx, n, dt);
    TRY("rmsnorm_quant", dt, shape, qg && sg && xg);
    compare_q("rmsnorm_quant", dt, shape, qg, sg, qr, sr, rows, dim);
    size_t xdiff = 0;
    for (size_t i = 0; i < n; i++)
        xdiff += !(xg[i] == x[i]);
    char numbers[64];
    snprintf(numbers, sizeof numbers, "residual differs in %zu/%zu", xdiff, n);
    report(xdiff == 0, "rmsnorm_quant.residual", dt, shape, numbers);
done:
    free(x), free(delta), free(w), free(sr), free(sg), free(xg), free(qr), free(qg);
    cudaFree(dx), cudaFree(dd), cudaFree(dw), cudaFree(dq), cudaFree(ds);
}

/* fused: gate and up are the halves of one [rows, 2*cols] buffer. */
static void check_silu_quant(llmq_dtype dt, int rows, int cols, int fused)
{
    char shape[64];
    snprintf(shape, sizeof shape, "rows=%d cols=%d%s", rows, cols, fused ? " gate_up" : "");
    size_t n = (size_t)rows * cols;
    const int ld = fused ? 2 * cols : cols;
    float *g = act(rows, ld, 2.0f, dt, 1), *u = act(rows, ld, 1.0f, dt, 0);
    const float *up = fused ? g + cols : u;
    float *sr = xmalloc(rows * sizeof(float)), *sg = NULL;
    int8_t *qr = xmalloc(n), *qg = NULL;
    void *dg = dev_from(g, (size_t)rows * ld, dt), *du = dev_from(u, (size_t)rows * ld, dt);
    void *dq = dalloc(n, 0x80), *ds = dalloc(rows * sizeof(float), 0xFF);
    TRY("silu_mul_quant", dt, shape, dg && du && dq && ds);
    silu_mul_quant_ref(dt, g, up, ld, rows, cols, qr, sr);
    const void *dup = fused ? (const char *)dg + (size_t)cols * llmq_dtype_size(dt) : du;
    TRY("silu_mul_quant", dt, shape, llmq_silu_mul_quant(NULL, dt, dq, ds, dg, dup, ld, rows, cols) == 0);
    qg = host_bytes(dq, n);
    sg = host_f(ds, rows, LLMQ_F32);
    TRY("silu_mul_quant", dt, shape, qg && sg);
    compare_q("silu_mul_quant", dt, shape, qg, sg, qr, sr, rows, cols);
done:
    free(g), free(u), free(sr), free(sg), free(qr), free(qg);
    cudaFree(dg), cudaFree(du), cudaFree(dq), cudaFree(ds);
}

/* ---- the producers fed by int32 products (prefill's deferred rescale) ----
 *
 * llmq_rmsnorm_quant_acc / llmq_silu_mul_quant_acc against what they stand
 * for, on the GPU: llmq_w8a8_rescale into dt, then the dt producer. Both
 * round the same floats the same way, so codes, scales and the residual
 * must agree bit for bit. The _acc producers get their token scales in
 * the array they write their new scales to, as the runner passes them. */

static void *dev_i32_acc(int rows, int cols)
{
    int32_t *h = xmalloc((size_t)rows * cols * sizeof *h);
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        h[i] = (int32_t)(urand() * 400000.0) - 200000;
    void *d = dev_bytes(h, (size_t)rows * cols * sizeof *h);
    free(h);
    return d;
}

static void *dev_scales(int n, float s)
{
    float *h = xmalloc(n * sizeof *h);
    for (int i = 0; i < n; i++)
        h[i] = (float)(0.5 + urand()) * s;
    void *d = dev_bytes(h, n * sizeof *h);
    free(h);
    return d;
}

static int same_bytes(const void *da, const void *db, size_t nb)
{
    void *a = host_bytes(da, nb), *b = host_bytes(db, nb);
    int same = a && b && memcmp(a, b, nb) == 0;
    free(a), free(b);
    return same;
}

static void check_acc_producers(llmq_dtype dt, int rows, int cols)
{
    char shape[64];
    snprintf(shape, sizeof shape, "rows=%d cols=%d", rows, cols);
    const size_t n = (size_t)rows * cols, es = llmq_dtype_size(dt);
    float *x = act(rows, cols, 1.0f, dt, 0), *w = xmalloc(cols * sizeof(float));
    for (int i = 0; i < cols; i++)
        w[i] = 1.0f + 0.2f * nrand();
    llmq_round_through(w, cols, dt);
    void *acc = dev_i32_acc(rows, cols), *acc2 = dev_i32_acc(rows, cols);
    void *tok = dev_scales(rows, 5e-3f), *ch = dev_scales(cols, 1e-3f), *ch2 = dev_scales(cols, 2e-3f);
    void *tok_a = dalloc(rows * sizeof(float), 0), *tok_b = dalloc(rows * sizeof(float), 0);
    void *dx1 = dev_from(x, n, dt), *dx2 = dev_from(x, n, dt), *dw = dev_from(w, cols, dt);
    void *dy = dalloc(n * es, 0xFF), *dy2 = dalloc(n * es, 0xFF), *q1 = dalloc(n, 0x80), *q2 = dalloc(n, 0x80);
    void *s1 = dalloc(rows * sizeof(float), 0xFF);
    TRY("producers_acc", dt, shape, acc && acc2 && tok && ch && ch2 && tok_a && tok_b && dx1 && dx2 && dw && dy &&
                                        dy2 && q1 && q2 && s1);

    /* residual add + RMSNorm: o_proj's int32 product as the delta */
    TRY("rmsnorm_quant_acc", dt, shape, cudaMemcpy(tok_a, tok, rows * 4, cudaMemcpyDeviceToDevice) == cudaSuccess);
    TRY("rmsnorm_quant_acc", dt, shape,
        llmq_w8a8_rescale(NULL, dt, dy, acc, tok, ch, rows, cols) == 0 &&
            llmq_rmsnorm_quant(NULL, dt, q1, s1, dx1, dy, dw, rows, cols, 1e-5f) == 0);
    TRY("rmsnorm_quant_acc", dt, shape,
        llmq_rmsnorm_quant_acc(NULL, dt, q2, tok_a, dx2, acc, tok_a, ch, dw, rows, cols, 1e-5f) == 0);
    int same = same_bytes(q1, q2, n), same_s = same_bytes(s1, tok_a, rows * 4), same_x = same_bytes(dx1, dx2, n * es);
    char numbers[96];
    snprintf(numbers, sizeof numbers, "codes %s, scales %s, residual %s", same ? "equal" : "DIFFER",
             same_s ? "equal" : "DIFFER", same_x ? "equal" : "DIFFER");
    report(same && same_s && same_x, "rmsnorm_quant_acc", dt, shape, numbers);

    /* SiLU(gate) * up from the two products of one x */
    TRY("silu_mul_quant_acc", dt, shape, cudaMemcpy(tok_b, tok, rows * 4, cudaMemcpyDeviceToDevice) == cudaSuccess);
    TRY("silu_mul_quant_acc", dt, shape,
        llmq_w8a8_rescale(NULL, dt, dy, acc, tok, ch, rows, cols) == 0 &&
            llmq_w8a8_rescale(NULL, dt, dy2, acc2, tok, ch2, rows, cols) == 0 &&
            llmq_silu_mul_quant(NULL, dt, q1, s1, dy, dy2, cols, rows, cols) == 0);
    TRY("silu_mul_quant_acc", dt, shape,
        llmq_silu_mul_quant_acc(NULL, dt, q2, tok_b, acc, ch, acc2, ch2, tok_b, rows, cols) == 0);
    same = same_bytes(q1, q2, n), same_s = same_bytes(s1, tok_b, rows * 4);
    snprintf(numbers, sizeof numbers, "codes %s, scales %s", same ? "equal" : "DIFFER", same_s ? "equal" : "DIFFER");
    report(same && same_s, "silu_mul_quant_acc", dt, shape, numbers);
done:
    free(x), free(w);
    cudaFree(acc), cudaFree(acc2), cudaFree(tok), cudaFree(ch), cudaFree(ch2), cudaFree(tok_a), cudaFree(tok_b);
    cudaFree(dx1), cudaFree(dx2), cudaFree(dw), cudaFree(dy), cudaFree(dy2), cudaFree(q1), cudaFree(q2), cudaFree(s1);
}

/* ---- int8 GEMM ---- */

static llmq_w8a8_ctx *ctx;

static void rand_i8(int8_t *q, size_t n)
{
    for (size_t i = 0; i < n; i++)
        q[i] = (int8_t)((int)(urand() * 255.0) - 127);
}

/* Rows the host reference computes: all of them up to 4e9 MACs, else 32
 * (first, last, and random ones). */
static int pick_rows(int M, int N, int K, int *rows)
{
    if ((double)M * N * K <= 4e9) {
        for (int m = 0; m < M; m++)
            rows[m] = m;
        return M;
    }
    int n = 0;
    rows[n++] = 0;
    rows[n++] = M - 1;
    while (n < 32)
        rows[n++] = 1 + (int)(urand() * (M - 2));
    return n;
}

/* The reference on the sampled rows, spread over the host's cores (the
 * scalar int8 dot product runs at about 1 GMAC/s per core). */
struct ref_job {
    const int8_t *x, *w;
    const float *st, *sc;
    const int *rows;
    int N, K;
    int32_t *acc;
    float *y;
    llmq_dtype dt;
};

static void ref_worker(void *p, int s0, int s1)
{
    const struct ref_job *j = p;
    for (int s = s0; s < s1; s++)
        int8_gemm_ref(j->x + (size_t)j->rows[s] * j->K, j->st + j->rows[s], j->w, j->sc, 1, j->N, j->K,
                      j->acc ? j->acc + (size_t)s * j->N : NULL, j->y ? j->y + (size_t)s * j->N : NULL, j->dt);
}

static void ref_rows(const int8_t *x, const float *st, const int8_t *w, const float *sc, const int *rows, int nrows,
                     int N, int K, int32_t *acc, float *y, llmq_dtype dt)
{
    struct ref_job job = {x, w, st, sc, rows, N, K, acc, y, dt};
    llmq_parallel_rows(nrows, llmq_cpu_count(), ref_worker, &job);
}

/* y of the epilogue `epi` (dt) against the reference's y (yref, the
 * sampled rows only). */
static void check_epilogue(int epi, llmq_dtype dt, const char *shape, int M, int N, int K, const void *dx,
                           const void *dst, const void *dw, const void *dsc, const int *rows, int nrows,
                           const float *yref)
{
    const char *what = epi == LLMQ_W8A8_EPI_FUSED  ? "w8a8_gemm.fused"
                       : epi == LLMQ_W8A8_EPI_GEMV ? "w8a8_gemm.gemv"
                                                   : "w8a8_gemm.rescale";
    size_t ny = (size_t)M * N;
    void *dy = dalloc(ny * llmq_dtype_size(dt), 0xFF);
    float *y = NULL;
    TRY(what, dt, shape, dy);
    TRY(what, dt, shape, llmq_w8a8_set_epilogue(ctx, epi) == 0);
    if (llmq_w8a8_gemm(ctx, dt, dy, dx, dst, dw, dsc, M, N, K) != 0) {
        if (epi == LLMQ_W8A8_EPI_FUSED && strstr(llmq_last_error(), "no algorithm")) {
            /* cuBLASLt takes the fused form for some types or shapes only:
             * AUTO falls back to the rescale path there. */
            printf("note %s %s %s: %s\n", what, llmq_dtype_name(dt), shape, llmq_last_error());
            goto done;
        }
        report_error(what, dt, shape);
        goto done;
    }
    y = host_f(dy, ny, dt);
    TRY(what, dt, shape, y);
    size_t nonfinite = 0;
    for (size_t i = 0; i < ny; i++)
        nonfinite += !isfinite(y[i]);
    double num = 0.0, den = 0.0;
    size_t exact = 0, cnt = 0;
    for (int s = 0; s < nrows; s++)
        for (int n = 0; n < N; n++) {
            float got = y[(size_t)rows[s] * N + n], ref = yref[(size_t)s * N + n];
            double d = (double)got - ref;
            num += d * d;
            den += (double)ref * ref;
            exact += got == ref;
            cnt++;
        }
    double err = den > 0 ? sqrt(num / den) : sqrt(num);
    double lim = dt == LLMQ_F16 ? 1e-3 : dt == LLMQ_BF16 ? 8e-3 : 1e-6;
    char numbers[160];
    snprintf(numbers, sizeof numbers, "err=%.3g bit-exact=%zu/%zu nonfinite=%zu (%s)", err, exact, cnt, nonfinite,
             llmq_w8a8_last_epilogue(ctx));
    /* The GEMV sums in int32 and rescales with the reference's formula:
     * every element bit for bit. */
    report(nonfinite == 0 && err <= lim && (epi != LLMQ_W8A8_EPI_GEMV || exact == cnt), what, dt, shape, numbers);
done:
    free(y);
    cudaFree(dy);
    llmq_w8a8_set_epilogue(ctx, LLMQ_W8A8_EPI_AUTO);
}

static void check_gemm(int M, int N, int K, const llmq_dtype *dts, int ndt)
{
    char shape[64];
    snprintf(shape, sizeof shape, "M=%d N=%d K=%d", M, N, K);
    size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N;
    int8_t *x = xmalloc(nx), *w = xmalloc(nw);
    float *st = xmalloc(M * sizeof(float)), *sc = xmalloc(N * sizeof(float)), *yref = NULL;
    int *rows = xmalloc((M > 32 ? M : 32) * sizeof(int));
    int32_t *accg = NULL, *accr = NULL;
    rand_i8(x, nx);
    rand_i8(w, nw);
    for (int m = 0; m < M; m++)
        st[m] = (float)(0.5 + urand()) * 0.02f;
    for (int n = 0; n < N; n++)
        sc[n] = (float)(0.5 + urand()) * 0.002f;
    void *dx = dev_bytes(x, nx), *dw = dev_bytes(w, nw), *dst = dev_bytes(st, M * sizeof(float));
    void *dsc = dev_bytes(sc, N * sizeof(float)), *dacc = dalloc(ny * sizeof(int32_t), 0x80);
    TRY("int8_gemm", LLMQ_I32, shape, dx && dw && dst && dsc && dacc);
    TRY("int8_gemm", LLMQ_I32, shape, llmq_int8_gemm_i32(ctx, dacc, dx, dw, M, N, K) == 0);
    accg = host_bytes(dacc, ny * sizeof(int32_t));
    TRY("int8_gemm", LLMQ_I32, shape, accg);
    int nrows = pick_rows(M, N, K, rows);
    accr = xmalloc((size_t)nrows * N * sizeof(int32_t));
    yref = xmalloc((size_t)nrows * N * sizeof(float));
    ref_rows(x, st, w, sc, rows, nrows, N, K, accr, yref, dts[0]);
    size_t unwritten = 0, diff = 0;
    for (size_t i = 0; i < ny; i++)
        unwritten += accg[i] == (int32_t)0x80808080;
    for (int s = 0; s < nrows; s++)
        for (int n = 0; n < N; n++)
            diff += accg[(size_t)rows[s] * N + n] != accr[(size_t)s * N + n];
    char numbers[128];
    snprintf(numbers, sizeof numbers, "int32 differs in %zu/%zu (rows checked %d/%d), unwritten %zu", diff,
             (size_t)nrows * N, nrows, M, unwritten);
    report(diff == 0 && unwritten == 0, "int8_gemm.i32", LLMQ_I32, shape, numbers);

    for (int i = 0; i < ndt; i++) {
        if (i > 0) /* the reference's y in this type (the GEMM again: small shapes only) */
            ref_rows(x, st, w, sc, rows, nrows, N, K, NULL, yref, dts[i]);
        check_epilogue(LLMQ_W8A8_EPI_RESCALE, dts[i], shape, M, N, K, dx, dst, dw, dsc, rows, nrows, yref);
        if (M <= 64)
            check_epilogue(LLMQ_W8A8_EPI_GEMV, dts[i], shape, M, N, K, dx, dst, dw, dsc, rows, nrows, yref);
        if (llmq_w8a8_fused_available(ctx))
            check_epilogue(LLMQ_W8A8_EPI_FUSED, dts[i], shape, M, N, K, dx, dst, dw, dsc, rows, nrows, yref);
    }
done:
    free(x), free(w), free(st), free(sc), free(yref), free(rows), free(accg), free(accr);
    cudaFree(dx), cudaFree(dw), cudaFree(dst), cudaFree(dsc), cudaFree(dacc);
}

/* A shape cuBLASLt's int8 kernels cannot take must fail with a message. */
static void check_gemm_rejects(void)
{
    void *d = dalloc(4096, 0);
    int rc = d ? llmq_int8_gemm_i32(ctx, d, d, d, 2, 8, 6) : 0;
    report(d && rc != 0 && strstr(llmq_last_error(), "multiples of 4"), "int8_gemm.rejects_K6", LLMQ_I32,
           "M=2 N=8 K=6", llmq_last_error());
    cudaFree(d);
}

int main(void)
{
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 77;
    }
    static const int Ms[] = {1, 3, 17, 512};
    static const int Ws[] = {64, 172, 4096, 11008};
    static const llmq_dtype dts[] = {LLMQ_F16, LLMQ_BF16, LLMQ_F32};

    for (int d = 0; d < 3; d++)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                check_quant(dts[d], Ms[i], Ws[j]);
                check_rmsnorm_quant(dts[d], Ms[i], Ws[j], 1);
                check_silu_quant(dts[d], Ms[i], Ws[j], 0);
                if (Ms[i] == 17) {
                    check_rmsnorm_quant(dts[d], Ms[i], Ws[j], 0);
                    check_silu_quant(dts[d], Ms[i], Ws[j], 1);
                }
            }

    for (int d = 0; d < 3; d++)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                check_acc_producers(dts[d], Ms[i], Ws[j]);

    if (llmq_w8a8_create(&ctx, NULL) != 0) {
        report_error("w8a8_create", LLMQ_I32, "");
    } else {
        printf("fused cuBLASLt epilogue (outer-vector scales) for int8: %s\n",
               llmq_w8a8_fused_available(ctx) ? "available" : "not available");
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 4; k++)
                for (int n = 0; n < 4; n++) {
                    int all = Ms[i] == 17 && Ws[k] <= 4096 && Ws[n] <= 4096 && Ws[k] >= 172 && Ws[n] >= 172;
                    check_gemm(Ms[i], Ws[n], Ws[k], dts, all ? 3 : 1);
                }
        /* The rescale path in chunks of 64 rows (the smallest chunk), with a
         * partial last chunk. */
        llmq_w8a8_set_scratch_limit(ctx, 1);
        check_gemm(512, 4096, 172, dts, 1);
        check_gemm(100, 172, 4096, dts, 2);
        llmq_w8a8_set_scratch_limit(ctx, LLMQ_W8A8_DEFAULT_SCRATCH);
        check_gemm_rejects();
        /* The GEMV at every decode batch size around its row tiles (8, 16),
         * on the fast loop (K % 128 == 0) and the general one, N not a
         * multiple of the 16-channel tile; then under forced splits and
         * without PDL. */
        static const int gm[] = {2, 8, 9, 16};
        static const int gk[][2] = {{4096, 4096}, {100, 172}, {11008, 4096}, {64, 1000}};
        for (int i = 0; i < 4; i++)
            for (int s = 0; s < 4; s++)
                check_gemm(gm[i], gk[s][0], gk[s][1], dts, gm[i] == 9 ? 3 : 1);
        static const int tw[][2] = {{1, 0}, {3, 0}, {16, 1}};
        for (int i = 0; i < 3; i++) {
            llmq_w8a8_gemv_tune(tw[i][0], tw[i][1]);
            check_gemm(1, 4096, 11008, dts, 1);
            check_gemm(5, 172, 1000, dts, 2);
        }
        llmq_w8a8_gemv_tune(0, 0);
        llmq_w8a8_destroy(ctx);
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
