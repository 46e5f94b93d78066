/* kernels/nf4_gemv.cu against the C reference (quant/nf4_gemv_ref.h).
 *
 * W [N,K] random (never zero), quantized with nf4_quantize() (blocks of 64,
 * double-quantized absmax unless marked "plain"), x [M,K] random and
 * rounded through dt; y poisoned with NaN before each run, every element
 * checked. Shapes: K, N in {64, 172, 4096, 11008} at M = 1 (172 takes the
 * generic kernel: blocks straddle rows), M = 1..8 on three of them, F16,
 * BF16 and F32, and each of the fast kernel's rows-per-warp settings at
 * M = 1. Pass: relative L2 error against the fp64-summed reference under
 * 1e-3 (F16), 8e-3 (BF16), 2e-5 (F32). llmq_nf4_dequant (the prefill
 * path) against nf4_dequantize() rounded to dt: every element bit for bit.
 *
 * The slice kernel's NF4 weight (kernels/wna16.h, wna16_prepare_nf4; the
 * runner's path on compute capability 9.0 with K % 256 == 0): the product
 * on the SLICE path against the same reference and limits at M = 1..64
 * (8- and 16-row kernels, further row blocks), N not a multiple of 16, K
 * from 256 to 11008, F16 and BF16, AUTO above 64 rows (dequantization into
 * a scratch + cuBLAS), and wna16_dequant bit for bit as above. Skipped
 * below compute capability 9.0.
 *
 * Prints "ok|FAIL ..." per check, then "N passed, N failed"; exits 1 on
 * any failure, 77 (skipped) where no GPU is usable. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/nf4_gemv.h"
#include "kernels/wna16.h"
#include "quant/nf4.h"
#include "quant/nf4_gemv_ref.h"
#include "src/backend.h"
#include "src/dtype.h"
#include "src/error.h"

#define GT_PROG "test_nf4_gemv"
#define GT_SEED 0x2545F4914F6CDD1Dull
#include "tests/gpu/gpu_test.h"

static int n_pass, n_fail;


/* Approximately normal (Irwin-Hall of 4 uniforms, unit variance): cheap
 * enough for 121M weights. */
static float nrand(void) { return (float)((urand() + urand() + urand() + urand() - 2.0) * 1.7320508075688772); }

static void report(int ok, const char *what, llmq_dtype dt, const char *shape, double err)
{
    printf("%s %s %s %s err=%.3g\n", ok ? "ok" : "FAIL", what, llmq_dtype_name(dt), shape, err);
    fflush(stdout);
    if (ok)
        n_pass++;
    else
        n_fail++;
}

static void report_error(const char *what, llmq_dtype dt, const char *shape)
{
    printf("FAIL %s %s %s error: %s\n", what, llmq_dtype_name(dt), shape, llmq_last_error());
    fflush(stdout);
    n_fail++;
}

/* A quantized weight and its device copy, kept across the checks of one shape. */
typedef struct {
    int n, k, dq;
    llmq_nf4 q;
    llmq_nf4_gpu d;
} weight;

static int make_weight(weight *w, int n, int k, int dq)
{
    memset(w, 0, sizeof *w);
    w->n = n;
    w->k = k;
    w->dq = dq;
    size_t nk = (size_t)n * k;
    float *W = xmalloc(nk * sizeof *W);
    /* Rows of different magnitudes, so block absmaxes spread (and the
     * double quantization's offset is not the only scale). */
    for (int r = 0; r < n; r++) {
        float s = 0.01f + 0.04f * (float)urand();
        for (int j = 0; j < k; j++)
            W[(size_t)r * k + j] = nrand() * s;
    }
    int rc = nf4_quantize(W, nk, 64, dq, &w->q);
    free(W);
    if (rc)
        return -1;
    if (llmq_nf4_gpu_upload(&w->d, &w->q, n, k)) {
        nf4_free(&w->q);
        return -1;
    }
    return 0;
}

static void free_weight(weight *w)
{
    nf4_free(&w->q);
    llmq_nf4_gpu_free(&w->d);
}

/* A product under test: y (dt, device) = x . W^T for M rows; 0 or -1. */
typedef int (*product_fn)(const weight *w, void *arg, llmq_dtype dt, void *dy, const void *dx, int M);

/* x random, rounded through dt; the product on the device against
 * nf4_gemv_ref: the relative L2 error of every element (NaN if any is not
 * finite; y is poisoned first) under 1e-3 (F16), 8e-3 (BF16), 2e-5 (F32). */
static void check_product(const char *what, const char *shape, const weight *w, int M, llmq_dtype dt,
                          product_fn fn, void *arg)
{
    const int N = w->n, K = w->k;
    size_t nx = (size_t)M * K, ny = (size_t)M * N, es = llmq_dtype_size(dt);
    float *x = xmalloc(nx * sizeof *x), *ref = xmalloc(ny * sizeof *ref), *got = xmalloc(ny * sizeof *got);
    void *hx = xmalloc(nx * es), *hy = xmalloc(ny * es), *dx = NULL, *dy = NULL;
    for (size_t i = 0; i < nx; i++)
        x[i] = nrand();
    llmq_round_through(x, nx, dt);
    if (nf4_gemv_ref(&w->q, N, K, x, M, ref)) {
        report_error(what, dt, shape);
        goto done;
    }
    llmq_convert(hx, dt, x, LLMQ_F32, nx);
    if (cudaMalloc(&dx, nx * es) != cudaSuccess || cudaMalloc(&dy, ny * es) != cudaSuccess ||
        cudaMemcpy(dx, hx, nx * es, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemset(dy, 0xFF, ny * es) != cudaSuccess) {
        llmq_fail("CUDA allocation or copy failed");
        report_error(what, dt, shape);
        goto done;
    }
    int rc = fn(w, arg, dt, dy, dx, M);
    cudaError_t ce = cudaDeviceSynchronize();
    if (rc || ce != cudaSuccess || cudaMemcpy(hy, dy, ny * es, cudaMemcpyDeviceToHost) != cudaSuccess) {
        if (!rc)
            llmq_fail("CUDA: %s", cudaGetErrorString(ce != cudaSuccess ? ce : cudaGetLastError()));
        report_error(what, dt, shape);
        goto done;
    }
    llmq_convert(got, LLMQ_F32, hy, dt, ny);
    double num = 0.0, den = 0.0;
    int nonfinite = 0;
    for (size_t i = 0; i < ny; i++) {
        if (!isfinite(got[i]))
            nonfinite = 1;
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    double err = nonfinite ? NAN : den > 0 ? sqrt(num / den) : sqrt(num);
    double lim = dt == LLMQ_F16 ? 1e-3 : dt == LLMQ_BF16 ? 8e-3 : 2e-5;
    report(err <= lim, what, dt, shape, err);
done:
    free(x), free(ref), free(got), free(hx), free(hy);
    cudaFree(dx), cudaFree(dy);
}

/* A dense W under test: dst (dt, device, N * K) = W; 0 or -1. */
typedef int (*dequant_fn)(const weight *w, void *arg, llmq_dtype dt, void *dst);

/* The dense W of a prefill path: nf4_dequantize() rounded once to dt, and
 * the kernel's W, poisoned beforehand, must be the same bits everywhere. */
static void check_dense(const char *what, const weight *w, llmq_dtype dt, dequant_fn fn, void *arg)
{
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d K=%d%s", w->n, w->k, w->dq ? "" : " plain");
    const size_t nk = (size_t)w->n * w->k, es = llmq_dtype_size(dt);
    float *ref = xmalloc(nk * sizeof *ref);
    void *href = xmalloc(nk * es), *hgot = xmalloc(nk * es), *dW = NULL;
    if (nf4_dequantize(&w->q, ref) || llmq_convert(href, dt, ref, LLMQ_F32, nk)) {
        report_error(what, dt, shape);
        goto done;
    }
    if (cudaMalloc(&dW, nk * es) != cudaSuccess || cudaMemset(dW, 0xFF, nk * es) != cudaSuccess) {
        llmq_fail("CUDA allocation failed");
        report_error(what, dt, shape);
        goto done;
    }
    int rc = fn(w, arg, dt, dW);
    cudaError_t ce = cudaDeviceSynchronize();
    if (rc || ce != cudaSuccess || cudaMemcpy(hgot, dW, nk * es, cudaMemcpyDeviceToHost) != cudaSuccess) {
        if (!rc)
            llmq_fail("CUDA: %s", cudaGetErrorString(ce != cudaSuccess ? ce : cudaGetLastError()));
        report_error(what, dt, shape);
        goto done;
    }
    size_t diff = 0;
    for (size_t i = 0; i < nk * es; i++)
        diff += ((const uint8_t *)href)[i] != ((const uint8_t *)hgot)[i];
    report(diff == 0, what, dt, shape, (double)diff);
done:
    free(ref), free(href), free(hgot);
    cudaFree(dW);
}

/* ---- the NF4 GEMV (bitsandbytes' layout) ---- */

static int gemv_product(const weight *w, void *arg, llmq_dtype dt, void *dy, const void *dx, int M)
{
    const int rows_per_warp = *(const int *)arg;
    if (rows_per_warp && llmq_nf4_gemv_tune(rows_per_warp))
        return -1;
    int rc = llmq_nf4_gemv(NULL, dt, dy, dx, &w->d, M);
    llmq_nf4_gemv_tune(0);
    return rc;
}

static void check(const weight *w, int M, llmq_dtype dt, int rows_per_warp)
{
    char shape[96];
    snprintf(shape, sizeof shape, "M=%d N=%d K=%d%s%s", M, w->n, w->k, w->dq ? "" : " plain",
             rows_per_warp ? (rows_per_warp == 1 ? " R=1" : rows_per_warp == 2 ? " R=2" : " R=4") : "");
    check_product("nf4_gemv", shape, w, M, dt, gemv_product, &rows_per_warp);
}

static int gemv_dense(const weight *w, void *arg, llmq_dtype dt, void *dst)
{
    (void)arg;
    return llmq_nf4_dequant(NULL, dt, dst, &w->d);
}

static void check_dequant(const weight *w, llmq_dtype dt) { check_dense("nf4_dequant", w, dt, gemv_dense, NULL); }

/* ---- the slice kernel's copy (wna16_prepare_nf4), made per check ---- */

typedef struct {
    llmq_backend *b; /* its dt is the check's */
    int path;        /* WNA16_SLICE, or AUTO with a scratch for the dense path */
} slice_arg;

static int slice_product(const weight *w, void *arg, llmq_dtype dt, void *dy, const void *dx, int M)
{
    const slice_arg *a = arg;
    const size_t scratch_bytes = (size_t)w->n * w->k * llmq_dtype_size(dt);
    wna16_weight *sw = NULL;
    void *scratch = NULL;
    if (wna16_prepare_nf4(&sw, a->b, &w->q, w->k, w->n))
        return -1;
    if (a->path == WNA16_AUTO && cudaMalloc(&scratch, scratch_bytes) != cudaSuccess) {
        wna16_free(sw);
        return llmq_fail("CUDA allocation failed");
    }
    if (scratch)
        wna16_set_scratch(sw, scratch, scratch_bytes);
    int rc = wna16_linear_path(sw, a->b, dy, dx, M, a->path);
    cudaDeviceSynchronize(); /* before the frees; errors are the caller's to read */
    wna16_free(sw);
    cudaFree(scratch);
    return rc;
}

static void check_slice(const weight *w, llmq_backend *b, int M, int path)
{
    char shape[96];
    snprintf(shape, sizeof shape, "M=%d N=%d K=%d%s%s", M, w->n, w->k, w->dq ? "" : " plain",
             path == WNA16_AUTO ? " auto+scratch" : "");
    slice_arg a = {b, path};
    check_product("nf4_slice", shape, w, M, b->dt, slice_product, &a);
}

static int slice_dense(const weight *w, void *arg, llmq_dtype dt, void *dst)
{
    llmq_backend *b = arg;
    (void)dt; /* b->dt */
    wna16_weight *sw = NULL;
    if (wna16_prepare_nf4(&sw, b, &w->q, w->k, w->n))
        return -1;
    int rc = wna16_dequant(sw, b, dst);
    cudaDeviceSynchronize();
    wna16_free(sw);
    return rc;
}

static void check_slice_dequant(const weight *w, llmq_backend *b)
{
    check_dense("nf4_slice_dequant", w, b->dt, slice_dense, b);
}

/* The slice kernel's NF4 weights, where the device has it. */
static void slice_checks(void)
{
    llmq_backend *f16 = NULL, *bf16 = NULL;
    if (llmq_backend_cuda(&f16, 0, LLMQ_F16) || llmq_backend_cuda(&bf16, 0, LLMQ_BF16)) {
        report_error("nf4_slice", LLMQ_F16, "backend");
        goto done;
    }
    if (!wna16_nf4_supported(f16, 256)) {
        printf("skipped: nf4_slice (compute capability below 9.0)\n");
        goto done;
    }
    static const struct {
        int n, k, dq;
        int ms[10];
    } cases[] = {
        {4096, 4096, 1, {1, 2, 3, 8, 9, 16, 17, 33, 64, 0}},
        {100, 256, 1, {1, 5, 16, 19, 0}},
        {4096, 11008, 0, {1, 16, 0}},
        {11008, 4096, 1, {4, 16, 0}},
        {64, 1024, 1, {1, 64, 0}},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        weight w;
        if (make_weight(&w, cases[ci].n, cases[ci].k, cases[ci].dq)) {
            report_error("nf4 weight", LLMQ_F16, "make");
            continue;
        }
        for (int j = 0; cases[ci].ms[j]; j++)
            check_slice(&w, f16, cases[ci].ms[j], WNA16_SLICE);
        check_slice(&w, bf16, cases[ci].ms[0], WNA16_SLICE);
        check_slice(&w, bf16, 16, WNA16_SLICE);
        check_slice_dequant(&w, f16);
        check_slice_dequant(&w, bf16);
        if (ci < 2) {
            check_slice(&w, f16, 100, WNA16_AUTO);
            check_slice(&w, bf16, 70, WNA16_AUTO);
        }
        free_weight(&w);
    }
done:
    if (bf16)
        bf16->destroy(bf16);
    if (f16)
        f16->destroy(f16);
}

int main(void)
{
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 77;
    }
    static const int Ws[] = {64, 172, 4096, 11008};
    weight w;
    /* Every shape at M = 1, F16, double-quantized absmax. */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            if (make_weight(&w, Ws[i], Ws[j], 1)) {
                report_error("nf4 weight", LLMQ_F16, "make");
                continue;
            }
            check(&w, 1, LLMQ_F16, 0);
            const int many = (Ws[i] == 4096 && Ws[j] == 4096) || (Ws[i] == 64 && Ws[j] == 172) ||
                             (Ws[i] == 172 && Ws[j] == 11008) || (Ws[i] == 11008 && Ws[j] == 4096);
            if (many) {
                for (int m = 2; m <= 8; m++)
                    check(&w, m, LLMQ_F16, 0);
                for (int m = 1; m <= 8; m += 3) {
                    check(&w, m, LLMQ_BF16, 0);
                    check(&w, m, LLMQ_F32, 0);
                }
                check(&w, 1, LLMQ_F16, 1);
                check(&w, 1, LLMQ_F16, 4);
                check_dequant(&w, LLMQ_F16);
                check_dequant(&w, LLMQ_BF16);
                check_dequant(&w, LLMQ_F32);
            }
            free_weight(&w);
        }
    /* Plain fp32 absmax. */
    static const int plain[][2] = {{4096, 4096}, {172, 172}, {4096, 11008}, {172, 4096}};
    for (int i = 0; i < 4; i++) {
        if (make_weight(&w, plain[i][0], plain[i][1], 0)) {
            report_error("nf4 weight", LLMQ_F16, "make plain");
            continue;
        }
        check(&w, 1, LLMQ_F16, 0);
        check(&w, 5, LLMQ_F16, 0);
        check(&w, 2, LLMQ_F32, 0);
        check_dequant(&w, LLMQ_F16);
        free_weight(&w);
    }
    slice_checks();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
