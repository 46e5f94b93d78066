/* Timings of the W8A8 and NF4 kernels (kernels/w8a8.h, kernels/nf4_gemv.h)
 * against the fp16 paths they replace, all in one run on one device.
 *
 *   copy        device-to-device cudaMemcpy of 1 GiB: the bandwidth ceiling
 *               (bytes read + bytes written)
 *   producers   fp16, fused residual-add + RMSNorm + int8 (dim 4096) vs the
 *               backend's add + rmsnorm + llmq_quant_per_token; fused
 *               silu*mul + int8 (cols 11008) vs silu_mul + quant_per_token
 *   linear      Llama-2-7B shapes (N x K = 4096x4096 q/k/v/o, 11008x4096
 *               gate/up, 4096x11008 down), M = 16 .. 8192 tokens:
 *               cuBLAS fp16 GEMM (the backend's linear) vs the int8 GEMM
 *               alone (int32 out), the W8A8 GEMM with each epilogue, and
 *               the whole W8A8 linear from fp16 activations
 *               (quant_per_token + GEMM + rescale)
 *   nf4 gemv    M = 1 (and 4, 8) at the same shapes plus the 32000x4096
 *               lm_head: NF4 (double-quantized) vs cuBLAS fp16 GEMV (the
 *               backend's linear with one row), as GB/s of the bytes each
 *               must read and as a share of the copy bandwidth
 *
 * Each figure: warm-up, then the median of 11 samples, each sample timing
 * `inner` back-to-back calls between two events on the stream (inner
 * chosen so that a sample lasts about 2 ms). Weights rotate among copies
 * totalling at least 256 MiB, so that no call finds its weight in L2; inputs
 * are random, never zeros.
 *
 *   decode      M = 1, 4, 8, 16 at the 7B shapes: llmq_w8a8_gemv (the
 *               rescale in its epilogue) vs cuBLASLt int8 + rescale vs
 *               cuBLAS fp16, as GB/s of the int8 weight and share of copy
 *
 * Usage: bench_w8a8 [quick|gemv]   (quick: fewer M values; gemv: copy and
 * the decode table only) */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_cuda.h"
#include "kernels/nf4_gemv.h"
#include "kernels/w8a8.h"
#include "quant/nf4.h"
#include "src/backend.h"
#include "src/dtype.h"
#include "src/error.h"

#define GT_PROG "bench_w8a8"
#define GT_SEED 0x2545F4914F6CDD1Dull
#include "tests/gpu/gpu_test.h"

static llmq_backend *g;
static cudaStream_t stream;
static llmq_w8a8_ctx *wctx;

static void *dmalloc(size_t nbytes)
{
    void *d = NULL;
    cuda_ok(cudaMalloc(&d, nbytes ? nbytes : 1), "cudaMalloc");
    return d;
}

/* n elements of dt, uniform in [-scale, scale] (a random block of 4M values
 * repeated with shifts; never zeros). dt I8: codes in [-127, 127]. */
static void *dev_rand(size_t n, llmq_dtype dt, float scale)
{
    enum { BLOCK = 1 << 22 };
    static float *host;
    if (!host) {
        host = xmalloc(BLOCK * sizeof *host);
        for (size_t i = 0; i < BLOCK; i++)
            host[i] = urand_pm1();
    }
    const size_t es = llmq_dtype_size(dt);
    void *d = dmalloc(n * es);
    float *tmp = xmalloc(BLOCK * sizeof *tmp);
    void *conv = xmalloc(BLOCK * es);
    for (size_t off = 0; off < n; off += BLOCK) {
        size_t cnt = n - off < BLOCK ? n - off : BLOCK, shift = (off / BLOCK * 7919) % BLOCK;
        for (size_t i = 0; i < cnt; i++)
            tmp[i] = host[(i + shift) % BLOCK] * scale;
        if (dt == LLMQ_I8) {
            for (size_t i = 0; i < cnt; i++)
                ((int8_t *)conv)[i] = (int8_t)lrintf(tmp[i] * 127.0f / scale);
        } else if (llmq_convert(conv, dt, tmp, LLMQ_F32, cnt)) {
            die("convert");
        }
        cuda_ok(cudaMemcpy((char *)d + off * es, conv, cnt * es, cudaMemcpyHostToDevice), "upload");
    }
    free(tmp);
    free(conv);
    return d;
}

/* Positive scales around `s`. */
static float *dev_scales(size_t n, float s)
{
    float *h = xmalloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = s * (1.25f + 0.75f * urand_pm1());
    float *d = dmalloc(n * sizeof *h);
    cuda_ok(cudaMemcpy(d, h, n * sizeof *h, cudaMemcpyHostToDevice), "upload");
    free(h);
    return d;
}

/* ---- timing ---- */

typedef int (*op_fn)(void *arg, int iter);

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

enum { SAMPLES = 11 };

/* Median microseconds per call of fn (see the header). */
static double time_us(op_fn fn, void *arg)
{
    int iter = 0;
    cudaEvent_t e0, e1;
    cuda_ok(cudaEventCreate(&e0), "event");
    cuda_ok(cudaEventCreate(&e1), "event");
    for (int i = 0; i < 3; i++)
        if (fn(arg, iter++))
            die("warm-up");
    /* Estimate one call, then choose inner for ~2 ms samples. */
    cuda_ok(cudaEventRecord(e0, stream), "record");
    for (int i = 0; i < 3; i++)
        if (fn(arg, iter++))
            die("run");
    cuda_ok(cudaEventRecord(e1, stream), "record");
    cuda_ok(cudaEventSynchronize(e1), "sync");
    float ms;
    cuda_ok(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
    int inner = (int)(2.0 / (ms / 3.0 > 1e-4 ? ms / 3.0 : 1e-4));
    inner = inner < 1 ? 1 : inner > 500 ? 500 : inner;
    float t[SAMPLES];
    for (int s = 0; s < SAMPLES; s++) {
        cuda_ok(cudaEventRecord(e0, stream), "record");
        for (int i = 0; i < inner; i++)
            if (fn(arg, iter++))
                die("run");
        cuda_ok(cudaEventRecord(e1, stream), "record");
        cuda_ok(cudaEventSynchronize(e1), "sync");
        cuda_ok(cudaEventElapsedTime(&t[s], e0, e1), "elapsed");
        t[s] = t[s] * 1000.0f / inner;
    }
    cuda_ok(cudaGetLastError(), "after timing");
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    qsort(t, SAMPLES, sizeof t[0], cmp_float);
    return t[SAMPLES / 2];
}

/* Copies of one buffer so that together they pass 256 MiB (at most 64). */
static int rot_count(size_t bytes)
{
    size_t n = ((size_t)256 << 20) / (bytes ? bytes : 1) + 1;
    return (int)(n > 64 ? 64 : n);
}

/* ---- copy ---- */

struct copy_arg {
    void *a, *b;
    size_t bytes;
};
static int run_copy(void *p, int iter)
{
    struct copy_arg *c = p;
    return cudaMemcpyAsync(iter & 1 ? c->a : c->b, iter & 1 ? c->b : c->a, c->bytes, cudaMemcpyDeviceToDevice,
                           stream) == cudaSuccess
               ? 0
               : llmq_fail("cudaMemcpyAsync");
}

static double bench_copy(void)
{
    struct copy_arg c = {.bytes = (size_t)1 << 30};
    c.a = dev_rand(c.bytes / 2, LLMQ_F16, 1.0f);
    c.b = dmalloc(c.bytes);
    double us = time_us(run_copy, &c);
    double gbs = 2.0 * c.bytes / (us * 1e-6) / 1e9;
    printf("copy: 1 GiB device-to-device %.1f us = %.0f GB/s (read + write)\n", us, gbs);
    cudaFree(c.a);
    cudaFree(c.b);
    return gbs;
}

/* ---- producers ---- */

struct prod {
    int rows, cols;
    void *x, *delta, *w, *h, *gate, *up;
    int8_t *q;
    float *s;
};

static int run_norm_fused(void *p, int iter)
{
    (void)iter;
    struct prod *a = p;
    return llmq_rmsnorm_quant(stream, LLMQ_F16, a->q, a->s, a->x, a->delta, a->w, a->rows, a->cols, 1e-5f);
}

static int run_norm_separate(void *p, int iter)
{
    (void)iter;
    struct prod *a = p;
    size_t n = (size_t)a->rows * a->cols;
    if (g->add(g, a->x, a->delta, n) || g->rmsnorm(g, a->h, a->x, a->w, a->rows, a->cols, 1e-5f))
        return -1;
    return llmq_quant_per_token(stream, LLMQ_F16, a->q, a->s, a->h, a->rows, a->cols);
}

static int run_silu_fused(void *p, int iter)
{
    (void)iter;
    struct prod *a = p;
    return llmq_silu_mul_quant(stream, LLMQ_F16, a->q, a->s, a->gate, a->up, a->cols, a->rows, a->cols);
}

static int run_silu_separate(void *p, int iter)
{
    (void)iter;
    struct prod *a = p;
    if (g->silu_mul(g, a->h, a->gate, a->up, (size_t)a->rows * a->cols))
        return -1;
    return llmq_quant_per_token(stream, LLMQ_F16, a->q, a->s, a->h, a->rows, a->cols);
}

static void bench_producers(const int *rows_list, int nrows)
{
    printf("\n## producers (fp16 in, int8 + fp32 scale out)\n");
    printf("| op | rows x cols | fused us | fused GB/s | separate us | speedup |\n|---|---|---|---|---|---|\n");
    for (int i = 0; i < nrows; i++) {
        struct prod a = {.rows = rows_list[i], .cols = 4096};
        size_t n = (size_t)a.rows * a.cols;
        /* The residual grows by delta every call: keep delta tiny. */
        a.x = dev_rand(n, LLMQ_F16, 1.0f);
        a.delta = dev_rand(n, LLMQ_F16, 1e-3f);
        a.w = dev_rand(a.cols, LLMQ_F16, 1.0f);
        a.h = dmalloc(n * 2);
        a.q = dmalloc(n);
        a.s = dmalloc(a.rows * sizeof(float));
        double f = time_us(run_norm_fused, &a), s = time_us(run_norm_separate, &a);
        double bytes = (double)n * (2 + 2 + 2 + 1) + a.rows * 4.0 + a.cols * 2.0;
        printf("| add+rmsnorm+quant | %d x %d | %.2f | %.0f | %.2f | %.2fx |\n", a.rows, a.cols, f,
               bytes / (f * 1e-6) / 1e9, s, s / f);
        cudaFree(a.x), cudaFree(a.delta), cudaFree(a.w), cudaFree(a.h), cudaFree(a.q), cudaFree(a.s);
    }
    for (int i = 0; i < nrows; i++) {
        struct prod a = {.rows = rows_list[i], .cols = 11008};
        size_t n = (size_t)a.rows * a.cols;
        a.gate = dev_rand(n, LLMQ_F16, 3.0f);
        a.up = dev_rand(n, LLMQ_F16, 1.0f);
        a.h = dmalloc(n * 2);
        a.q = dmalloc(n);
        a.s = dmalloc(a.rows * sizeof(float));
        double f = time_us(run_silu_fused, &a), s = time_us(run_silu_separate, &a);
        double bytes = (double)n * (2 + 2 + 1) + a.rows * 4.0;
        printf("| silu*mul+quant | %d x %d | %.2f | %.0f | %.2f | %.2fx |\n", a.rows, a.cols, f,
               bytes / (f * 1e-6) / 1e9, s, s / f);
        cudaFree(a.gate), cudaFree(a.up), cudaFree(a.h), cudaFree(a.q), cudaFree(a.s);
    }
}

/* ---- linear ---- */

struct lin {
    int M, N, K, nw16, nw8, epi;
    size_t scratch;
    void **w16;
    int8_t **w8;
    void *x16, *y;
    int8_t *xq;
    float *s_tok, *s_ch;
    int32_t *acc;
};

/* The operands of an N x K linear for up to maxM rows: rotated fp16 and
 * int8 weight copies, random activations (fp16 and int8) and scales. */
static void lin_alloc(struct lin *l, int N, int K, int maxM)
{
    *l = (struct lin){.N = N, .K = K};
    const size_t nw = (size_t)N * K;
    l->nw16 = rot_count(nw * 2);
    l->nw8 = rot_count(nw);
    l->w16 = xmalloc(l->nw16 * sizeof *l->w16);
    l->w8 = xmalloc(l->nw8 * sizeof *l->w8);
    for (int i = 0; i < l->nw16; i++)
        l->w16[i] = dev_rand(nw, LLMQ_F16, 0.02f);
    for (int i = 0; i < l->nw8; i++)
        l->w8[i] = dev_rand(nw, LLMQ_I8, 1.0f);
    l->x16 = dev_rand((size_t)maxM * K, LLMQ_F16, 1.0f);
    l->xq = dev_rand((size_t)maxM * K, LLMQ_I8, 1.0f);
    l->s_tok = dev_scales(maxM, 0.01f);
    l->s_ch = dev_scales(N, 0.001f);
    l->y = dmalloc((size_t)maxM * N * 2);
    l->acc = dmalloc((size_t)maxM * N * 4);
}

static void lin_free(struct lin *l)
{
    for (int i = 0; i < l->nw16; i++)
        cudaFree(l->w16[i]);
    for (int i = 0; i < l->nw8; i++)
        cudaFree(l->w8[i]);
    free(l->w16), free(l->w8);
    cudaFree(l->x16), cudaFree(l->xq), cudaFree(l->s_tok), cudaFree(l->s_ch), cudaFree(l->y), cudaFree(l->acc);
}

static int run_fp16(void *p, int iter)
{
    struct lin *l = p;
    return g->linear(g, l->y, l->x16, l->w16[iter % l->nw16], NULL, l->M, l->K, l->N);
}

static int run_i32(void *p, int iter)
{
    struct lin *l = p;
    return llmq_int8_gemm_i32(wctx, l->acc, l->xq, l->w8[iter % l->nw8], l->M, l->N, l->K);
}

static int run_w8a8(void *p, int iter)
{
    struct lin *l = p;
    return llmq_w8a8_gemm(wctx, LLMQ_F16, l->y, l->xq, l->s_tok, l->w8[iter % l->nw8], l->s_ch, l->M, l->N, l->K);
}

static int run_full(void *p, int iter)
{
    struct lin *l = p;
    if (llmq_quant_per_token(stream, LLMQ_F16, l->xq, l->s_tok, l->x16, l->M, l->K))
        return -1;
    return run_w8a8(p, iter);
}

static double time_epi(struct lin *l, int epi, size_t scratch, op_fn fn)
{
    if (llmq_w8a8_set_epilogue(wctx, epi))
        return NAN;
    llmq_w8a8_set_scratch_limit(wctx, scratch);
    double t = time_us(fn, l);
    llmq_w8a8_set_epilogue(wctx, LLMQ_W8A8_EPI_AUTO);
    llmq_w8a8_set_scratch_limit(wctx, LLMQ_W8A8_DEFAULT_SCRATCH);
    return t;
}

/* llmq_w8a8_last_epilogue's answer in a word. */
static const char *epi_name(const char *e)
{
    return strncmp(e, "fused", 5) == 0 ? "fused" : strncmp(e, "int8 GEMV", 9) == 0 ? "gemv" : "rescale";
}

static void bench_linear(const int *Ms, int nM)
{
    static const int shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}}; /* N, K */
    const int fused = llmq_w8a8_fused_available(wctx);
    printf("\n## W8A8 linear vs cuBLAS fp16 (y fp16 [M,N] = x [M,K] . W[N,K]^T), us per call\n");
    printf("fused cuBLASLt int8 epilogue (outer-vector scales): %s\n", fused ? "available" : "not available");
    printf("| N x K | M | fp16 GEMM | TFLOP/s | int8 GEMM (i32 out) | TOPS | W8A8 rescale, 24 MiB chunks | "
           "rescale, one GEMM | fused epilogue | full W8A8 (quant + GEMM + rescale) | full vs fp16 |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    int maxM = 0;
    for (int i = 0; i < nM; i++)
        maxM = Ms[i] > maxM ? Ms[i] : maxM;
    for (int s = 0; s < 3; s++) {
        struct lin l;
        lin_alloc(&l, shapes[s][0], shapes[s][1], maxM);
        for (int i = 0; i < nM; i++) {
            l.M = Ms[i];
            double flop = 2.0 * l.M * l.N * l.K;
            double t16 = time_us(run_fp16, &l), ti = time_us(run_i32, &l);
            double tr = time_epi(&l, LLMQ_W8A8_EPI_RESCALE, 24u << 20, run_w8a8);
            double tr1 = time_epi(&l, LLMQ_W8A8_EPI_RESCALE, 0, run_w8a8);
            double tf = fused ? time_epi(&l, LLMQ_W8A8_EPI_FUSED, 0, run_w8a8) : NAN;
            double tfull = time_us(run_full, &l);
            printf("| %dx%d | %d | %.1f | %.0f | %.1f | %.0f | %.1f | %.1f | %.1f | %.1f (%s) | %.2fx |\n", l.N, l.K,
                   l.M, t16, flop / t16 * 1e-6, ti, flop / ti * 1e-6, tr, tr1, tf, tfull,
                   epi_name(llmq_w8a8_last_epilogue(wctx)), t16 / tfull);
            fflush(stdout);
        }
        lin_free(&l);
    }
}

/* ---- W8A8 decode batches: the GEMV with the rescale in its epilogue ---- */

static void bench_gemv(double copy_gbs)
{
    static const int shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}}; /* N, K */
    static const int Ms[] = {1, 4, 8, 16};
    static const int sweep[] = {2, 4, 8, 16};
    printf("\n## W8A8 decode batches: llmq_w8a8_gemv (int8 mma, rescale in its epilogue) vs cuBLASLt int8 + "
           "rescale vs cuBLAS fp16, fp16 y, us per call\n");
    printf("copy bandwidth in this run: %.0f GB/s; GB/s = weight bytes (int8 codes + fp32 channel scales) / time\n",
           copy_gbs);
    printf("| N x K | M | GEMV us | GB/s | of copy BW | cuBLASLt + rescale us | fp16 us | vs cuBLASLt | vs fp16 | "
           "M = 1 forced 2 / 4 / 8 / 16 warps |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < 3; s++) {
        struct lin l;
        lin_alloc(&l, shapes[s][0], shapes[s][1], 16);
        const size_t nw = (size_t)l.N * l.K;
        for (int i = 0; i < 4; i++) {
            l.M = Ms[i];
            double tg = time_epi(&l, LLMQ_W8A8_EPI_GEMV, 0, run_w8a8);
            double tr = time_epi(&l, LLMQ_W8A8_EPI_RESCALE, 0, run_w8a8), t16 = time_us(run_fp16, &l);
            double gbs = (nw + l.N * 4.0) / (tg * 1e-6) / 1e9;
            char sw[96] = "";
            if (l.M == 1) {
                double ts[4];
                for (int j = 0; j < 4; j++) {
                    llmq_w8a8_gemv_tune(sweep[j], 0);
                    ts[j] = time_epi(&l, LLMQ_W8A8_EPI_GEMV, 0, run_w8a8);
                }
                llmq_w8a8_gemv_tune(0, 0);
                snprintf(sw, sizeof sw, "%.2f / %.2f / %.2f / %.2f", ts[0], ts[1], ts[2], ts[3]);
            }
            printf("| %dx%d | %d | %.2f | %.0f | %.0f%% | %.2f | %.2f | %.2fx | %.2fx | %s |\n", l.N, l.K, l.M, tg, gbs,
                   100.0 * gbs / copy_gbs, tr, t16, tr / tg, t16 / tg, sw);
            fflush(stdout);
        }
        lin_free(&l);
    }
}

/* ---- NF4 GEMV ---- */

struct gemv {
    int M, N, K, nq, n16;
    llmq_nf4_gpu *q;
    void **w16;
    void *x, *y;
};

static int run_nf4(void *p, int iter)
{
    struct gemv *a = p;
    return llmq_nf4_gemv(stream, LLMQ_F16, a->y, a->x, &a->q[iter % a->nq], a->M);
}

static int run_gemv16(void *p, int iter)
{
    struct gemv *a = p;
    return g->linear(g, a->y, a->x, a->w16[iter % a->n16], NULL, a->M, a->K, a->N);
}

static void bench_nf4(double copy_gbs)
{
    static const int shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {32000, 4096}}; /* N, K */
    printf("\n## NF4 GEMV (double-quantized absmax) vs cuBLAS fp16 GEMV, fp16 x and y\n");
    printf("copy bandwidth in this run: %.0f GB/s\n", copy_gbs);
    printf("| N x K | M | NF4 us (R=1 / 2 / 4 rows per warp at M=1) | NF4 GB/s | of copy BW | fp16 us | fp16 GB/s | "
           "of copy BW | NF4 speedup |\n|---|---|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < 4; s++) {
        struct gemv a = {.N = shapes[s][0], .K = shapes[s][1]};
        const size_t nk = (size_t)a.N * a.K;
        /* One quantized weight, uploaded nq times (distinct device copies). */
        float *W = xmalloc(nk * sizeof *W);
        for (size_t i = 0; i < nk; i++)
            W[i] = urand_pm1() * 0.03f;
        llmq_nf4 q;
        if (nf4_quantize(W, nk, 64, 1, &q))
            die("nf4_quantize");
        free(W);
        const double nf4_bytes = nk / 2.0 + (double)q.nblocks + q.nblocks2 * 4.0;
        a.nq = rot_count((size_t)nf4_bytes);
        a.q = xmalloc(a.nq * sizeof *a.q);
        for (int i = 0; i < a.nq; i++)
            if (llmq_nf4_gpu_upload(&a.q[i], &q, a.N, a.K))
                die("nf4 upload");
        nf4_free(&q);
        a.n16 = rot_count(nk * 2);
        a.w16 = xmalloc(a.n16 * sizeof *a.w16);
        for (int i = 0; i < a.n16; i++)
            a.w16[i] = dev_rand(nk, LLMQ_F16, 0.03f);
        a.x = dev_rand((size_t)8 * a.K, LLMQ_F16, 1.0f);
        a.y = dmalloc((size_t)8 * a.N * 2);
        static const int Ms[] = {1, 4, 8};
        for (int i = 0; i < 3; i++) {
            a.M = Ms[i];
            double io = (double)a.M * (a.K + a.N) * 2.0;
            double tn = time_us(run_nf4, &a), tr[3] = {NAN, NAN, NAN};
            if (a.M == 1) {
                static const int R[] = {1, 2, 4};
                for (int r = 0; r < 3; r++) {
                    if (llmq_nf4_gemv_tune(R[r]))
                        die("tune");
                    tr[r] = time_us(run_nf4, &a);
                }
                llmq_nf4_gemv_tune(0);
            }
            double t16 = time_us(run_gemv16, &a);
            double gn = (nf4_bytes + io) / (tn * 1e-6) / 1e9, g16 = (nk * 2.0 + io) / (t16 * 1e-6) / 1e9;
            if (a.M == 1)
                printf("| %dx%d | %d | %.2f (%.2f / %.2f / %.2f) | %.0f | %.0f%% | %.2f | %.0f | %.0f%% | %.2fx |\n", a.N,
                       a.K, a.M, tn, tr[0], tr[1], tr[2], gn, 100.0 * gn / copy_gbs, t16, g16, 100.0 * g16 / copy_gbs,
                       t16 / tn);
            else
                printf("| %dx%d | %d | %.2f | %.0f | %.0f%% | %.2f | %.0f | %.0f%% | %.2fx |\n", a.N, a.K, a.M, tn, gn,
                       100.0 * gn / copy_gbs, t16, g16, 100.0 * g16 / copy_gbs, t16 / tn);
            fflush(stdout);
        }
        for (int i = 0; i < a.nq; i++)
            llmq_nf4_gpu_free(&a.q[i]);
        for (int i = 0; i < a.n16; i++)
            cudaFree(a.w16[i]);
        free(a.q), free(a.w16);
        cudaFree(a.x), cudaFree(a.y);
    }
}

int main(int argc, char **argv)
{
    const int quick = argc > 1 && strcmp(argv[1], "quick") == 0;
    setvbuf(stdout, NULL, _IOLBF, 0); /* each table row reaches a log even if the run is cut short */
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 77;
    }
    if (llmq_backend_cuda(&g, 0, LLMQ_F16))
        die("backend");
    stream = (cudaStream_t)llmq_cuda_stream(g);
    if (llmq_w8a8_create(&wctx, stream))
        die("w8a8 context");
    struct cudaDeviceProp prop;
    cuda_ok(cudaGetDeviceProperties(&prop, 0), "properties");
    printf("device: %s, %d SMs, L2 %d MiB, %.0f GiB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
           prop.totalGlobalMem / 1073741824.0);

    double copy = bench_copy();
    bench_gemv(copy);
    if (argc > 1 && strcmp(argv[1], "gemv") == 0)
        goto done;
    static const int prod_rows[] = {16, 512, 8192};
    bench_producers(prod_rows, 3);
    static const int Ms[] = {16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};
    static const int Mq[] = {16, 256, 8192};
    if (quick)
        bench_linear(Mq, 3);
    else
        bench_linear(Ms, 10);
    bench_nf4(copy);
done:
    llmq_w8a8_destroy(wctx);
    g->destroy(g);
    return 0;
}
