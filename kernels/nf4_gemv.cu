/* NF4 GEMV for decoding (kernels/nf4_gemv.h).
 *
 * Fast kernel (k % 64 == 0, so every row of W starts a block and a 16-byte
 * boundary): a warp owns R consecutive rows of W; lane l reads the 16-byte
 * chunks l, l + 32, ... of each row (32 codes, half a block), the next
 * chunk's load issued before the current one is used. Codes are decoded
 * through a 16-entry fp32 table in shared memory (16 distinct words in 16
 * distinct banks: conflict-free), x comes through L1 (__ldg; the same few
 * KB for every warp), and the block's absmax is decoded once per chunk:
 * dyn_code[qabsmax[b]] * absmax2[b / 256] + offset in fp32, the same two
 * roundings as nf4_block_absmax(). Per chunk and token, sum_k x * code is
 * accumulated in fp32 and then multiplied by the absmax; a warp reduction
 * ends each row.
 *
 * Generic kernel (any k; blocks may straddle rows): a warp per row, one
 * element per lane and step, decoded from its flat index. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda_common.cuh"
#include "kernels/nf4_gemv.h"

extern "C" {
#include "quant/dynmap.h"
}

enum { WARPS = 4, MAX_M = 8 };

/* Rows per warp at m = 1 (llmq_nf4_gemv_tune); 0 = by shape: 4 from
 * n >= 8192 rows, else 2 (on an H200, R = 4 was 4-10% faster at
 * 11008x4096 and 32000x4096, R = 2 18-25% faster at 4096x4096 and
 * 4096x11008; docs/BENCHMARKS_W8A8_NF4.md). */
static int g_rows_m1 = 0;

namespace {

/* Byte offset of code e (0..7) of a little-endian 32-bit word of packed
 * codes in a float table: byte e/2, high nibble first. */
template <int E> __device__ __forceinline__ uint32_t lut_off(uint32_t w)
{
    constexpr int shift = 8 * (E >> 1) + ((E & 1) ? 0 : 4);
    if constexpr (shift >= 2)
        return (w >> (shift - 2)) & 0x3Cu;
    else
        return (w << 2) & 0x3Cu;
}

template <typename T> __device__ __forceinline__ void load8(const T *p, float (&f)[8])
{
    constexpr int V = Vec16<T>::N; /* 8 for 16-bit types, 4 for float */
#pragma unroll
    for (int h = 0; h < 8 / V; h++) {
        Vec16<T> v;
        *reinterpret_cast<int4 *>(&v) = __ldg(reinterpret_cast<const int4 *>(p + h * V));
#pragma unroll
        for (int i = 0; i < V; i++)
            f[h * V + i] = to_f32(v.v[i]);
    }
}

__device__ __forceinline__ float block_absmax(size_t b, int dq, const float *__restrict__ absmax,
                                              const uint8_t *__restrict__ qabsmax,
                                              const float *__restrict__ absmax2, float offset, const float *dyn)
{
    if (!dq)
        return __ldg(absmax + b);
    return __fadd_rn(__fmul_rn(dyn[__ldg(qabsmax + b)], __ldg(absmax2 + (b >> 8))), offset);
}

/* The tables every block needs in shared memory. */
__device__ __forceinline__ void load_tables(float *lut, float *dyn, const float *code, const float *dyn_code, int dq)
{
    if (threadIdx.x < 16)
        lut[threadIdx.x] = code[threadIdx.x];
    if (dq)
        for (int i = threadIdx.x; i < 256; i += blockDim.x)
            dyn[i] = dyn_code[i];
    __syncthreads();
}

template <typename T, int M, int R>
__global__ void __launch_bounds__(WARPS * 32)
    nf4_gemv_kernel(T *__restrict__ y, const T *__restrict__ x, const uint8_t *__restrict__ packed,
                    const float *__restrict__ absmax, const uint8_t *__restrict__ qabsmax,
                    const float *__restrict__ absmax2, float offset, const float *__restrict__ dyn_code,
                    const float *__restrict__ code, int dq, int N, int K)
{
    __shared__ __align__(16) float lut[16];
    __shared__ float dyn[256];
    load_tables(lut, dyn, code, dyn_code, dq);

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n0 = (blockIdx.x * WARPS + warp) * R;
    if (n0 >= N)
        return;
    const int chunks = K / 32, blocks_per_row = K / 64;
    const char *lutb = reinterpret_cast<const char *>(lut);

    const uint4 *wrow[R];
    int nr[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        nr[r] = n0 + r < N ? n0 + r : N - 1; /* rows past N repeat the last one, unwritten */
        wrow[r] = reinterpret_cast<const uint4 *>(packed + (size_t)nr[r] * (size_t)(K / 2));
    }

    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int m = 0; m < M; m++)
            acc[r][m] = 0.0f;

    uint4 wc[R];
    if (lane < chunks)
#pragma unroll
        for (int r = 0; r < R; r++)
            wc[r] = __ldcs(wrow[r] + lane); /* streamed once: evict first */

    for (int ch = lane; ch < chunks; ch += 32) {
        uint4 wn[R];
        if (ch + 32 < chunks)
#pragma unroll
            for (int r = 0; r < R; r++)
                wn[r] = __ldcs(wrow[r] + ch + 32);
        float am[R];
#pragma unroll
        for (int r = 0; r < R; r++)
            am[r] = block_absmax((size_t)nr[r] * blocks_per_row + (ch >> 1), dq, absmax, qabsmax, absmax2, offset, dyn);

        float part[R][M];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int m = 0; m < M; m++)
                part[r][m] = 0.0f;

        const T *xk = x + (size_t)ch * 32;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float xv[M][8];
#pragma unroll
            for (int m = 0; m < M; m++)
                load8<T>(xk + (size_t)m * K + j * 8, xv[m]);
#pragma unroll
            for (int r = 0; r < R; r++) {
                const uint32_t wd = j == 0 ? wc[r].x : j == 1 ? wc[r].y : j == 2 ? wc[r].z : wc[r].w;
                float cv[8];
                cv[0] = *reinterpret_cast<const float *>(lutb + lut_off<0>(wd));
                cv[1] = *reinterpret_cast<const float *>(lutb + lut_off<1>(wd));
                cv[2] = *reinterpret_cast<const float *>(lutb + lut_off<2>(wd));
                cv[3] = *reinterpret_cast<const float *>(lutb + lut_off<3>(wd));
                cv[4] = *reinterpret_cast<const float *>(lutb + lut_off<4>(wd));
                cv[5] = *reinterpret_cast<const float *>(lutb + lut_off<5>(wd));
                cv[6] = *reinterpret_cast<const float *>(lutb + lut_off<6>(wd));
                cv[7] = *reinterpret_cast<const float *>(lutb + lut_off<7>(wd));
#pragma unroll
                for (int e = 0; e < 8; e++)
#pragma unroll
                    for (int m = 0; m < M; m++)
                        part[r][m] = fmaf(xv[m][e], cv[e], part[r][m]);
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
#pragma unroll
            for (int m = 0; m < M; m++)
                acc[r][m] = fmaf(part[r][m], am[r], acc[r][m]);
            wc[r] = wn[r];
        }
    }

#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int m = 0; m < M; m++) {
            float v = warp_sum(acc[r][m]);
            if (lane == 0 && n0 + r < N)
                y[(size_t)m * N + n0 + r] = from_f32<T>(v);
        }
}

template <typename T>
__global__ void __launch_bounds__(WARPS * 32)
    nf4_gemv_generic_kernel(T *__restrict__ y, const T *__restrict__ x, const uint8_t *__restrict__ packed,
                            const float *__restrict__ absmax, const uint8_t *__restrict__ qabsmax,
                            const float *__restrict__ absmax2, float offset, const float *__restrict__ dyn_code,
                            const float *__restrict__ code, int dq, int N, int K, int M)
{
    __shared__ float lut[16];
    __shared__ float dyn[256];
    load_tables(lut, dyn, code, dyn_code, dq);
    const int n = blockIdx.x * WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= N)
        return;
    float acc[MAX_M];
#pragma unroll
    for (int m = 0; m < MAX_M; m++)
        acc[m] = 0.0f;
    for (int k = lane; k < K; k += 32) {
        const size_t e = (size_t)n * K + k;
        const uint32_t byte = __ldg(packed + (e >> 1));
        const uint32_t nib = (e & 1) ? byte & 15u : byte >> 4;
        /* As nf4_dequantize: code * absmax rounded to fp32. */
        const float wv = __fmul_rn(lut[nib], block_absmax(e >> 6, dq, absmax, qabsmax, absmax2, offset, dyn));
#pragma unroll
        for (int m = 0; m < MAX_M; m++)
            if (m < M)
                acc[m] = fmaf(to_f32(x[(size_t)m * K + k]), wv, acc[m]);
    }
#pragma unroll
    for (int m = 0; m < MAX_M; m++)
        if (m < M) {
            float v = warp_sum(acc[m]);
            if (lane == 0)
                y[(size_t)m * N + n] = from_f32<T>(v);
        }
}

} // namespace

template <typename T, int M, int R>
static int launch_fast(cudaStream_t st, T *y, const T *x, const llmq_nf4_gpu *w)
{
    const unsigned grid = ceil_div((size_t)w->n, (size_t)WARPS * R);
    nf4_gemv_kernel<T, M, R><<<grid, WARPS * 32, 0, st>>>(y, x, w->packed, w->absmax, w->qabsmax, w->absmax2,
                                                          w->offset, w->dyn_code, w->code, w->double_quant, w->n,
                                                          w->k);
    LAUNCH_CHECK("nf4_gemv");
    return 0;
}

template <typename T> static int launch_m(cudaStream_t st, T *y, const T *x, const llmq_nf4_gpu *w, int m)
{
    switch (m) {
    case 1: {
        const int r = g_rows_m1 ? g_rows_m1 : w->n >= 8192 ? 4 : 2;
        if (r == 1)
            return launch_fast<T, 1, 1>(st, y, x, w);
        if (r == 4)
            return launch_fast<T, 1, 4>(st, y, x, w);
        return launch_fast<T, 1, 2>(st, y, x, w);
    }
    case 2: return launch_fast<T, 2, 4>(st, y, x, w);
    case 3: return launch_fast<T, 3, 2>(st, y, x, w);
    case 4: return launch_fast<T, 4, 2>(st, y, x, w);
    case 5: return launch_fast<T, 5, 2>(st, y, x, w);
    case 6: return launch_fast<T, 6, 2>(st, y, x, w);
    case 7: return launch_fast<T, 7, 2>(st, y, x, w);
    default: return launch_fast<T, 8, 2>(st, y, x, w);
    }
}

extern "C" int llmq_nf4_gemv(void *stream, llmq_dtype dt, void *y, const void *x, const llmq_nf4_gpu *w, int m)
{
    if (m < 1 || m > MAX_M)
        return llmq_fail("nf4_gemv: m = %d tokens (1..%d)", m, MAX_M);
    if (!w || !w->packed || !w->code || w->n <= 0 || w->k <= 0)
        return llmq_fail("nf4_gemv: weight not uploaded");
    cudaStream_t st = (cudaStream_t)stream;
    const bool fast = w->k % 64 == 0 && aligned16(x) && aligned16(w->packed);
    DISPATCH_DT(dt, "nf4_gemv", {
        if (fast)
            return launch_m<T>(st, (T *)y, (const T *)x, w, m);
        nf4_gemv_generic_kernel<T><<<ceil_div((size_t)w->n, WARPS), WARPS * 32, 0, st>>>(
            (T *)y, (const T *)x, w->packed, w->absmax, w->qabsmax, w->absmax2, w->offset, w->dyn_code, w->code,
            w->double_quant, w->n, w->k, m);
        LAUNCH_CHECK("nf4_gemv (generic)");
    });
    return 0;
}

namespace {

/* W [n, k] in dt from the packed codes: a thread per packed byte (two
 * consecutive values of the flat row-major order, high nibble first), the
 * value rounded once from nf4_code[q] * absmax in fp32 like
 * nf4_dequantize(). */
template <typename T>
__global__ void nf4_dequant_kernel(T *__restrict__ W, const uint8_t *__restrict__ packed,
                                   const float *__restrict__ absmax, const uint8_t *__restrict__ qabsmax,
                                   const float *__restrict__ absmax2, float offset, const float *__restrict__ dyn_code,
                                   const float *__restrict__ code, int dq, size_t nvals)
{
    __shared__ float lut[16], dyn[256];
    load_tables(lut, dyn, code, dyn_code, dq);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; 2 * i < nvals; i += (size_t)gridDim.x * blockDim.x) {
        const uint8_t byte = __ldg(packed + i);
        const size_t e = 2 * i; /* both values share a block: 64 is even */
        const float a = block_absmax(e / 64, dq, absmax, qabsmax, absmax2, offset, dyn);
        W[e] = from_f32<T>(__fmul_rn(lut[byte >> 4], a));
        if (e + 1 < nvals)
            W[e + 1] = from_f32<T>(__fmul_rn(lut[byte & 15], a));
    }
}

} // namespace

extern "C" int llmq_nf4_dequant(void *stream, llmq_dtype dt, void *dst, const llmq_nf4_gpu *w)
{
    if (!w || !w->packed || !w->code)
        return llmq_fail("nf4_dequant: weight not uploaded");
    const size_t nvals = (size_t)w->n * (size_t)w->k, bytes = (nvals + 1) / 2;
    const unsigned grid = (unsigned)(ceil_div(bytes, 256) < 65535 * 8 ? ceil_div(bytes, 256) : 65535 * 8);
    DISPATCH_DT(dt, "nf4_dequant", {
        nf4_dequant_kernel<T><<<grid, 256, 0, (cudaStream_t)stream>>>(
            (T *)dst, w->packed, w->absmax, w->qabsmax, w->absmax2, w->offset, w->dyn_code, w->code, w->double_quant,
            nvals);
        LAUNCH_CHECK("nf4_dequant");
    });
    return 0;
}

extern "C" int llmq_nf4_gemv_tune(int rows_per_warp)
{
    if (rows_per_warp != 0 && rows_per_warp != 1 && rows_per_warp != 2 && rows_per_warp != 4)
        return llmq_fail("nf4_gemv: rows per warp %d (1, 2 or 4)", rows_per_warp);
    g_rows_m1 = rows_per_warp;
    return 0;
}

/* ---- upload ---- */

extern "C" void llmq_nf4_gpu_free(llmq_nf4_gpu *d)
{
    if (!d)
        return;
    cudaFree(d->packed);
    cudaFree(d->absmax);
    cudaFree(d->qabsmax);
    cudaFree(d->absmax2);
    cudaFree(d->dyn_code);
    cudaFree(d->code);
    memset(d, 0, sizeof *d);
}

/* cudaMalloc + cudaMemcpy of nbytes; -1 with llmq_fail on error. */
static int upload(void **dst, const void *src, size_t nbytes)
{
    CUDA_TRY(cudaMalloc(dst, nbytes));
    CUDA_TRY(cudaMemcpy(*dst, src, nbytes, cudaMemcpyHostToDevice));
    return 0;
}

extern "C" int llmq_nf4_gpu_upload(llmq_nf4_gpu *d, const llmq_nf4 *q, int n, int k)
{
    memset(d, 0, sizeof *d);
    if (n <= 0 || k <= 0 || q->n != (size_t)n * (size_t)k)
        return llmq_fail("nf4 upload: %zu values are not %d x %d", q->n, n, k);
    if (q->blocksize != 64 || (q->double_quant && q->blocksize2 != 256))
        return llmq_fail("nf4 upload: blocks of %d / %d (the GEMV takes 64 / 256)", q->blocksize, q->blocksize2);
    const size_t nbytes = (q->n + 1) / 2;
    uint8_t *packed = (uint8_t *)malloc(nbytes);
    if (!packed)
        return llmq_fail("nf4 upload: out of host memory");
    nf4_pack(q->codes, q->n, packed);
    float dyn[256];
    dynmap_signed(dyn);
    d->n = n;
    d->k = k;
    d->double_quant = q->double_quant;
    d->offset = q->offset;
    int rc = upload((void **)&d->packed, packed, nbytes);
    free(packed);
    if (!rc)
        rc = upload((void **)&d->code, nf4_code, 16 * sizeof(float));
    if (!rc)
        rc = upload((void **)&d->dyn_code, dyn, sizeof dyn);
    if (!rc && q->double_quant) {
        rc = upload((void **)&d->qabsmax, q->qabsmax, q->nblocks);
        if (!rc)
            rc = upload((void **)&d->absmax2, q->absmax2, q->nblocks2 * sizeof(float));
    } else if (!rc) {
        rc = upload((void **)&d->absmax, q->absmax, q->nblocks * sizeof(float));
    }
    if (rc) {
        llmq_nf4_gpu_free(d);
        return llmq_wrap("nf4 upload");
    }
    return 0;
}
