/* GPTQ on the GPU (gptq/gptq_cuda.h): gptq/gptq.c's solve, step for step.
 *
 * Layout. W lives on the device column-major, Wc[j * N + n] (column j in
 * quantization order, row n), so that the per-block kernel, where one
 * thread owns one output row, reads and writes whole columns coalesced, and
 * the trailing update is one column-major cublasSgemm:
 *     Wc[:, i2:] -= E[:, 0:cnt] * U[i1:i2, i2:]        (N x (K-i2), k = cnt)
 * U is kept column-major too (Ucm[i + j * K] = U[i][j]).
 *
 * The inverse factor. gptq/hinv.c factors B = J H' J (J the order reversal,
 * H' the permuted, dead-fixed, damped Hessian) with potrf + trtri and
 * reflects L^-1 about the anti-diagonal. In column-major terms this is
 * short: B's lower triangle, column-major, is H's row-major array read
 * backwards (through the permutation), and U column-major is L^-1
 * column-major read backwards. So: gather B, cusolverDnSpotrf (lower),
 * cusolverDnXtrtri (lower), reverse the array in place. Same U as the CPU
 * up to the libraries' rounding.
 *
 * Bitwise agreement elsewhere: every per-column operation (grid, code,
 * error, in-block update, loss) uses the same fp32 operations as the CPU
 * code (quant/rtn.h, gptq/gptq.c) with explicit round-to-nearest intrinsics
 * (__fdiv_rn, __fmul_rn, __fsub_rn, ...), so nvcc can neither fuse a
 * multiply-add nor approximate a division. */
#include <cusolverDn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda_common.cuh"

/* This file is built only with CUDA; the C side sees LLMQ_HAVE_CUDA from the
 * build, nvcc does not, so the declarations are switched on here. */
#ifndef LLMQ_HAVE_CUDA
#define LLMQ_HAVE_CUDA 1
#endif
extern "C" {
#include "gptq/gptq_cuda.h"
#include "quant/qweight.h"
}

static const char *cusolver_status_name(cusolverStatus_t s)
{
    switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_INVALID_WORKSPACE: return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default: return "cuSOLVER error";
    }
}

#define CUSOLVER_TRY(call)                                                                         \
    do {                                                                                           \
        cusolverStatus_t st_ = (call);                                                             \
        if (st_ != CUSOLVER_STATUS_SUCCESS)                                                        \
            return llmq_fail("%s (%s:%d): %s (%d)", #call, __FILE__, __LINE__,                     \
                             cusolver_status_name(st_), (int)st_);                                 \
    } while (0)

/* ---- the grid (quant/rtn.h), bit for bit ---- */

/* rtn.c's scale_to_f16: fp16 round trip (round to nearest even, as
 * llmq_f32_to_f16), kept a usable divisor. */
__device__ __forceinline__ float scale_to_f16(float s)
{
    float h = __half2float(__float2half_rn(s));
    if (h == 0.0f)
        return 0x1p-24f;
    if (isinf(h))
        return 65504.0f;
    return h;
}

/* rtn_find_params over x[c * stride], c < len. Columns with dead[c] set
 * count as 0, which never moves min or max (both start at 0): skipped. */
__device__ void grid_of(const float *x, size_t stride, int len, const uint8_t *dead, int maxq, int sym,
                        int scale_f16, float *scale, float *zero)
{
    float xmin = 0.0f, xmax = 0.0f;
    for (int c = 0; c < len; c++) {
        if (dead && dead[c])
            continue;
        const float v = x[(size_t)c * stride];
        if (v < xmin)
            xmin = v;
        if (v > xmax)
            xmax = v;
    }
    if (sym) {
        xmax = fmaxf(fabsf(xmin), xmax);
        if (xmin < 0.0f)
            xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
    }
    float s = __fdiv_rn(__fsub_rn(xmax, xmin), (float)maxq);
    if (scale_f16)
        s = scale_to_f16(s);
    *scale = s;
    /* rintf is round-half-even, as rtn_round; + 0 turns -0 into +0 */
    *zero = sym ? (float)((maxq + 1) / 2) : __fadd_rn(rintf(__fdiv_rn(-xmin, s)), 0.0f);
}

/* rtn_code */
__device__ __forceinline__ float code_of(float x, float s, float z, float maxq)
{
    const float q = __fadd_rn(rintf(__fdiv_rn(x, s)), z);
    return fminf(fmaxf(q, 0.0f), maxq);
}

/* rtn_dequant: s * (q - z) */
__device__ __forceinline__ float dequant_of(float q, float s, float z) { return __fmul_rn(s, __fsub_rn(q, z)); }

/* ---- preparation kernels ---- */

/* flag |= bit if any x[i] is NaN or Inf. */
__global__ void nonfinite_kernel(const float *x, size_t n, int *flag, int bit)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    int bad = 0;
    for (; i < n; i += stride)
        bad |= !isfinite(x[i]);
    if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0)
        atomicOr(flag, bit);
}

/* T[k * N + n] = A[n * K + k] through a 32x32 tile (both sides coalesced). */
__global__ void transpose_kernel(const float *A, float *T, int N, int K)
{
    __shared__ float tile[32][33];
    const int k0 = blockIdx.x * 32, n0 = blockIdx.y * 32, tx = threadIdx.x;
    for (int r = threadIdx.y; r < 32; r += blockDim.y)
        if (n0 + r < N && k0 + tx < K)
            tile[r][tx] = A[(size_t)(n0 + r) * K + (k0 + tx)];
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += blockDim.y)
        if (k0 + r < K && n0 + tx < N)
            T[(size_t)(k0 + r) * N + (n0 + tx)] = tile[tx][r];
}

/* Grids of whole groups from T (original channel order): S/Z[g * N + n]
 * for group g = columns g*G .. g*G+G-1. dead may be NULL. */
__global__ void grids_kernel(const float *T, const uint8_t *dead, float *S, float *Z, int N, int K, int G,
                             int ngroups, int maxq, int sym, int scale_f16)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N)
        return;
    for (int g = blockIdx.y; g < ngroups; g += gridDim.y) {
        const int k0 = g * G, len = K - k0 < G ? K - k0 : G;
        grid_of(T + (size_t)k0 * N + n, (size_t)N, len, dead ? dead + k0 : NULL, maxq, sym, scale_f16,
                &S[(size_t)g * N + n], &Z[(size_t)g * N + n]);
    }
}

/* Wc[j] = column perm[j] of T, zeroed for dead channels. */
__global__ void permute_cols_kernel(const float *T, float *Wc, const int32_t *perm, const uint8_t *dead, int N,
                                    int K)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N)
        return;
    for (int j = blockIdx.y; j < K; j += gridDim.y) {
        const int k = perm[j];
        Wc[(size_t)j * N + n] = dead[k] ? 0.0f : T[(size_t)k * N + n];
    }
}

/* ---- the inverse factor ---- */

/* D's lower triangle (column-major) := B = J H' J + dval I, read from H
 * (row-major, untouched) exactly where gptq/hinv.c reads it:
 * B[a][b] = H'[K-1-b][K-1-a], H'[r][c] = H[perm[r]][perm[c]]; on the
 * diagonal the permuted, dead-fixed diagonal plus the damping. */
__global__ void gather_b_kernel(const float *H, float *D, const int32_t *perm, const float *diagp, float dval,
                                int K)
{
    for (int b = blockIdx.y; b < K; b += gridDim.y) {
        const size_t rowH = (size_t)perm[K - 1 - b] * K;
        for (int a = b + blockIdx.x * blockDim.x + threadIdx.x; a < K; a += gridDim.x * blockDim.x) {
            const size_t at = (size_t)a + (size_t)b * K;
            D[at] = a == b ? __fadd_rn(diagp[K - 1 - a], dval) : H[rowH + perm[K - 1 - a]];
        }
    }
}

/* x[i] <-> x[n-1-i]: column-major L^-1 read backwards is column-major U. */
__global__ void reverse_kernel(float *x, size_t n)
{
    const size_t half = n / 2, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < half; i += stride) {
        const float t = x[i];
        x[i] = x[n - 1 - i];
        x[n - 1 - i] = t;
    }
}

/* ---- one lazy batch block ---- */

struct block_args {
    const float *Wc;      /* [K][N] with the updates of earlier blocks */
    const float *U;       /* column-major [K, K], upper triangle */
    float *E;             /* [cnt][N] errors of this block */
    uint8_t *Qc;          /* [K][N] codes, quantization order */
    float *S, *Z;         /* [ngroups][N] */
    const int32_t *cgrp;  /* quantization order -> group row */
    double *rowloss;      /* [N] */
    int N, K, G, i1, cnt, maxq, sym, scale_f16, dyn;
};

/* Batches of UPD row updates: all loads of a batch are issued before its
 * stores. With the thread count T unknown at compile time the compiler
 * cannot prove that sw[k * T + t] and sw[(k + 1) * T + t] differ, and
 * would otherwise wait for each store before the next load (one shared
 * memory round trip per element: 5x slower on an H200). */
#define UPD 16

/* w1[k] -= err * u[k] for k in [k0, cnt): gptq.c's axpy_neg, each product
 * rounded, then subtracted. u[k] is at urow[k * ustride]. */
__device__ __forceinline__ void update_row(float *sw, int T, int t, const float *urow, size_t ustride, int k0,
                                           int cnt, float err)
{
    for (int k = k0; k < cnt; k += UPD) {
        float v[UPD], u[UPD];
#pragma unroll
        for (int q = 0; q < UPD; q++)
            if (k + q < cnt) {
                v[q] = sw[(k + q) * T + t];
                u[q] = urow[(size_t)(k + q) * ustride];
            }
#pragma unroll
        for (int q = 0; q < UPD; q++)
            if (k + q < cnt)
                sw[(k + q) * T + t] = __fsub_rn(v[q], __fmul_rn(err, u[q]));
    }
}

/* Thread n owns row n: its block copy w1 lives in shared memory (column i
 * at sw[i * T + t], conflict-free), the block's U in shared memory too when
 * it fits (row r at su[r * ldu], ldu odd so that the staging writes spread
 * over the banks), read by all threads at once (a broadcast). Per column,
 * exactly gptq.c's block_rows. */
template <bool U_SMEM> __global__ void block_kernel(block_args a)
{
    extern __shared__ float smem[];
    const int T = blockDim.x, t = threadIdx.x, cnt = a.cnt, ldu = cnt | 1;
    float *sw = smem;
    float *su = smem + (size_t)cnt * T;
    const float *ublk = a.U + a.i1 + (size_t)a.i1 * a.K; /* U[i1][i1] */

    if (U_SMEM) {
        /* eight independent loads in flight per thread, then the stores */
        const int total = cnt * cnt;
        for (int base = t; base < total; base += 8 * T) {
            float v[8];
#pragma unroll
            for (int q = 0; q < 8; q++) {
                const int idx = base + q * T;
                v[q] = idx < total ? ublk[(size_t)(idx % cnt) + (size_t)(idx / cnt) * a.K] : 0.0f;
            }
#pragma unroll
            for (int q = 0; q < 8; q++) {
                const int idx = base + q * T;
                if (idx < total)
                    su[(idx % cnt) * ldu + idx / cnt] = v[q];
            }
        }
        __syncthreads();
    }
    const int n = blockIdx.x * T + t;
    if (n >= a.N)
        return; /* no barrier below */
    const size_t N = (size_t)a.N;

    for (int i = 0; i < cnt; i += UPD) { /* loads in flight together, as above */
        float v[UPD];
#pragma unroll
        for (int q = 0; q < UPD; q++)
            if (i + q < cnt)
                v[q] = a.Wc[(size_t)(a.i1 + i + q) * N + n];
#pragma unroll
        for (int q = 0; q < UPD; q++)
            if (i + q < cnt)
                sw[(i + q) * T + t] = v[q];
    }
    /* The grid of each column is loaded one column ahead (s_pf, z_pf), so
     * that its latency hides behind the previous column's work; with
     * act-order and static groups nearly every column has another group. */
    int gn = a.cgrp[a.i1];
    float s_pf = a.S[(size_t)gn * N + n], z_pf = a.Z[(size_t)gn * N + n];
    double loss = 0.0;
    for (int i = 0; i < cnt; i++) {
        const int j = a.i1 + i;
        float s, z;
        if (a.dyn && j % a.G == 0) {
            /* the grid from W as it stands (earlier blocks' updates, not this
             * block's), as the reference's find_params(W[:, j:j+G]) */
            const int len = a.K - j < a.G ? a.K - j : a.G;
            const size_t g = (size_t)(j / a.G);
            grid_of(a.Wc + (size_t)j * N + n, N, len, NULL, a.maxq, a.sym, a.scale_f16, &s, &z);
            a.S[g * N + n] = s;
            a.Z[g * N + n] = z;
        } else {
            /* loaded after any grid this thread computed for that group */
            s = s_pf;
            z = z_pf;
        }
        if (i + 1 < cnt) {
            gn = a.cgrp[j + 1];
            s_pf = a.S[(size_t)gn * N + n];
            z_pf = a.Z[(size_t)gn * N + n];
        }
        const float d = U_SMEM ? su[i * ldu + i] : ublk[(size_t)i + (size_t)i * a.K];
        const float x = sw[i * T + t];
        const float q = code_of(x, s, z, (float)a.maxq);
        const float diff = __fsub_rn(x, dequant_of(q, s, z));
        a.Qc[(size_t)j * N + n] = (uint8_t)q;
        loss += (double)__fdiv_rn(__fdiv_rn(__fmul_rn(diff, diff), __fmul_rn(d, d)), 2.0f);
        const float err = __fdiv_rn(diff, d);
        a.E[(size_t)i * N + n] = err;
        /* w1[i+1:] -= err * U[j, i+1:] */
        if (U_SMEM)
            update_row(sw, T, t, su + i * ldu, 1, i + 1, cnt, err);
        else
            update_row(sw, T, t, ublk + i, (size_t)a.K, i + 1, cnt, err);
    }
    a.rowloss[n] += loss;
}

/* ---- the result in the original order ---- */

/* q[n][k] = Qc[invperm[k]][n] and W[n][k] = s * (q - z) with the grid of
 * g_idx[k] (qweight_dequant), through 32x32 tiles. */
__global__ void finish_kernel(const uint8_t *Qc, const float *S, const float *Z, const int32_t *invperm,
                              const int32_t *gidx, uint8_t *Qo, float *Wout, int N, int K)
{
    __shared__ float tw[32][33];
    __shared__ uint8_t tq[32][33];
    const int k0 = blockIdx.x * 32, n0 = blockIdx.y * 32, tx = threadIdx.x;
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
        const int k = k0 + r, n = n0 + tx;
        if (k < K && n < N) {
            const size_t g = (size_t)gidx[k];
            const uint8_t q = Qc[(size_t)invperm[k] * N + n];
            tq[r][tx] = q;
            tw[r][tx] = dequant_of((float)q, S[g * N + n], Z[g * N + n]);
        }
    }
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
        const int n = n0 + r, k = k0 + tx;
        if (k < K && n < N) {
            Qo[(size_t)n * K + k] = tq[tx][r];
            Wout[(size_t)n * K + k] = tw[tx][r];
        }
    }
}

/* ---- host side ---- */

/* Everything one solve holds; freed by solver_free whatever happened. */
struct solver {
    int N, K, G, B, maxq, ngroups, dyn;
    const gptq_params *p;
    cudaStream_t stream;
    cublasHandle_t blas;
    cusolverDnHandle_t dn;
    /* device */
    float *H;          /* [K, K] the caller's H, row-major */
    float *U;          /* [K, K] B, then L^-1, then U (column-major) */
    float *A;          /* [N, K] W row-major as given, then Wc [K][N] */
    float *T;          /* [K][N] W transposed, then the dequantized W [N, K] */
    float *E;          /* [B][N] */
    uint8_t *Qc, *Qo;  /* [K][N] quantization order, [N][K] original order */
    float *S, *Z;      /* [ngroups][N] */
    double *rowloss;   /* [N] */
    int32_t *perm, *invperm, *cgrp, *gidx;
    uint8_t *dead;
    float *diagp;
    int *flag, *info;
    float *potrf_ws;
    int potrf_lwork;
    void *trtri_ws, *trtri_host;
    size_t trtri_dev_bytes, trtri_host_bytes;
    /* host */
    int32_t *h_perm, *h_invperm, *h_cgrp;
    uint8_t *h_dead;
    float *h_diagp;
    double *h_rowloss;
    float mean;
    /* LLMQ_GPTQ_CUDA_TIMING: phase times on stderr */
    int timing;
    double t_last;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* With LLMQ_GPTQ_CUDA_TIMING set: wait for the stream and print the time
 * since the previous mark (a profile of the phases; off by default because
 * the waits serialize host and device). */
static int mark(solver *s, const char *what)
{
    if (!s->timing)
        return 0;
    CUDA_TRY(cudaStreamSynchronize(s->stream));
    double t = now_s();
    fprintf(stderr, "gptq_cuda [%d, %d] %-10s %8.2f ms\n", s->N, s->K, what, 1e3 * (t - s->t_last));
    s->t_last = t;
    return 0;
}

static void solver_free(solver *s)
{
    void *dev[] = {s->H, s->U, s->A, s->T, s->E, s->Qc, s->Qo, s->S, s->Z, s->rowloss, s->perm, s->invperm,
                   s->cgrp, s->gidx, s->dead, s->diagp, s->flag, s->info, s->potrf_ws, s->trtri_ws};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i])
            cudaFree(dev[i]); /* nothing to tell a caller that already has a result or an error */
    if (s->blas)
        cublasDestroy(s->blas);
    if (s->dn)
        cusolverDnDestroy(s->dn);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    free(s->trtri_host);
    free(s->h_perm);
    free(s->h_invperm);
    free(s->h_cgrp);
    free(s->h_dead);
    free(s->h_diagp);
    free(s->h_rowloss);
    cudaGetLastError(); /* leave no sticky error from the cleanup behind */
}

static int dev_alloc(void *pp, size_t bytes, const char *what)
{
    void **p = (void **)pp;
    cudaError_t err = cudaMalloc(p, bytes ? bytes : 16);
    if (err != cudaSuccess) {
        *p = NULL;
        cudaGetLastError(); /* an allocation failure is not sticky; clear it */
        return llmq_fail("gptq_cuda: cudaMalloc of %zu bytes for %s: %s", bytes, what, cudaGetErrorString(err));
    }
    return 0;
}

static int check_params(const gptq_params *p, int out, int in)
{
    if (out <= 0 || in <= 0)
        return llmq_fail("gptq_cuda: bad shape [%d, %d]", out, in);
    if (p->bits < 2 || p->bits > 8)
        return llmq_fail("gptq_cuda: %d bits not supported (2..8)", p->bits);
    if (p->group == 0 || p->group < -1)
        return llmq_fail("gptq_cuda: bad group size %d (> 0, or -1)", p->group);
    if (p->block <= 0)
        return llmq_fail("gptq_cuda: bad block size %d", p->block);
    if (!(p->damp >= 0.0f) || !(p->damp_step > 0.0f) || p->max_retries < 0)
        return llmq_fail("gptq_cuda: bad damping (damp %g, step %g, retries %d)", (double)p->damp,
                         (double)p->damp_step, p->max_retries);
    return 0;
}

static int make_handles(solver *s)
{
    CUDA_TRY(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    CUBLAS_TRY(cublasCreate(&s->blas));
    CUBLAS_TRY(cublasSetStream(s->blas, s->stream));
    /* plain fp32 FMA products: never TF32, so the update rounds like the CPU's */
    CUBLAS_TRY(cublasSetMathMode(s->blas, CUBLAS_DEFAULT_MATH));
    CUSOLVER_TRY(cusolverDnCreate(&s->dn));
    CUSOLVER_TRY(cusolverDnSetStream(s->dn, s->stream));
    CUSOLVER_TRY(cusolverDnSetDeterministicMode(s->dn, CUSOLVER_DETERMINISTIC_RESULTS));
    return 0;
}

static int alloc_device(solver *s)
{
    const size_t N = (size_t)s->N, K = (size_t)s->K, NG = (size_t)s->ngroups;
    if (dev_alloc(&s->H, K * K * sizeof(float), "H") || dev_alloc(&s->U, K * K * sizeof(float), "U") ||
        dev_alloc(&s->A, N * K * sizeof(float), "W") || dev_alloc(&s->T, N * K * sizeof(float), "W^T") ||
        dev_alloc(&s->E, N * (size_t)s->B * sizeof(float), "errors") || dev_alloc(&s->Qc, N * K, "codes") ||
        dev_alloc(&s->Qo, N * K, "codes") || dev_alloc(&s->S, NG * N * sizeof(float), "scales") ||
        dev_alloc(&s->Z, NG * N * sizeof(float), "zeros") || dev_alloc(&s->rowloss, N * sizeof(double), "loss") ||
        dev_alloc(&s->perm, K * sizeof(int32_t), "perm") || dev_alloc(&s->invperm, K * sizeof(int32_t), "perm") ||
        dev_alloc(&s->cgrp, K * sizeof(int32_t), "groups") || dev_alloc(&s->gidx, K * sizeof(int32_t), "g_idx") ||
        dev_alloc(&s->dead, K, "dead") || dev_alloc(&s->diagp, K * sizeof(float), "diag") ||
        dev_alloc(&s->flag, sizeof(int), "flag") || dev_alloc(&s->info, sizeof(int), "info"))
        return -1;
    return 0;
}

/* Upload W and H and refuse NaN/Inf (checked on the device: a host scan of
 * K^2 floats would cost more than the solve's products). */
static int upload_inputs(solver *s, const float *W, const float *H)
{
    const size_t N = (size_t)s->N, K = (size_t)s->K;
    CUDA_TRY(cudaMemcpyAsync(s->A, W, N * K * sizeof(float), cudaMemcpyHostToDevice, s->stream));
    CUDA_TRY(cudaMemcpyAsync(s->H, H, K * K * sizeof(float), cudaMemcpyHostToDevice, s->stream));
    CUDA_TRY(cudaMemsetAsync(s->flag, 0, sizeof(int), s->stream));
    nonfinite_kernel<<<1024, 256, 0, s->stream>>>(s->A, N * K, s->flag, 1);
    LAUNCH_CHECK("gptq_cuda: finite check");
    nonfinite_kernel<<<1024, 256, 0, s->stream>>>(s->H, K * K, s->flag, 2);
    LAUNCH_CHECK("gptq_cuda: finite check");
    int flag = 0;
    CUDA_TRY(cudaMemcpyAsync(&flag, s->flag, sizeof(int), cudaMemcpyDeviceToHost, s->stream));
    CUDA_TRY(cudaStreamSynchronize(s->stream));
    if (flag & 1)
        return llmq_fail("gptq_cuda: the weight [%d, %d] contains NaN or Inf", s->N, s->K);
    if (flag & 2)
        return llmq_fail("gptq_cuda: the Hessian [%d, %d] contains NaN or Inf", s->K, s->K);
    return 0;
}

/* gptq.c's act-order key order: diag H descending, ties lower index first. */
typedef struct {
    float d;
    int32_t i;
} diag_key;

static int cmp_diag_desc(const void *a, const void *b)
{
    const diag_key *x = (const diag_key *)a, *y = (const diag_key *)b;
    if (x->d != y->d)
        return x->d < y->d ? 1 : -1;
    return (x->i > y->i) - (x->i < y->i);
}

/* The host-side bookkeeping of gptq.c steps 2, 4 and 7 (dead channels,
 * permutation, group rows, g_idx) and hinv.c's mean of the permuted
 * diagonal, from H's diagonal alone. */
static int plan(solver *s, const float *H, llmq_qweight *res)
{
    const size_t K = (size_t)s->K;
    const int static_g = s->p->group > 0 && s->p->static_groups;
    s->h_perm = (int32_t *)malloc(K * sizeof(int32_t));
    s->h_invperm = (int32_t *)malloc(K * sizeof(int32_t));
    s->h_cgrp = (int32_t *)malloc(K * sizeof(int32_t));
    s->h_dead = (uint8_t *)malloc(K);
    s->h_diagp = (float *)malloc(K * sizeof(float));
    diag_key *keys = (diag_key *)malloc(K * sizeof(diag_key));
    if (!s->h_perm || !s->h_invperm || !s->h_cgrp || !s->h_dead || !s->h_diagp || !keys) {
        free(keys);
        return llmq_fail("gptq_cuda: out of host memory (K = %d)", s->K);
    }
    for (size_t i = 0; i < K; i++) {
        const float d = H[i * K + i];
        s->h_dead[i] = d == 0.0f;
        keys[i].d = d == 0.0f ? 1.0f : d; /* dead: H[i,i] = 1 */
        keys[i].i = (int32_t)i;
        s->h_diagp[i] = keys[i].d;
        s->h_perm[i] = (int32_t)i;
    }
    if (s->p->act_order) {
        qsort(keys, K, sizeof *keys, cmp_diag_desc);
        for (size_t i = 0; i < K; i++) {
            s->h_perm[i] = keys[i].i;
            s->h_diagp[i] = keys[i].d;
        }
    }
    free(keys);
    double sum = 0.0; /* in hinv.c's order: over the permuted diagonal */
    for (size_t i = 0; i < K; i++) {
        s->h_invperm[s->h_perm[i]] = (int32_t)i;
        sum += s->h_diagp[i];
    }
    s->mean = (float)(sum / (double)s->K);
    for (size_t j = 0; j < K; j++) {
        if (s->p->group == -1)
            s->h_cgrp[j] = 0;
        else if (static_g)
            s->h_cgrp[j] = s->h_perm[j] / s->G;
        else
            s->h_cgrp[j] = (int32_t)j / s->G;
        res->g_idx[s->h_perm[j]] = s->h_cgrp[j];
    }
    CUDA_TRY(cudaMemcpyAsync(s->perm, s->h_perm, K * sizeof(int32_t), cudaMemcpyHostToDevice, s->stream));
    CUDA_TRY(cudaMemcpyAsync(s->invperm, s->h_invperm, K * sizeof(int32_t), cudaMemcpyHostToDevice, s->stream));
    CUDA_TRY(cudaMemcpyAsync(s->cgrp, s->h_cgrp, K * sizeof(int32_t), cudaMemcpyHostToDevice, s->stream));
    CUDA_TRY(cudaMemcpyAsync(s->gidx, res->g_idx, K * sizeof(int32_t), cudaMemcpyHostToDevice, s->stream));
    CUDA_TRY(cudaMemcpyAsync(s->dead, s->h_dead, K, cudaMemcpyHostToDevice, s->stream));
    CUDA_TRY(cudaMemcpyAsync(s->diagp, s->h_diagp, K * sizeof(float), cudaMemcpyHostToDevice, s->stream));
    return 0;
}

/* gptq.c steps 1-4 on W: group -1 grids from W as given, static grids from
 * the dead-zeroed W, then Wc = the permuted, dead-zeroed columns. */
static int prepare_w(solver *s)
{
    const int N = s->N, K = s->K;
    const gptq_params *p = s->p;
    dim3 tb(32, 8), tg(ceil_div((size_t)K, 32), ceil_div((size_t)N, 32));
    transpose_kernel<<<tg, tb, 0, s->stream>>>(s->A, s->T, N, K);
    LAUNCH_CHECK("gptq_cuda: transpose");
    const unsigned rows = ceil_div((size_t)N, 128);
    if (p->group == -1) {
        grids_kernel<<<dim3(rows, 1), 128, 0, s->stream>>>(s->T, NULL, s->S, s->Z, N, K, K, 1, s->maxq, p->sym,
                                                             p->scale_f16);
        LAUNCH_CHECK("gptq_cuda: row grids");
    } else if (p->static_groups) {
        unsigned gy = (unsigned)(s->ngroups < 65535 ? s->ngroups : 65535);
        grids_kernel<<<dim3(rows, gy), 128, 0, s->stream>>>(s->T, s->dead, s->S, s->Z, N, K, s->G, s->ngroups,
                                                              s->maxq, p->sym, p->scale_f16);
        LAUNCH_CHECK("gptq_cuda: static grids");
    }
    unsigned gy = (unsigned)(K < 65535 ? K : 65535);
    permute_cols_kernel<<<dim3(rows, gy), 128, 0, s->stream>>>(s->T, s->A, s->perm, s->dead, N, K);
    LAUNCH_CHECK("gptq_cuda: permute");
    return 0;
}

static int factor_workspace(solver *s)
{
    const int K = s->K;
    CUSOLVER_TRY(cusolverDnSpotrf_bufferSize(s->dn, CUBLAS_FILL_MODE_LOWER, K, s->U, K, &s->potrf_lwork));
    CUSOLVER_TRY(cusolverDnXtrtri_bufferSize(s->dn, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, K, CUDA_R_32F,
                                             s->U, K, &s->trtri_dev_bytes, &s->trtri_host_bytes));
    if (dev_alloc(&s->potrf_ws, (size_t)(s->potrf_lwork > 0 ? s->potrf_lwork : 1) * sizeof(float), "potrf") ||
        dev_alloc(&s->trtri_ws, s->trtri_dev_bytes, "trtri"))
        return -1;
    s->trtri_host = malloc(s->trtri_host_bytes ? s->trtri_host_bytes : 16);
    if (!s->trtri_host)
        return llmq_fail("gptq_cuda: out of host memory for the trtri workspace");
    return 0;
}

/* cuSOLVER's devInfo after a factorization: 0 = done, > 0 = not positive
 * definite / singular (retry with more damping), < 0 = a bad argument. */
static int read_info(solver *s, const char *what, int *info)
{
    CUDA_TRY(cudaMemcpyAsync(info, s->info, sizeof(int), cudaMemcpyDeviceToHost, s->stream));
    CUDA_TRY(cudaStreamSynchronize(s->stream));
    if (*info < 0)
        return llmq_fail("gptq_cuda: %s: argument %d is invalid", what, -*info);
    return 0;
}

/* One attempt at U with diagonal damping dval: 1 done, 0 failed (retry). */
static int factor_once(solver *s, float dval, int *ok)
{
    const int K = s->K;
    const size_t KK = (size_t)K * K;
    unsigned gx = ceil_div((size_t)K, 256), gy = (unsigned)(K < 65535 ? K : 65535);
    gather_b_kernel<<<dim3(gx, gy), 256, 0, s->stream>>>(s->H, s->U, s->perm, s->diagp, dval, K);
    LAUNCH_CHECK("gptq_cuda: gather H");
    int info = 0;
    CUSOLVER_TRY(cusolverDnSpotrf(s->dn, CUBLAS_FILL_MODE_LOWER, K, s->U, K, s->potrf_ws, s->potrf_lwork, s->info));
    if (read_info(s, "cusolverDnSpotrf", &info) < 0 || mark(s, "potrf") < 0)
        return -1;
    *ok = 0;
    if (info > 0)
        return 0;
    CUSOLVER_TRY(cusolverDnXtrtri(s->dn, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, K, CUDA_R_32F, s->U, K,
                                  s->trtri_ws, s->trtri_dev_bytes, s->trtri_host, s->trtri_host_bytes, s->info));
    if (read_info(s, "cusolverDnXtrtri", &info) < 0 || mark(s, "trtri") < 0)
        return -1;
    if (info > 0)
        return 0;
    reverse_kernel<<<1024, 256, 0, s->stream>>>(s->U, KK);
    LAUNCH_CHECK("gptq_cuda: reverse");
    *ok = 1;
    return 0;
}

/* gptq_hinv's retry loop, with its damping values to the bit. */
static int inverse_factor(solver *s, gptq_stats *st)
{
    const gptq_params *p = s->p;
    if (factor_workspace(s) < 0)
        return -1;
    for (int r = 0; r <= p->max_retries; r++) {
        const float frac = (float)((double)p->damp + (double)r * (double)p->damp_step);
        int ok = 0;
        if (factor_once(s, frac * s->mean, &ok) < 0)
            return -1;
        if (ok) {
            st->damp = frac;
            st->retries = r;
            return 0;
        }
    }
    return llmq_fail("gptq_cuda: Hessian not positive definite even with damping %g of mean(diag H) (%d retries)",
                     (double)p->damp + (double)p->max_retries * (double)p->damp_step, p->max_retries);
}

/* Threads per block kernel CTA (each owns a row) and whether U's block fits
 * in shared memory beside the rows' block copies. 128 rows = four warps, one
 * per scheduler, share one staged U block. */
static int block_config(solver *s, int *threads, bool *u_smem, size_t *smem)
{
    int dev = 0, optin = 0;
    CUDA_TRY(cudaGetDevice(&dev));
    CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    const size_t B = (size_t)s->B, ldu = B | 1;
    for (int t = 128; t >= 32; t /= 2)
        if ((B * t + B * ldu) * sizeof(float) <= (size_t)optin) {
            *threads = t;
            *u_smem = true;
            *smem = (B * t + B * ldu) * sizeof(float);
            return 0;
        }
    if (B * 32 * sizeof(float) <= (size_t)optin) {
        *threads = 32;
        *u_smem = false;
        *smem = B * 32 * sizeof(float);
        return 0;
    }
    return llmq_fail("gptq_cuda: block %d too wide for shared memory (%d bytes)", s->B, optin);
}

/* Profiling only: wait for the stream and add the time since *t0 to *acc. */
static int split_time(solver *s, double *acc, double *t0)
{
    if (!s->timing)
        return 0;
    CUDA_TRY(cudaStreamSynchronize(s->stream));
    const double t = now_s();
    *acc += t - *t0;
    *t0 = t;
    return 0;
}

/* gptq.c step 6: the blocks, each one kernel and one sgemm. */
static int run_blocks(solver *s)
{
    const int N = s->N, K = s->K;
    int threads = 0;
    bool u_smem = false;
    size_t smem = 0;
    if (block_config(s, &threads, &u_smem, &smem) < 0)
        return -1;
    if (u_smem)
        CUDA_TRY(cudaFuncSetAttribute(block_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    else
        CUDA_TRY(cudaFuncSetAttribute(block_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CUDA_TRY(cudaMemsetAsync(s->rowloss, 0, (size_t)N * sizeof(double), s->stream));

    block_args a;
    a.Wc = s->A;
    a.U = s->U;
    a.E = s->E;
    a.Qc = s->Qc;
    a.S = s->S;
    a.Z = s->Z;
    a.cgrp = s->cgrp;
    a.rowloss = s->rowloss;
    a.N = N;
    a.K = K;
    a.G = s->G;
    a.maxq = s->maxq;
    a.sym = s->p->sym;
    a.scale_f16 = s->p->scale_f16;
    a.dyn = s->dyn;
    const float minus1 = -1.0f, one = 1.0f;
    const unsigned ctas = ceil_div((size_t)N, (size_t)threads);
    double t_kernel = 0.0, t_gemm = 0.0, t0 = 0.0;
    if (split_time(s, &t_kernel, &t0) < 0)
        return -1;
    t_kernel = 0.0;
    for (int i1 = 0; i1 < K; i1 += s->B) {
        const int i2 = i1 + s->B < K ? i1 + s->B : K;
        a.i1 = i1;
        a.cnt = i2 - i1;
        const size_t bytes = ((size_t)a.cnt * threads + (u_smem ? (size_t)a.cnt * (size_t)(a.cnt | 1) : 0)) *
                             sizeof(float);
        if (u_smem)
            block_kernel<true><<<ctas, threads, bytes, s->stream>>>(a);
        else
            block_kernel<false><<<ctas, threads, bytes, s->stream>>>(a);
        LAUNCH_CHECK("gptq_cuda: block");
        if (split_time(s, &t_kernel, &t0) < 0)
            return -1;
        if (i2 < K) /* W[:, i2:] -= E @ U[i1:i2, i2:] */
            CUBLAS_TRY(cublasSgemm(s->blas, CUBLAS_OP_N, CUBLAS_OP_N, N, K - i2, i2 - i1, &minus1, s->E, N,
                                   s->U + i1 + (size_t)i2 * K, K, &one, s->A + (size_t)i2 * N, N));
        if (split_time(s, &t_gemm, &t0) < 0)
            return -1;
    }
    if (s->timing)
        fprintf(stderr, "gptq_cuda [%d, %d] (blocks: kernels %.2f ms, sgemm %.2f ms, %d threads/CTA%s)\n", N, K,
                1e3 * t_kernel, 1e3 * t_gemm, threads, u_smem ? "" : ", U from global memory");
    return 0;
}

/* gptq.c step 7: codes and dequantized W in the original order, back to the
 * host with the grids and the loss (summed in row order, as the CPU). */
static int download(solver *s, float *W, llmq_qweight *res, gptq_stats *st)
{
    const size_t N = (size_t)s->N, K = (size_t)s->K, NG = (size_t)s->ngroups;
    dim3 tb(32, 8), tg(ceil_div(K, 32), ceil_div(N, 32));
    finish_kernel<<<tg, tb, 0, s->stream>>>(s->Qc, s->S, s->Z, s->invperm, s->gidx, s->Qo, s->T, (int)N, (int)K);
    LAUNCH_CHECK("gptq_cuda: finish");
    s->h_rowloss = (double *)malloc(N * sizeof(double));
    if (!s->h_rowloss)
        return llmq_fail("gptq_cuda: out of host memory");
    CUDA_TRY(cudaMemcpyAsync(W, s->T, N * K * sizeof(float), cudaMemcpyDeviceToHost, s->stream));
    CUDA_TRY(cudaMemcpyAsync(res->q, s->Qo, N * K, cudaMemcpyDeviceToHost, s->stream));
    CUDA_TRY(cudaMemcpyAsync(res->scales, s->S, NG * N * sizeof(float), cudaMemcpyDeviceToHost, s->stream));
    CUDA_TRY(cudaMemcpyAsync(res->zeros, s->Z, NG * N * sizeof(float), cudaMemcpyDeviceToHost, s->stream));
    CUDA_TRY(cudaMemcpyAsync(s->h_rowloss, s->rowloss, N * sizeof(double), cudaMemcpyDeviceToHost, s->stream));
    CUDA_TRY(cudaStreamSynchronize(s->stream));
    st->loss = 0.0;
    for (size_t n = 0; n < N; n++)
        st->loss += s->h_rowloss[n];
    return 0;
}

static int solve(solver *s, float *W, const float *H, llmq_qweight *res, gptq_stats *st)
{
    s->t_last = now_s();
    if (make_handles(s) < 0 || alloc_device(s) < 0 || mark(s, "setup") < 0)
        return -1;
    if (upload_inputs(s, W, H) < 0 || mark(s, "upload") < 0)
        return -1;
    if (plan(s, H, res) < 0 || prepare_w(s) < 0 || mark(s, "prepare") < 0)
        return -1;
    if (inverse_factor(s, st) < 0 || mark(s, "factor") < 0)
        return -1;
    if (run_blocks(s) < 0 || mark(s, "blocks") < 0)
        return -1;
    if (download(s, W, res, st) < 0 || mark(s, "download") < 0)
        return -1;
    return 0;
}

extern "C" int gptq_cuda_available(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: not an error */
        return 0;
    }
    return n > 0;
}

extern "C" int gptq_solve_cuda(float *W, int out, int in, float *H, const gptq_params *p, llmq_qweight *res,
                               gptq_stats *st)
{
    memset(res, 0, sizeof *res);
    if (check_params(p, out, in) < 0)
        return -1;
    if (qweight_alloc(res, out, in, p->bits, p->group, p->sym) < 0)
        return llmq_wrap("gptq_cuda");
    solver s;
    memset(&s, 0, sizeof s);
    s.N = out;
    s.K = in;
    s.G = p->group > 0 ? p->group : in;
    s.B = p->block;
    s.maxq = (1 << p->bits) - 1;
    s.ngroups = res->ngroups;
    s.dyn = p->group > 0 && !p->static_groups;
    s.p = p;
    const char *tm = getenv("LLMQ_GPTQ_CUDA_TIMING");
    s.timing = tm && *tm && strcmp(tm, "0") != 0;
    gptq_stats local;
    memset(&local, 0, sizeof local);
    const int rc = solve(&s, W, H, res, &local);
    solver_free(&s);
    if (rc < 0) {
        qweight_free(res);
        return -1;
    }
    if (st)
        *st = local;
    return 0;
}
