/* W8A8: per-token int8 quantization fused into its producers, and the int8
 * linear through cuBLASLt (kernels/w8a8.h says what each function computes,
 * quant/w8a8_ref.h the reference arithmetic).
 *
 * Producers: one block per row; each thread owns the 16-byte chunks
 * ch = threadIdx.x + i * blockDim.x of its row in every pass, so the row's
 * values kept in shared memory between passes need no barrier beyond the
 * block reductions. Divisions are IEEE (__fdiv_rn) and the float -> int
 * conversion rounds half to even (__float2int_rn), as rintf in the
 * reference: an approximate quotient near .5 would move a code by one. */
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda_common.cuh"
#include "kernels/w8a8.h"

namespace {

/* ---- P values of T <-> floats: one 16-byte vector, or one element ---- */

template <typename T, int P> __device__ __forceinline__ void load_p(const T *p, float (&f)[P])
{
    if constexpr (P == 1) {
        f[0] = to_f32(*p);
    } else {
        static_assert(P == Vec16<T>::N, "P is one 16-byte vector");
        Vec16<T> v = load16(p);
#pragma unroll
        for (int j = 0; j < P; j++)
            f[j] = to_f32(v.v[j]);
    }
}

template <typename T, int P> __device__ __forceinline__ void store_p(T *p, const float (&f)[P])
{
    if constexpr (P == 1) {
        *p = from_f32<T>(f[0]);
    } else {
        Vec16<T> v;
#pragma unroll
        for (int j = 0; j < P; j++)
            v.v[j] = from_f32<T>(f[j]);
        store16(p, v);
    }
}

/* P values at columns c.. of one row of a W8A8 linear's output before its
 * rescale (acc, its row's token scale st, the channel scales s_ch), as
 * llmq_w8a8_rescale and quant/w8a8_ref.h round them: rnd((acc * st) * s_ch).
 * acc + c is 16-byte aligned when P >= 4 (rows a multiple of P long). */
template <typename T, int P>
__device__ __forceinline__ void load_acc(const int32_t *acc, const float *s_ch, float st, int c, float (&f)[P])
{
    if constexpr (P % 4 == 0) {
#pragma unroll
        for (int j = 0; j < P; j += 4) {
            const int4 a = *reinterpret_cast<const int4 *>(acc + c + j);
            const float4 sc = __ldg(reinterpret_cast<const float4 *>(s_ch + c + j));
            f[j] = round_to<T>(__fmul_rn(__fmul_rn((float)a.x, st), sc.x));
            f[j + 1] = round_to<T>(__fmul_rn(__fmul_rn((float)a.y, st), sc.y));
            f[j + 2] = round_to<T>(__fmul_rn(__fmul_rn((float)a.z, st), sc.z));
            f[j + 3] = round_to<T>(__fmul_rn(__fmul_rn((float)a.w, st), sc.w));
        }
    } else {
#pragma unroll
        for (int j = 0; j < P; j++)
            f[j] = round_to<T>(__fmul_rn(__fmul_rn((float)acc[c + j], st), __ldg(s_ch + c + j)));
    }
}

/* A W8A8 linear's output not yet rescaled (its int32 product): what the
 * ACC producers read instead of a dt tensor. tok: the row scales, read by
 * each row's block before it writes its own (they may be the array the
 * producer writes its new scales to). */
struct AccIn {
    const int32_t *acc;
    const float *tok, *ch;
};

__device__ __forceinline__ uint32_t q8(float v, float s)
{
    int q = __float2int_rn(__fdiv_rn(v, s));
    q = max(-127, min(127, q));
    return (uint32_t)q & 0xFFu;
}

/* P codes: 1, 4 or 8 bytes in one store. */
template <int P> __device__ __forceinline__ void store_q(int8_t *p, const float (&f)[P], float s)
{
    if constexpr (P == 1) {
        *p = (int8_t)q8(f[0], s);
    } else if constexpr (P == 4) {
        *reinterpret_cast<uint32_t *>(p) = q8(f[0], s) | q8(f[1], s) << 8 | q8(f[2], s) << 16 | q8(f[3], s) << 24;
    } else {
        static_assert(P == 8, "P is 1, 4 or 8");
        uint2 u;
        u.x = q8(f[0], s) | q8(f[1], s) << 8 | q8(f[2], s) << 16 | q8(f[3], s) << 24;
        u.y = q8(f[4], s) | q8(f[5], s) << 8 | q8(f[6], s) << 16 | q8(f[7], s) << 24;
        *reinterpret_cast<uint2 *>(p) = u;
    }
}

/* The row's values y (already in T, so exact) are in cache; mx is this
 * thread's max |y|. Writes the row's scale and codes. */
template <typename T, int P>
__device__ __forceinline__ void quantize_cached(const T *cache, int chunks, float mx, float *shm, int8_t *qrow,
                                                float *scale)
{
    mx = block_max(mx, shm);
    const float s = __fdiv_rn(fmaxf(mx, 1e-5f), 127.0f);
    if (threadIdx.x == 0)
        *scale = s;
    for (int ch = threadIdx.x; ch < chunks; ch += blockDim.x) {
        float f[P];
        load_p<T, P>(cache + ch * P, f);
        store_q<P>(qrow + (size_t)ch * P, f, s);
    }
}

} // namespace

extern __shared__ __align__(16) unsigned char w8a8_smem[];

namespace {

template <typename T, bool VEC> __global__ void quant_rows_kernel(int8_t *q, float *scale, const T *x, int cols)
{
    pdl_wait(); /* launched with PDL (decode chains): the input is the kernel before's */
    pdl_trigger();
    __shared__ float shm[32];
    T *cache = reinterpret_cast<T *>(w8a8_smem);
    constexpr int P = VEC ? Vec16<T>::N : 1;
    const size_t row = blockIdx.x;
    const T *xr = x + row * cols;
    const int chunks = cols / P;
    float mx = 0.0f;
    for (int ch = threadIdx.x; ch < chunks; ch += blockDim.x) {
        float f[P];
        load_p<T, P>(xr + ch * P, f);
#pragma unroll
        for (int j = 0; j < P; j++)
            mx = fmaxf(mx, fabsf(f[j]));
        store_p<T, P>(cache + ch * P, f);
    }
    quantize_cached<T, P>(cache, chunks, mx, shm, q + row * cols, scale + row);
}

template <typename T, bool VEC, bool ADD, bool ACC = false>
__global__ void rmsnorm_quant_kernel(int8_t *q, float *scale, T *x, const T *delta, const T *__restrict__ w, int dim,
                                     float eps, AccIn dacc)
{
    pdl_wait(); /* launched with PDL (decode chains): the input is the kernel before's */
    pdl_trigger();
    __shared__ float shm[32];
    T *cache = reinterpret_cast<T *>(w8a8_smem);
    constexpr int P = VEC ? Vec16<T>::N : 1;
    const size_t row = blockIdx.x;
    T *xr = x + row * dim;
    const int chunks = dim / P;
    const float dtok = ACC ? dacc.tok[row] : 0.0f; /* before this row's scale is written */

    float ss = 0.0f;
    for (int ch = threadIdx.x; ch < chunks; ch += blockDim.x) {
        float f[P];
        load_p<T, P>(xr + ch * P, f);
        if (ADD) {
            float d[P];
            if constexpr (ACC)
                load_acc<T, P>(dacc.acc + row * dim, dacc.ch, dtok, ch * P, d);
            else
                load_p<T, P>(delta + row * dim + ch * P, d);
#pragma unroll
            for (int j = 0; j < P; j++)
                f[j] = round_to<T>(f[j] + d[j]);
            store_p<T, P>(xr + ch * P, f);
        }
        store_p<T, P>(cache + ch * P, f);
#pragma unroll
        for (int j = 0; j < P; j++)
            ss += f[j] * f[j];
    }
    ss = block_sum(ss, shm);
    const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fdiv_rn(ss, (float)dim) + eps));

    float mx = 0.0f;
    for (int ch = threadIdx.x; ch < chunks; ch += blockDim.x) {
        float f[P], wf[P];
        load_p<T, P>(cache + ch * P, f);
        load_p<T, P>(w + ch * P, wf);
#pragma unroll
        for (int j = 0; j < P; j++) {
            f[j] = round_to<T>(wf[j] * round_to<T>(f[j] * inv));
            mx = fmaxf(mx, fabsf(f[j]));
        }
        store_p<T, P>(cache + ch * P, f);
    }
    quantize_cached<T, P>(cache, chunks, mx, shm, q + row * dim, scale + row);
}

template <typename T, bool VEC, bool ACC = false>
__global__ void silu_mul_quant_kernel(int8_t *q, float *scale, const T *__restrict__ gate, const T *__restrict__ up,
                                      int ld, int cols, AccIn gacc, AccIn uacc)
{
    pdl_wait(); /* launched with PDL (decode chains): the input is the kernel before's */
    pdl_trigger();
    __shared__ float shm[32];
    T *cache = reinterpret_cast<T *>(w8a8_smem);
    constexpr int P = VEC ? Vec16<T>::N : 1;
    const size_t row = blockIdx.x;
    const int chunks = cols / P;
    const float gtok = ACC ? gacc.tok[row] : 0.0f, utok = ACC ? uacc.tok[row] : 0.0f; /* before scale[row] is written */
    float mx = 0.0f;
    for (int ch = threadIdx.x; ch < chunks; ch += blockDim.x) {
        float g[P], u[P];
        if constexpr (ACC) {
            load_acc<T, P>(gacc.acc + row * ld, gacc.ch, gtok, ch * P, g);
            load_acc<T, P>(uacc.acc + row * ld, uacc.ch, utok, ch * P, u);
        } else {
            load_p<T, P>(gate + row * ld + ch * P, g);
            load_p<T, P>(up + row * ld + ch * P, u);
        }
#pragma unroll
        for (int j = 0; j < P; j++) {
            /* IEEE division and the accurate expf, as the C reference. */
            g[j] = round_to<T>(round_to<T>(g[j] / (1.0f + expf(-g[j]))) * u[j]);
            mx = fmaxf(mx, fabsf(g[j]));
        }
        store_p<T, P>(cache + ch * P, g);
    }
    quantize_cached<T, P>(cache, chunks, mx, shm, q + row * cols, scale + row);
}

} // namespace

/* Threads for `chunks` per row: as even a share per thread as 1024 threads
 * allow, a multiple of 32. */
static int row_threads(int chunks)
{
    int per = (chunks + 1023) / 1024;
    int t = (chunks + per - 1) / per;
    return t < 32 ? 32 : (t + 31) / 32 * 32;
}

/* Raise the dynamic shared memory limit of `kernel` when a row needs more
 * than the default 48 KB. */
template <typename K> static int smem_prepare(K kernel, size_t bytes, const char *what)
{
    if (bytes <= 48 * 1024)
        return 0;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return llmq_fail("%s: a row of %zu bytes does not fit in shared memory: %s", what, bytes,
                         cudaGetErrorString(e));
    return 0;
}

static int check_rows(const char *what, int rows, int cols, const void *q, const void *scale)
{
    if (rows < 0 || cols <= 0)
        return llmq_fail("%s: bad shape %d x %d", what, rows, cols);
    if (rows > 0 && (!q || !scale))
        return llmq_fail("%s: NULL output", what);
    return 0;
}

extern "C" int llmq_quant_per_token(void *stream, llmq_dtype dt, int8_t *q, float *scale, const void *x, int rows,
                                    int cols)
{
    if (check_rows("quant_per_token", rows, cols, q, scale))
        return -1;
    if (rows == 0)
        return 0;
    cudaStream_t st = (cudaStream_t)stream;
    DISPATCH_DT(dt, "quant_per_token", {
        constexpr int N = Vec16<T>::N;
        const bool vec = cols % N == 0 && aligned16(x) && aligned16(q);
        const int chunks = vec ? cols / N : cols;
        const size_t smem = (size_t)cols * sizeof(T);
        if (vec) {
            if (smem_prepare(quant_rows_kernel<T, true>, smem, "quant_per_token"))
                return -1;
            LAUNCH_TRY("quant_per_token", launch_pdl(quant_rows_kernel<T, true>, dim3(rows), dim3(row_threads(chunks)),
                                                     smem, st, NULL, 0, q, scale, (const T *)x, cols));
        } else {
            if (smem_prepare(quant_rows_kernel<T, false>, smem, "quant_per_token"))
                return -1;
            LAUNCH_TRY("quant_per_token", launch_pdl(quant_rows_kernel<T, false>, dim3(rows), dim3(row_threads(chunks)),
                                                     smem, st, NULL, 0, q, scale, (const T *)x, cols));
        }
    });
    return 0;
}

template <typename T, bool VEC, bool ADD, bool ACC = false>
static int launch_rmsnorm_quant(cudaStream_t st, int8_t *q, float *scale, T *x, const T *delta, const T *w, int rows,
                                int dim, float eps, AccIn dacc = AccIn{})
{
    constexpr int P = VEC ? Vec16<T>::N : 1;
    const size_t smem = (size_t)dim * sizeof(T);
    if (smem_prepare(rmsnorm_quant_kernel<T, VEC, ADD, ACC>, smem, "rmsnorm_quant"))
        return -1;
    LAUNCH_TRY("rmsnorm_quant", launch_pdl(rmsnorm_quant_kernel<T, VEC, ADD, ACC>, dim3(rows),
                                           dim3(row_threads(dim / P)), smem, st, NULL, 0, q, scale, x, delta, w, dim,
                                           eps, dacc));
    return 0;
}

extern "C" int llmq_rmsnorm_quant(void *stream, llmq_dtype dt, int8_t *q, float *scale, void *x, const void *delta,
                                  const void *w, int rows, int dim, float eps)
{
    if (check_rows("rmsnorm_quant", rows, dim, q, scale))
        return -1;
    if (rows == 0)
        return 0;
    cudaStream_t st = (cudaStream_t)stream;
    DISPATCH_DT(dt, "rmsnorm_quant", {
        constexpr int N = Vec16<T>::N;
        const bool vec = dim % N == 0 && aligned16(x) && aligned16(w) && aligned16(q) && (!delta || aligned16(delta));
        T *xt = (T *)x;
        const T *dt_ = (const T *)delta, *wt = (const T *)w;
        if (vec && delta)
            return launch_rmsnorm_quant<T, true, true>(st, q, scale, xt, dt_, wt, rows, dim, eps);
        if (vec)
            return launch_rmsnorm_quant<T, true, false>(st, q, scale, xt, dt_, wt, rows, dim, eps);
        if (delta)
            return launch_rmsnorm_quant<T, false, true>(st, q, scale, xt, dt_, wt, rows, dim, eps);
        return launch_rmsnorm_quant<T, false, false>(st, q, scale, xt, dt_, wt, rows, dim, eps);
    });
    return 0;
}

extern "C" int llmq_silu_mul_quant(void *stream, llmq_dtype dt, int8_t *q, float *scale, const void *gate,
                                   const void *up, int ld, int rows, int cols)
{
    if (check_rows("silu_mul_quant", rows, cols, q, scale))
        return -1;
    if (ld < cols)
        return llmq_fail("silu_mul_quant: row stride %d < cols %d", ld, cols);
    if (rows == 0)
        return 0;
    cudaStream_t st = (cudaStream_t)stream;
    DISPATCH_DT(dt, "silu_mul_quant", {
        constexpr int N = Vec16<T>::N;
        const bool vec = cols % N == 0 && ld % N == 0 && aligned16(gate) && aligned16(up) && aligned16(q);
        const int chunks = vec ? cols / N : cols;
        const size_t smem = (size_t)cols * sizeof(T);
        const T *g = (const T *)gate, *u = (const T *)up;
        if (vec) {
            if (smem_prepare(silu_mul_quant_kernel<T, true>, smem, "silu_mul_quant"))
                return -1;
            LAUNCH_TRY("silu_mul_quant", launch_pdl(silu_mul_quant_kernel<T, true>, dim3(rows),
                                                    dim3(row_threads(chunks)), smem, st, NULL, 0, q, scale, g, u, ld,
                                                    cols, AccIn{}, AccIn{}));
        } else {
            if (smem_prepare(silu_mul_quant_kernel<T, false>, smem, "silu_mul_quant"))
                return -1;
            LAUNCH_TRY("silu_mul_quant", launch_pdl(silu_mul_quant_kernel<T, false>, dim3(rows),
                                                    dim3(row_threads(chunks)), smem, st, NULL, 0, q, scale, g, u, ld,
                                                    cols, AccIn{}, AccIn{}));
        }
    });
    return 0;
}

/* ---- the same producers fed by W8A8 linears' int32 products ---- */

extern "C" int llmq_rmsnorm_quant_acc(void *stream, llmq_dtype dt, int8_t *q, float *scale, void *x,
                                      const int32_t *delta, const float *d_tok, const float *d_ch, const void *w,
                                      int rows, int dim, float eps)
{
    if (check_rows("rmsnorm_quant_acc", rows, dim, q, scale))
        return -1;
    if (!delta || !d_tok || !d_ch)
        return llmq_fail("rmsnorm_quant_acc: no int32 delta");
    if (rows == 0)
        return 0;
    cudaStream_t st = (cudaStream_t)stream;
    const AccIn d = {delta, d_tok, d_ch};
    DISPATCH_DT(dt, "rmsnorm_quant_acc", {
        constexpr int N = Vec16<T>::N;
        const bool vec =
            dim % N == 0 && aligned16(x) && aligned16(w) && aligned16(q) && aligned16(delta) && aligned16(d_ch);
        T *xt = (T *)x;
        const T *wt = (const T *)w;
        if (vec)
            return launch_rmsnorm_quant<T, true, true, true>(st, q, scale, xt, NULL, wt, rows, dim, eps, d);
        return launch_rmsnorm_quant<T, false, true, true>(st, q, scale, xt, NULL, wt, rows, dim, eps, d);
    });
    return 0;
}

extern "C" int llmq_silu_mul_quant_acc(void *stream, llmq_dtype dt, int8_t *q, float *scale, const int32_t *gate,
                                       const float *g_ch, const int32_t *up, const float *u_ch, const float *s_tok,
                                       int rows, int cols)
{
    if (check_rows("silu_mul_quant_acc", rows, cols, q, scale))
        return -1;
    if (!gate || !up || !g_ch || !u_ch || !s_tok)
        return llmq_fail("silu_mul_quant_acc: no int32 gate/up");
    if (rows == 0)
        return 0;
    cudaStream_t st = (cudaStream_t)stream;
    const AccIn g = {gate, s_tok, g_ch}, u = {up, s_tok, u_ch};
    DISPATCH_DT(dt, "silu_mul_quant_acc", {
        constexpr int N = Vec16<T>::N;
        const bool vec = cols % N == 0 && aligned16(gate) && aligned16(up) && aligned16(q) && aligned16(g_ch) &&
                         aligned16(u_ch);
        const int chunks = vec ? cols / N : cols;
        const size_t smem = (size_t)cols * sizeof(T);
        if (vec) {
            if (smem_prepare(silu_mul_quant_kernel<T, true, true>, smem, "silu_mul_quant_acc"))
                return -1;
            LAUNCH_TRY("silu_mul_quant_acc", launch_pdl(silu_mul_quant_kernel<T, true, true>, dim3(rows),
                                                        dim3(row_threads(chunks)), smem, st, NULL, 0, q, scale,
                                                        (const T *)NULL, (const T *)NULL, cols, cols, g, u));
        } else {
            if (smem_prepare(silu_mul_quant_kernel<T, false, true>, smem, "silu_mul_quant_acc"))
                return -1;
            LAUNCH_TRY("silu_mul_quant_acc", launch_pdl(silu_mul_quant_kernel<T, false, true>, dim3(rows),
                                                        dim3(row_threads(chunks)), smem, st, NULL, 0, q, scale,
                                                        (const T *)NULL, (const T *)NULL, cols, cols, g, u));
        }
    });
    return 0;
}

/* ---- int32 -> dt rescale: y = ((float)acc * s_tok[m]) * s_ch[n] ---- */

namespace {

/* Four columns per thread (acc and s_ch as 16-byte vectors) when VEC; rows
 * over blockIdx.y (grid-stride). */
template <typename T, bool VEC>
__global__ void rescale_kernel(T *__restrict__ y, const int32_t *__restrict__ acc, const float *__restrict__ s_tok,
                               const float *__restrict__ s_ch, int M, int N)
{
    const int per = VEC ? 4 : 1;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c * per >= N)
        return;
    for (int m = blockIdx.y; m < M; m += gridDim.y) {
        const size_t off = (size_t)m * N + (size_t)c * per;
        const float st = __ldg(s_tok + m);
        if (VEC) {
            const int4 a = __ldcs(reinterpret_cast<const int4 *>(acc + off)); /* read once: evict first */
            const float4 sc = __ldg(reinterpret_cast<const float4 *>(s_ch) + c);
            float o[4] = {(float)a.x * st * sc.x, (float)a.y * st * sc.y, (float)a.z * st * sc.z,
                          (float)a.w * st * sc.w};
            if constexpr (sizeof(T) == 4) {
                *reinterpret_cast<float4 *>(y + off) = make_float4(o[0], o[1], o[2], o[3]);
            } else {
                T t[4];
#pragma unroll
                for (int j = 0; j < 4; j++)
                    t[j] = from_f32<T>(o[j]);
                *reinterpret_cast<uint2 *>(y + off) = *reinterpret_cast<const uint2 *>(t);
            }
        } else {
            y[off] = from_f32<T>((float)acc[off] * st * s_ch[c]);
        }
    }
}

} // namespace

extern "C" int llmq_w8a8_rescale(void *stream, llmq_dtype dt, void *y, const int32_t *acc, const float *s_tok,
                                 const float *s_ch, int M, int N)
{
    if (M < 0 || N <= 0)
        return llmq_fail("w8a8_rescale: bad shape %d x %d", M, N);
    if (M == 0)
        return 0;
    cudaStream_t st = (cudaStream_t)stream;
    DISPATCH_DT(dt, "w8a8_rescale", {
        const bool vec = N % 4 == 0 && aligned16(acc) && aligned16(s_ch) && ((uintptr_t)y & (4 * sizeof(T) - 1)) == 0;
        const int cols = vec ? N / 4 : N, threads = 256;
        dim3 grid(ceil_div((size_t)cols, threads), (unsigned)(M < 65535 ? M : 65535));
        if (vec)
            rescale_kernel<T, true><<<grid, threads, 0, st>>>((T *)y, acc, s_tok, s_ch, M, N);
        else
            rescale_kernel<T, false><<<grid, threads, 0, st>>>((T *)y, acc, s_tok, s_ch, M, N);
        LAUNCH_CHECK("w8a8_rescale");
    });
    return 0;
}

/* ---- cuBLASLt int8 GEMM ----
 *
 * Row-major y [M,N] = x [M,K] . w [N,K]^T is, in cuBLASLt's column-major
 * terms, D (N x M, ld N) = op(A) . B with A = w (K x N, ld K, op = T) and
 * B = x (K x M, ld K, op = N): the "TN" form its int8 kernels require.
 * Descriptors, layouts and the heuristic's algorithm are cached per shape
 * (a heuristic query costs host time comparable to a small GEMM). */

enum { KIND_I32 = 0, KIND_FUSED = 1 };
enum { N_PLANS = 32 };
static const size_t WS_BYTES = 32u << 20;

struct lt_plan {
    bool valid;  /* descriptors and algorithm set */
    bool failed; /* cuBLASLt has no algorithm for this key: do not ask again */
    int kind, M, N, K;
    llmq_dtype dt;
    unsigned align_a, align_b, align_d;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
};

struct llmq_w8a8_ctx {
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *ws;
    int32_t *scratch;
    size_t scratch_bytes, scratch_limit;
    int epi;
    int fused_ok;
    const char *last;
    lt_plan plans[N_PLANS];
    int next_plan;
};

/* Largest power of two (<= 256) that divides the address. */
static unsigned ptr_align(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    unsigned al = 256;
    while (al > 1 && (a & (al - 1)))
        al >>= 1;
    return al;
}

static cudaDataType_t cuda_type(llmq_dtype dt)
{
    return dt == LLMQ_F16 ? CUDA_R_16F : dt == LLMQ_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static void plan_release(lt_plan *p)
{
    if (p->la)
        cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb)
        cublasLtMatrixLayoutDestroy(p->lb);
    if (p->ld)
        cublasLtMatrixLayoutDestroy(p->ld);
    if (p->desc)
        cublasLtMatmulDescDestroy(p->desc);
    memset(p, 0, sizeof *p);
}

#define LT_TRY(call)                                                                                               \
    do {                                                                                                           \
        cublasStatus_t st_ = (call);                                                                               \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                                        \
            plan_release(p);                                                                                       \
            return llmq_fail("%s (%s:%d): %s", #call, __FILE__, __LINE__, cublas_status_name(st_));              \
        }                                                                                                          \
    } while (0)

/* What a plan is looked up by: the problem and the pointers' alignments. */
static void plan_set_key(lt_plan *p, int kind, llmq_dtype dt, int M, int N, int K, unsigned al_a, unsigned al_b,
                         unsigned al_d)
{
    p->kind = kind;
    p->dt = dt;
    p->M = M;
    p->N = N;
    p->K = K;
    p->align_a = al_a;
    p->align_b = al_b;
    p->align_d = al_d;
}

/* Build descriptors and pick an algorithm; on failure p is left empty.
 * scale_a / scale_b: device pointers the fused kind's heuristic sees. */
static int plan_make(llmq_w8a8_ctx *c, lt_plan *p, int kind, llmq_dtype dt, int M, int N, int K, unsigned al_a,
                     unsigned al_b, unsigned al_d, const void *scale_a, const void *scale_b)
{
    memset(p, 0, sizeof *p);
    LT_TRY(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32I, kind == KIND_I32 ? CUDA_R_32I : CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (kind == KIND_FUSED) {
        const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scale_a, sizeof scale_a));
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scale_b, sizeof scale_b));
    }
    LT_TRY(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_8I, K, N, K));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_8I, K, M, K));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->ld, kind == KIND_I32 ? CUDA_R_32I : cuda_type(dt), N, M, N));

    cublasLtMatmulPreference_t pref = NULL;
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = WS_BYTES;
    const uint32_t aa = al_a, ab = al_b, ad = al_d;
    cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof ab);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ad, sizeof ad);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad, sizeof ad);
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->la, p->lb, p->ld, p->ld, pref, 1, &res, &nres);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || nres < 1) {
        plan_release(p);
        return llmq_fail("int8 GEMM %dx%dx%d (%s): cuBLASLt has no algorithm: %s", M, N, K,
                         kind == KIND_I32 ? "int32 out" : "fused outer-vector scales",
                         s != CUBLAS_STATUS_SUCCESS ? cublas_status_name(s) : "none returned");
    }
    p->algo = res.algo;
    plan_set_key(p, kind, dt, M, N, K, al_a, al_b, al_d);
    p->valid = true;
    return 0;
}

static lt_plan *plan_get(llmq_w8a8_ctx *c, int kind, llmq_dtype dt, int M, int N, int K, const void *a,
                         const void *b, const void *d, const void *scale_a, const void *scale_b)
{
    const unsigned al_a = ptr_align(a), al_b = ptr_align(b), al_d = ptr_align(d);
    for (int i = 0; i < N_PLANS; i++) {
        lt_plan *p = &c->plans[i];
        if ((p->valid || p->failed) && p->kind == kind && p->M == M && p->N == N && p->K == K &&
            (kind == KIND_I32 || p->dt == dt) && p->align_a == al_a && p->align_b == al_b && p->align_d == al_d) {
            if (p->failed) {
                llmq_fail("int8 GEMM %dx%dx%d: cuBLASLt has no algorithm (cached)", M, N, K);
                return NULL;
            }
            return p;
        }
    }
    lt_plan *p = &c->plans[c->next_plan];
    c->next_plan = (c->next_plan + 1) % N_PLANS;
    plan_release(p);
    if (plan_make(c, p, kind, dt, M, N, K, al_a, al_b, al_d, scale_a, scale_b)) {
        /* Remember the miss (plan_make left p empty). */
        plan_set_key(p, kind, dt, M, N, K, al_a, al_b, al_d);
        p->failed = true;
        return NULL;
    }
    return p;
}

static int check_gemm(const char *what, int M, int N, int K, const void *x, const void *w, const void *y)
{
    if (M < 0 || N <= 0 || K <= 0)
        return llmq_fail("%s: bad shape M %d N %d K %d", what, M, N, K);
    if (K % 4 || N % 4)
        return llmq_fail("%s: cuBLASLt's int8 kernels need K and N multiples of 4 (K %d, N %d)", what, K, N);
    if (ptr_align(x) < 4 || ptr_align(w) < 4 || ptr_align(y) < 4)
        return llmq_fail("%s: int8 GEMM operands must be 4-byte aligned", what);
    return 0;
}

extern "C" int llmq_w8a8_create(llmq_w8a8_ctx **out, void *stream)
{
    *out = NULL;
    llmq_w8a8_ctx *c = (llmq_w8a8_ctx *)calloc(1, sizeof *c);
    if (!c)
        return llmq_fail("w8a8: out of host memory");
    c->stream = (cudaStream_t)stream;
    c->scratch_limit = LLMQ_W8A8_DEFAULT_SCRATCH;
    c->last = "";
    cublasStatus_t s = cublasLtCreate(&c->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(c);
        return llmq_fail("cublasLtCreate: %s", cublas_status_name(s));
    }
    cudaError_t e = cudaMalloc(&c->ws, WS_BYTES);
    if (e != cudaSuccess) {
        llmq_w8a8_destroy(c);
        return llmq_fail("w8a8: workspace: %s", cudaGetErrorString(e));
    }
    /* Probe the fused epilogue on a typical shape (the workspace stands in
     * for the scale vectors: the heuristic does not read them). */
    lt_plan probe;
    c->fused_ok = plan_make(c, &probe, KIND_FUSED, LLMQ_F16, 256, 4096, 4096, 256, 256, 256, c->ws, c->ws) == 0;
    if (c->fused_ok)
        plan_release(&probe);
    llmq_clear_error();
    *out = c;
    return 0;
}

extern "C" void llmq_w8a8_destroy(llmq_w8a8_ctx *c)
{
    if (!c)
        return;
    for (int i = 0; i < N_PLANS; i++)
        plan_release(&c->plans[i]);
    cudaFree(c->ws);
    cudaFree(c->scratch);
    if (c->lt)
        cublasLtDestroy(c->lt);
    free(c);
}

extern "C" int llmq_w8a8_fused_available(const llmq_w8a8_ctx *c) { return c->fused_ok; }

extern "C" int llmq_w8a8_set_epilogue(llmq_w8a8_ctx *c, int epi)
{
    if (epi != LLMQ_W8A8_EPI_AUTO && epi != LLMQ_W8A8_EPI_FUSED && epi != LLMQ_W8A8_EPI_RESCALE &&
        epi != LLMQ_W8A8_EPI_GEMV)
        return llmq_fail("w8a8: unknown epilogue %d", epi);
    if (epi == LLMQ_W8A8_EPI_FUSED && !c->fused_ok)
        return llmq_fail("w8a8: this cuBLASLt has no fused int8 epilogue with outer-vector scales");
    c->epi = epi;
    return 0;
}

extern "C" void llmq_w8a8_set_scratch_limit(llmq_w8a8_ctx *c, size_t bytes) { c->scratch_limit = bytes; }

extern "C" const char *llmq_w8a8_last_epilogue(const llmq_w8a8_ctx *c) { return c->last; }

static int lt_run(llmq_w8a8_ctx *c, lt_plan *p, const void *alpha, const void *beta, const int8_t *x, const int8_t *w,
                  void *d)
{
    CUBLAS_TRY(cublasLtMatmul(c->lt, p->desc, alpha, w, p->la, x, p->lb, beta, d, p->ld, d, p->ld, &p->algo, c->ws,
                              WS_BYTES, c->stream));
    return 0;
}

extern "C" int llmq_int8_gemm_i32(llmq_w8a8_ctx *c, int32_t *acc, const int8_t *x, const int8_t *w, int M, int N,
                                  int K)
{
    if (check_gemm("int8_gemm", M, N, K, x, w, acc))
        return -1;
    if (M == 0)
        return 0;
    lt_plan *p = plan_get(c, KIND_I32, LLMQ_F32, M, N, K, w, x, acc, NULL, NULL);
    if (!p)
        return -1;
    const int32_t one = 1, zero = 0;
    return lt_run(c, p, &one, &zero, x, w, acc);
}

static int gemm_fused(llmq_w8a8_ctx *c, llmq_dtype dt, void *y, const int8_t *x, const float *s_tok, const int8_t *w,
                      const float *s_ch, int M, int N, int K)
{
    lt_plan *p = plan_get(c, KIND_FUSED, dt, M, N, K, w, x, y, s_ch, s_tok);
    if (!p)
        return -1;
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &s_ch, sizeof s_ch));
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &s_tok, sizeof s_tok));
    const float one = 1.0f, zero = 0.0f;
    return lt_run(c, p, &one, &zero, x, w, y);
}

static int gemm_rescale(llmq_w8a8_ctx *c, llmq_dtype dt, void *y, const int8_t *x, const float *s_tok,
                        const int8_t *w, const float *s_ch, int M, int N, int K)
{
    const size_t row_bytes = (size_t)N * sizeof(int32_t);
    size_t chunk = (size_t)M;
    if (c->scratch_limit > 0) {
        size_t r = c->scratch_limit / row_bytes;
        r = r < 64 ? 64 : r / 64 * 64; /* chunk starts keep x's alignment */
        chunk = r < chunk ? r : chunk;
    }
    const size_t need = chunk * row_bytes;
    if (need > c->scratch_bytes) {
        CUDA_TRY(cudaStreamSynchronize(c->stream)); /* the old scratch may still be in use */
        CUDA_TRY(cudaFree(c->scratch));
        c->scratch = NULL;
        c->scratch_bytes = 0;
        CUDA_TRY(cudaMalloc(&c->scratch, need));
        c->scratch_bytes = need;
    }
    const size_t esz = llmq_dtype_size(dt);
    for (size_t m0 = 0; m0 < (size_t)M; m0 += chunk) {
        const int mc = (int)((size_t)M - m0 < chunk ? (size_t)M - m0 : chunk);
        if (llmq_int8_gemm_i32(c, c->scratch, x + m0 * K, w, mc, N, K))
            return -1;
        if (llmq_w8a8_rescale(c->stream, dt, (char *)y + m0 * N * esz, c->scratch, s_tok + m0, s_ch, mc, N))
            return -1;
    }
    return 0;
}

extern "C" int llmq_w8a8_gemm(llmq_w8a8_ctx *c, llmq_dtype dt, void *y, const int8_t *x, const float *s_tok,
                              const int8_t *w, const float *s_ch, int M, int N, int K)
{
    if (check_gemm("w8a8_gemm", M, N, K, x, w, y))
        return -1;
    if (dt != LLMQ_F16 && dt != LLMQ_BF16 && dt != LLMQ_F32)
        return llmq_fail("w8a8_gemm: unsupported output type %s", llmq_dtype_name(dt));
    if (M == 0)
        return 0;
    if (c->epi == LLMQ_W8A8_EPI_GEMV || (c->epi == LLMQ_W8A8_EPI_AUTO && M <= LLMQ_W8A8_GEMV_MAX_M)) {
        c->last = "int8 GEMV, rescale in its epilogue";
        return llmq_w8a8_gemv(c->stream, dt, y, x, s_tok, w, s_ch, M, N, K);
    }
    if (c->epi == LLMQ_W8A8_EPI_FUSED || (c->epi == LLMQ_W8A8_EPI_AUTO && c->fused_ok)) {
        if (gemm_fused(c, dt, y, x, s_tok, w, s_ch, M, N, K) == 0) {
            c->last = "fused (cuBLASLt outer-vector scales)";
            return 0;
        }
        if (c->epi == LLMQ_W8A8_EPI_FUSED)
            return -1;
        llmq_clear_error(); /* AUTO: this shape or type has no fused kernel */
    }
    c->last = "int32 + rescale kernel";
    return gemm_rescale(c, dt, y, x, s_tok, w, s_ch, M, N, K);
}
