/* W4A16 / W8A16 on the GPTQ layout (kernels/wna16.h): load-time repack, two
 * tensor-core products (MMA, the first version, and GEMV, the decode
 * kernel), a dense dequantization for the cuBLAS paths.
 *
 * Both products: one block per 16 output channels (one mma M-tile), 8 warps
 * that split K between them (chunk kc goes to warp kc % 8, so the block
 * reads consecutive 512-byte chunks), then one shared-memory reduction over
 * the warps. A lane's 16-byte load holds its A fragments for 4 k-steps
 * (4-bit) or 2 (8-bit); x feeds the B fragments straight from global memory
 * (it is small and L1/L2 resident; every block reads it), 8 rows of x per
 * mma, MT such row tiles reusing one dequantized fragment. Blocks along
 * grid.y take further groups of 8*MT rows. MMA loads x and the scales next
 * to each mma; GEMV issues every load a batch ahead (see its comment). */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda_common.cuh"

extern "C" {
#include "kernels/wna16.h"
#include "src/dtype.h"
#include "src/model.h"
}

#define WARPS 8  /* per block, splitting K */
#define UNROLL 4 /* chunks each warp loads before it computes */

struct wna16_weight {
    int K, N, bits, ng;
    int Kp, nkc, ntiles; /* repacked rows (padded), 16-byte chunks per 16 channels, Np / 16 */
    int use_perm;        /* act-order (or padded groups): x gathered through perm */
    void *blob;          /* one device allocation holding the arrays below */
    size_t blob_bytes, code_bytes, param_bytes;
    int4 *wq;            /* [ntiles][nkc][32 lanes] */
    uint2 *sz;           /* [ng][ntiles][8]: {half2 scales, half2 zeros} of channels gl, gl+8 */
    int *step_group;     /* [Kp/16]: group of each 16-row k-step */
    int *perm;           /* [Kp]: repacked row -> input channel, -1 = padding */
    int *rowpos;         /* [K]: input channel -> repacked row (kept for inspection) */
    void *dense;         /* cached dense W [N, K] in dense_dt, or NULL */
    llmq_dtype dense_dt;
    void *scratch;       /* lent by the caller */
    size_t scratch_bytes;
};

template <int BITS> struct Cfg {
    static constexpr int KC = BITS == 4 ? 64 : 32; /* rows of K per 16-byte lane chunk */
    static constexpr int STEPS = KC / 16;          /* mma k-steps per chunk */
};

/* Where the code of (row rl of a chunk, channel nl of a 16-channel tile)
 * lives: lane, word of the lane's int4, bit shift. The m16n8k16 A fragment
 * (PTX ISA, row-major 16x16 f16): lane = 4 * gl + t holds rows gl and gl+8,
 * columns 2t, 2t+1, 2t+8, 2t+9 as four f16x2 registers, register i = row
 * +8*(i&1), column +8*(i>>1); the low half is the even column. So code pair
 * (register i, half j) of k-step s sits at
 *   4-bit: word s,            nibble i + 4j  (one LOP3 with 0x000F000F
 *          after a shift by 4i yields both halves of register i);
 *   8-bit: word 2s + (i>>1),  byte 2(i&1) + j (one PRMT). */
struct CodePos {
    int lane, word, shift;
};

__host__ __device__ __forceinline__ CodePos code_pos(int bits, int rl, int nl)
{
    const int s = rl >> 4, kk = rl & 15, i = ((kk >> 3) << 1) | (nl >> 3), t = (kk & 7) >> 1, j = kk & 1;
    CodePos p;
    p.lane = (nl & 7) * 4 + t;
    if (bits == 4) {
        p.word = s;
        p.shift = 4 * (i + 4 * j);
    } else {
        p.word = 2 * s + (i >> 1);
        p.shift = 8 * (2 * (i & 1) + j);
    }
    return p;
}

/* ---- device helpers ---- */

__device__ __forceinline__ __half2 as_h2(uint32_t u)
{
    __half2 h;
    memcpy(&h, &u, 4);
    return h;
}

template <typename V> __device__ __forceinline__ uint32_t as_u32(V v)
{
    static_assert(sizeof(V) == 4, "32-bit pairs");
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

/* Streamed once: keep it out of L1, which serves x. */
__device__ __forceinline__ int4 ld_stream(const int4 *p)
{
    int4 v;
    asm("ld.global.nc.L1::no_allocate.v4.s32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

/* Codes of register i of k-step s: low 16 bits the even column, high the odd. */
template <int BITS> __device__ __forceinline__ uint32_t code_pair(const uint32_t (&w)[4], int s, int i)
{
    if (BITS == 4)
        return (w[s] >> (4 * i)) & 0x000F000Fu;
    return __byte_perm(w[2 * s + (i >> 1)], 0u, (i & 1) ? 0x4342u : 0x4140u);
}

/* Per-group dequantization constants and the code pair -> dt pair step.
 * fp16: 0x6400 | q is the half 1024 + q, so (h - (1024 + z)) * s in half2
 * arithmetic: the subtraction is exact, the product rounds once.
 * bf16 has too few mantissa bits for that trick at 8 bits: fp32
 * ((2^23 + q) - (2^23 + z)) * s, exact, then one rounding to bf16. */
template <typename T> struct Deq;

template <> struct Deq<__half> {
    __half2 s[2], z[2]; /* [0]: channel gl, [1]: channel gl + 8, both halves */
    __device__ __forceinline__ void set(uint2 p)
    {
        const __half2 sp = as_h2(p.x), zp = __hadd2(as_h2(p.y), __float2half2_rn(1024.0f));
        s[0] = __low2half2(sp);
        s[1] = __high2half2(sp);
        z[0] = __low2half2(zp);
        z[1] = __high2half2(zp);
    }
    __device__ __forceinline__ uint32_t operator()(uint32_t e, int h) const
    {
        return as_u32(__hmul2(__hsub2(as_h2(e | 0x64006400u), z[h]), s[h]));
    }
};

template <> struct Deq<__nv_bfloat16> {
    float s[2], z[2]; /* z = 2^23 + zero */
    __device__ __forceinline__ void set(uint2 p)
    {
        const __half2 sp = as_h2(p.x), zp = as_h2(p.y);
        s[0] = __low2float(sp);
        s[1] = __high2float(sp);
        z[0] = 8388608.0f + __low2float(zp);
        z[1] = 8388608.0f + __high2float(zp);
    }
    __device__ __forceinline__ uint32_t operator()(uint32_t e, int h) const
    {
        const float lo = (__uint_as_float(0x4B000000u | (e & 0xFFFFu)) - z[h]) * s[h];
        const float hi = (__uint_as_float(0x4B000000u | (e >> 16)) - z[h]) * s[h];
        return as_u32(__floats2bfloat162_rn(lo, hi));
    }
};

/* c += A (16 channels x 16 k) . B (16 k x 8 rows of x), fp32 accumulators:
 * c0, c1 = channel gl, rows 2t, 2t+1; c2, c3 = channel gl + 8. */
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* x[row][r], x[row][r+1] (repacked rows r, r+1; r even) as a dt pair: the
 * B fragment's two k. Through perm under act-order; padding rows read 0. */
template <bool PERM> __device__ __forceinline__ uint32_t x_pair(const uint16_t *xrow, int r, int K, const int *perm)
{
    if (PERM) {
        const int2 p = __ldg(reinterpret_cast<const int2 *>(perm + r));
        const uint32_t lo = p.x >= 0 ? __ldg(xrow + p.x) : 0u, hi = p.y >= 0 ? __ldg(xrow + p.y) : 0u;
        return lo | hi << 16;
    }
    return r < K ? __ldg(reinterpret_cast<const uint32_t *>(xrow + r)) : 0u;
}

/* ---- the product ---- */

/* The end of both product kernels: each warp covered a share of K, so the
 * block sums the warps' accumulator fragments (mma m16n8 layout) through
 * shared memory and writes the 16-column tile nt of rows m0.. of y. */
template <typename T, int MT>
__device__ __forceinline__ void reduce_store(float4 (*red)[MT * 32], const float (&acc)[MT][4], T *__restrict__ y,
                                             int M, int N, int nt, int m0)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        red[warp][mt * 32 + lane] = make_float4(acc[mt][0], acc[mt][1], acc[mt][2], acc[mt][3]);
    __syncthreads();
    const float *rf = reinterpret_cast<const float *>(&red[0][0]);
    for (int e = threadIdx.x; e < MT * 128; e += WARPS * 32) {
        float v = 0.0f;
#pragma unroll
        for (int wp = 0; wp < WARPS; wp++)
            v += rf[wp * MT * 128 + e];
        const int c = e & 3, ln = (e >> 2) & 31, mt = e >> 7;
        const int n = nt * 16 + (ln >> 2) + (c >> 1) * 8, m = m0 + mt * 8 + (ln & 3) * 2 + (c & 1);
        if (m < M && n < N)
            y[(size_t)m * N + n] = from_f32<T>(v);
    }
}


template <typename T, int BITS, int MT, bool PERM>
__global__ void __launch_bounds__(WARPS * 32)
    wna16_mma_kernel(T *__restrict__ y, const T *__restrict__ x, int M, int K, int N, const int4 *__restrict__ wq,
                     const uint2 *__restrict__ sz, const int *__restrict__ step_group, const int *__restrict__ perm,
                     int nkc, int ntiles)
{
    constexpr int STEPS = Cfg<BITS>::STEPS;
    __shared__ float4 red[WARPS][MT * 32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gl = lane >> 2, t = lane & 3;
    const int nt = blockIdx.x, m0 = blockIdx.y * 8 * MT;

    /* The x row this lane feeds into each row tile's B fragment (column gl). */
    const uint16_t *xrow[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        const int m = m0 + mt * 8 + gl;
        xrow[mt] = m < M ? reinterpret_cast<const uint16_t *>(x) + (size_t)m * K : nullptr;
    }
    float acc[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;

    Deq<T> dq;
    int gcur = -1;
    const int4 *wt = wq + (size_t)nt * nkc * 32 + lane;
    for (int kc0 = warp; kc0 < nkc; kc0 += WARPS * UNROLL) {
        /* All loads first: UNROLL x 16 bytes per lane in flight. */
        int4 w[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int kc = kc0 + WARPS * u;
            w[u] = kc < nkc ? ld_stream(wt + (size_t)kc * 32) : make_int4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int kc = kc0 + WARPS * u;
            if (kc >= nkc) /* warp-uniform */
                break;
            const uint32_t wd[4] = {(uint32_t)w[u].x, (uint32_t)w[u].y, (uint32_t)w[u].z, (uint32_t)w[u].w};
#pragma unroll
            for (int s = 0; s < STEPS; s++) {
                const int st = kc * STEPS + s;
                const int g = __ldg(step_group + st);
                if (g != gcur) { /* warp-uniform; groups span >= 16 rows */
                    gcur = g;
                    dq.set(__ldg(sz + ((size_t)g * ntiles + nt) * 8 + gl));
                }
                uint32_t a[4];
#pragma unroll
                for (int i = 0; i < 4; i++)
                    a[i] = dq(code_pair<BITS>(wd, s, i), i & 1);
                const int r = st * 16 + 2 * t;
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    uint32_t b0 = 0, b1 = 0;
                    if (xrow[mt]) {
                        b0 = x_pair<PERM>(xrow[mt], r, K, perm);
                        b1 = x_pair<PERM>(xrow[mt], r + 8, K, perm);
                    }
                    mma16816<T>(acc[mt], a, b0, b1);
                }
            }
        }
    }

    reduce_store<T, MT>(red, acc, y, M, N, nt, m0);
}

/* ---- the decode product (M <= 16 per block row) ----
 *
 * The same fragments, pipelined for latency: round 1 of this file (the
 * kernel above alone) ran at 15% of the copy bandwidth at M = 1 because
 * each k-step waited on its own x loads (and on a step -> group -> scale
 * chain of global loads) right before its mma. Here each warp keeps two
 * batches of U chunks in registers, the weight words AND the x pairs of
 * the B fragments: batch b+1 is loaded before batch b is computed, so the
 * mma never waits on a load issued in the same batch. The tile's scales and
 * zeros and the step -> group table are staged in shared memory once per
 * block (behind the first batch's loads). x rows past M repeat row M-1: B
 * column m only feeds output column m, which is not written. */

template <int BITS, int MT, bool PERM> struct Gv {
    static constexpr int STEPS = Cfg<BITS>::STEPS;
    /* Chunks per batch and warp: as many as two batches (weights + x pairs,
     * 2 * U * (4 + 2 * STEPS * MT) registers) allow under the 128-register
     * cap of two blocks per SM without spilling (act-order's perm loads
     * hold a few more). */
    static constexpr int U = MT == 1 ? (BITS == 4 ? (PERM ? 2 : 3) : 4) : (BITS == 4 ? 1 : 2);
};

template <int BITS, int MT, bool PERM> struct GvBatch {
    int4 w[Gv<BITS, MT, PERM>::U];
    uint32_t b[Gv<BITS, MT, PERM>::U][Gv<BITS, MT, PERM>::STEPS][MT][2];
};

template <int BITS, int MT, bool PERM>
__device__ __forceinline__ void gv_fetch(GvBatch<BITS, MT, PERM> &bt, int kc0, int nkc, const int4 *wt,
                                         const uint16_t *const (&xrow)[MT], const int *perm, int K, int t)
{
    constexpr int U = Gv<BITS, MT, PERM>::U, STEPS = Gv<BITS, MT, PERM>::STEPS;
#pragma unroll
    for (int u = 0; u < U; u++) {
        /* Past the last chunk: load the last one again (in bounds); unused. */
        const int kc = kc0 + WARPS * u < nkc ? kc0 + WARPS * u : nkc - 1;
        bt.w[u] = ld_stream(wt + (size_t)kc * 32);
#pragma unroll
        for (int s = 0; s < STEPS; s++) {
            const int r = (kc * STEPS + s) * 16 + 2 * t;
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                bt.b[u][s][mt][0] = x_pair<PERM>(xrow[mt], r, K, perm);
                bt.b[u][s][mt][1] = x_pair<PERM>(xrow[mt], r + 8, K, perm);
            }
        }
    }
}

template <typename T, int BITS, int MT, bool PERM>
__device__ __forceinline__ void gv_compute(const GvBatch<BITS, MT, PERM> &bt, int kc0, int nkc, float (&acc)[MT][4],
                                           Deq<T> &dq, int &gcur, const int *sgs, const uint2 *szs, int gl)
{
    constexpr int U = Gv<BITS, MT, PERM>::U, STEPS = Gv<BITS, MT, PERM>::STEPS;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int kc = kc0 + WARPS * u;
        if (kc >= nkc) /* warp-uniform */
            break;
        const uint32_t wd[4] = {(uint32_t)bt.w[u].x, (uint32_t)bt.w[u].y, (uint32_t)bt.w[u].z, (uint32_t)bt.w[u].w};
#pragma unroll
        for (int s = 0; s < STEPS; s++) {
            const int g = sgs[kc * STEPS + s];
            if (g != gcur) { /* warp-uniform, from shared memory */
                gcur = g;
                dq.set(szs[g * 8 + gl]);
            }
            uint32_t a[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                a[i] = dq(code_pair<BITS>(wd, s, i), i & 1);
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                mma16816<T>(acc[mt], a, bt.b[u][s][mt][0], bt.b[u][s][mt][1]);
        }
    }
}

template <typename T, int BITS, int MT, bool PERM>
__global__ void __launch_bounds__(WARPS * 32, 2)
    wna16_gemv_kernel(T *__restrict__ y, const T *__restrict__ x, int M, int K, int N, const int4 *__restrict__ wq,
                      const uint2 *__restrict__ sz, const int *__restrict__ step_group, const int *__restrict__ perm,
                      int nkc, int ntiles, int ng)
{
    constexpr int U = Gv<BITS, MT, PERM>::U, STEPS = Gv<BITS, MT, PERM>::STEPS;
    extern __shared__ uint2 gv_smem[];
    uint2 *szs = gv_smem;                            /* [ng][8]: this tile's scales/zeros */
    int *sgs = reinterpret_cast<int *>(szs + ng * 8); /* [nkc * STEPS]: group of each k-step */
    __shared__ float4 red[WARPS][MT * 32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gl = lane >> 2, t = lane & 3;
    const int nt = blockIdx.x, m0 = blockIdx.y * 8 * MT;

    const uint16_t *xrow[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        const int m = m0 + mt * 8 + gl;
        xrow[mt] = reinterpret_cast<const uint16_t *>(x) + (size_t)(m < M ? m : M - 1) * K;
    }
    const int4 *wt = wq + (size_t)nt * nkc * 32 + lane;
    GvBatch<BITS, MT, PERM> A, B;
    int kc0 = warp;
    if (kc0 < nkc)
        gv_fetch<BITS, MT, PERM>(A, kc0, nkc, wt, xrow, perm, K, t);
    for (int i = threadIdx.x; i < ng * 8; i += WARPS * 32)
        szs[i] = __ldg(sz + ((size_t)(i >> 3) * ntiles + nt) * 8 + (i & 7));
    for (int i = threadIdx.x; i < nkc * STEPS; i += WARPS * 32)
        sgs[i] = __ldg(step_group + i);
    __syncthreads();

    float acc[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;
    Deq<T> dq;
    int gcur = -1;
    /* Ping-pong: fetch the next batch into one buffer, compute the other. */
    while (kc0 < nkc) {
        if (kc0 + WARPS * U < nkc)
            gv_fetch<BITS, MT, PERM>(B, kc0 + WARPS * U, nkc, wt, xrow, perm, K, t);
        gv_compute<T, BITS, MT, PERM>(A, kc0, nkc, acc, dq, gcur, sgs, szs, gl);
        kc0 += WARPS * U;
        if (kc0 >= nkc)
            break;
        if (kc0 + WARPS * U < nkc)
            gv_fetch<BITS, MT, PERM>(A, kc0 + WARPS * U, nkc, wt, xrow, perm, K, t);
        gv_compute<T, BITS, MT, PERM>(B, kc0, nkc, acc, dq, gcur, sgs, szs, gl);
        kc0 += WARPS * U;
    }

    reduce_store<T, MT>(red, acc, y, M, N, nt, m0);
}

/* ---- dense dequantization (the cuBLAS paths; also checks the repack) ----
 *
 * One warp per 512-byte chunk, read coalesced; each lane turns its codes
 * into dt pairs with the product's own code_pair/Deq (so the dense W is
 * bit for bit the W the mma paths multiply) and stores them where they go:
 * a pair is two consecutive input channels of one output channel (a 4-byte
 * store) unless act-order scatters them. */
template <typename T, int BITS, bool PERM>
__global__ void wna16_dequant_kernel(T *dst, int K, int N, const int4 *__restrict__ wq, const uint2 *__restrict__ sz,
                                     const int *__restrict__ step_group, const int *__restrict__ perm, int nkc,
                                     int ntiles)
{
    constexpr int STEPS = Cfg<BITS>::STEPS;
    const int lane = threadIdx.x & 31, gl = lane >> 2, t = lane & 3;
    const size_t nchunks = (size_t)ntiles * nkc;
    for (size_t ch = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5; ch < nchunks;
         ch += (gridDim.x * (size_t)blockDim.x) >> 5) {
        const int nt = (int)(ch / nkc), kc = (int)(ch % nkc);
        const int4 v = __ldg(wq + ch * 32 + lane);
        const uint32_t wd[4] = {(uint32_t)v.x, (uint32_t)v.y, (uint32_t)v.z, (uint32_t)v.w};
        Deq<T> dq;
#pragma unroll
        for (int s = 0; s < STEPS; s++) {
            const int st = kc * STEPS + s;
            dq.set(__ldg(sz + ((size_t)__ldg(step_group + st) * ntiles + nt) * 8 + gl));
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const uint32_t pair = dq(code_pair<BITS>(wd, s, i), i & 1);
                const int n = nt * 16 + gl + 8 * (i & 1), r = st * 16 + 2 * t + 8 * (i >> 1);
                if (n >= N)
                    continue;
                uint16_t *row = reinterpret_cast<uint16_t *>(dst) + (size_t)n * K;
                if (PERM) {
                    const int k0 = __ldg(perm + r), k1 = __ldg(perm + r + 1);
                    if (k0 >= 0)
                        row[k0] = (uint16_t)(pair & 0xFFFFu);
                    if (k1 >= 0)
                        row[k1] = (uint16_t)(pair >> 16);
                } else if (r < K) { /* r even, K even: both or neither */
                    *reinterpret_cast<uint32_t *>(row + r) = pair;
                }
            }
        }
    }
}

/* ---- host side ---- */

static cuda_ctx *cctx(llmq_backend *b, const char *what)
{
    if (!b || !b->name || strcmp(b->name, "cuda") != 0) {
        llmq_fail("%s: needs the CUDA backend", what);
        return NULL;
    }
    return (cuda_ctx *)b->impl;
}

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Point the arrays into blob (same offsets for a clone). */
static void carve(wna16_weight *w)
{
    char *p = (char *)w->blob;
    w->wq = (int4 *)p;
    p += align256(w->code_bytes);
    w->sz = (uint2 *)p;
    p += align256(w->param_bytes);
    w->step_group = (int *)p;
    p += align256((size_t)(w->Kp / 16) * sizeof(int));
    w->perm = (int *)p;
    p += align256((size_t)w->Kp * sizeof(int));
    w->rowpos = (int *)p;
}

static size_t blob_size(const wna16_weight *w)
{
    return align256(w->code_bytes) + align256(w->param_bytes) + align256((size_t)(w->Kp / 16) * sizeof(int)) +
           align256((size_t)w->Kp * sizeof(int)) + align256((size_t)w->K * sizeof(int));
}

/* The repack (see wna16.h) into a host image of the blob. */
static int repack(wna16_weight *w, const int32_t *qweight, const int32_t *qzeros, const uint16_t *scales,
                  const int32_t *g_idx, int v2, char **image)
{
    const int K = w->K, N = w->N, bits = w->bits, ng = w->ng, pf = 32 / bits;
    const int KC = bits == 4 ? Cfg<4>::KC : Cfg<8>::KC;
    const uint32_t mask = (1u << bits) - 1;
    int *cnt = (int *)calloc((size_t)ng, sizeof(int)), *start = (int *)calloc((size_t)ng + 1, sizeof(int));
    if (!cnt || !start) {
        free(cnt);
        free(start);
        return llmq_fail("wna16_prepare: out of host memory");
    }
    /* Groups as contiguous runs of rows, each padded to a 16-row k-step. */
    for (int k = 0; k < K; k++)
        cnt[g_idx[k]]++;
    for (int g = 0; g < ng; g++)
        start[g + 1] = start[g] + (cnt[g] + 15) / 16 * 16;
    w->Kp = (start[ng] + KC - 1) / KC * KC;
    w->nkc = w->Kp / KC;
    w->ntiles = (N + 15) / 16;
    w->code_bytes = (size_t)w->ntiles * w->nkc * 512;
    w->param_bytes = (size_t)ng * w->ntiles * 8 * sizeof(uint2);
    w->blob_bytes = blob_size(w);
    char *img = (char *)calloc(1, w->blob_bytes);
    if (!img) {
        free(cnt);
        free(start);
        return llmq_fail("wna16_prepare: out of host memory (%zu bytes)", w->blob_bytes);
    }
    w->blob = img; /* host image for now: carve gives host pointers */
    carve(w);
    uint32_t *words = (uint32_t *)w->wq;
    uint2 *sz = w->sz;
    int *sg = w->step_group, *perm = w->perm, *rowpos = w->rowpos;

    /* Stable counting sort: row of each input channel, channel of each row. */
    for (int r = 0; r < w->Kp; r++)
        perm[r] = -1;
    for (int g = 0; g < ng; g++)
        cnt[g] = 0;
    w->use_perm = 0;
    for (int k = 0; k < K; k++) {
        const int g = g_idx[k], r = start[g] + cnt[g]++;
        perm[r] = k;
        rowpos[k] = r;
        w->use_perm |= r != k;
    }
    for (int g = 0; g < ng; g++)
        for (int r = start[g]; r < start[g + 1]; r += 16)
            sg[r / 16] = g;
    for (int r = start[ng]; r < w->Kp; r += 16) /* tail padding: any group (x = 0 there) */
        sg[r / 16] = ng - 1;

    /* Codes, tile by tile (the tile's chunks stay in cache while k runs). */
    for (int nt = 0; nt < w->ntiles; nt++)
        for (int k = 0; k < K; k++) {
            const int r = rowpos[k];
            const uint32_t *src = (const uint32_t *)qweight + (size_t)(k / pf) * N;
            uint32_t *chunk = words + ((size_t)nt * w->nkc + r / KC) * 128;
            for (int nl = 0; nl < 16 && nt * 16 + nl < N; nl++) {
                const uint32_t q = (src[nt * 16 + nl] >> (bits * (k % pf))) & mask;
                const CodePos p = code_pos(bits, r % KC, nl);
                chunk[p.lane * 4 + p.word] |= q << p.shift;
            }
        }

    /* Scales and zeros as half pairs {channel gl, channel gl + 8}; padding
     * channels get scale 0, so their (unwritten) outputs are 0. */
    for (int g = 0; g < ng; g++)
        for (int nt = 0; nt < w->ntiles; nt++)
            for (int gl = 0; gl < 8; gl++) {
                uint32_t sh[2] = {0, 0}, zh[2] = {0, 0};
                for (int h = 0; h < 2; h++) {
                    const int n = nt * 16 + gl + 8 * h;
                    if (n >= N)
                        continue;
                    const uint32_t zw = (uint32_t)qzeros[(size_t)g * (N / pf) + n / pf];
                    const int z = (int)((zw >> (bits * (n % pf))) & mask) + (v2 ? 0 : 1);
                    sh[h] = scales[(size_t)g * N + n];
                    zh[h] = llmq_f32_to_f16((float)z);
                }
                sz[((size_t)g * w->ntiles + nt) * 8 + gl] = make_uint2(sh[0] | sh[1] << 16, zh[0] | zh[1] << 16);
            }
    free(cnt);
    free(start);
    *image = img;
    return 0;
}

extern "C" int wna16_prepare(wna16_weight **out, llmq_backend *b, const int32_t *qweight, const int32_t *qzeros,
                             const uint16_t *scales, const int32_t *g_idx, int K, int N, int bits, int v2)
{
    *out = NULL;
    cuda_ctx *c = cctx(b, "wna16_prepare");
    if (!c)
        return -1;
    if (bits != 4 && bits != 8)
        return llmq_fail("wna16_prepare: bits must be 4 or 8, not %d", bits);
    if (K <= 0 || N <= 0 || (long)K * bits % 32 || (long)N * bits % 32)
        return llmq_fail("wna16_prepare: [%d, %d] does not pack at %d bits (K*bits and N*bits %% 32)", N, K, bits);
    int ng = 0;
    for (int k = 0; k < K; k++) {
        if (g_idx[k] < 0 || g_idx[k] >= K)
            return llmq_fail("wna16_prepare: g_idx[%d] = %d outside 0..%d", k, g_idx[k], K - 1);
        ng = g_idx[k] + 1 > ng ? g_idx[k] + 1 : ng;
    }
    wna16_weight *w = (wna16_weight *)calloc(1, sizeof *w);
    if (!w)
        return llmq_fail("wna16_prepare: out of host memory");
    w->K = K;
    w->N = N;
    w->bits = bits;
    w->ng = ng;
    char *img = NULL;
    if (repack(w, qweight, qzeros, scales, g_idx, v2, &img)) {
        free(w);
        return -1;
    }
    void *dev = NULL;
    cudaError_t err = cudaMalloc(&dev, w->blob_bytes);
    if (err == cudaSuccess)
        err = cudaMemcpyAsync(dev, img, w->blob_bytes, cudaMemcpyHostToDevice, c->stream);
    if (err == cudaSuccess)
        err = cudaStreamSynchronize(c->stream);
    free(img);
    if (err != cudaSuccess) {
        const size_t nbytes = w->blob_bytes;
        cudaGetLastError();
        if (dev)
            cudaFree(dev);
        free(w);
        return llmq_fail("wna16_prepare: upload of %zu bytes: %s", nbytes, cudaGetErrorString(err));
    }
    w->blob = dev;
    carve(w);
    *out = w;
    return 0;
}

extern "C" int wna16_clone(wna16_weight **out, llmq_backend *b, const wna16_weight *src)
{
    *out = NULL;
    cuda_ctx *c = cctx(b, "wna16_clone");
    if (!c)
        return -1;
    wna16_weight *w = (wna16_weight *)malloc(sizeof *w);
    if (!w)
        return llmq_fail("wna16_clone: out of host memory");
    *w = *src;
    w->dense = NULL;
    cudaError_t err = cudaMalloc(&w->blob, w->blob_bytes);
    if (err == cudaSuccess)
        err = cudaMemcpyAsync(w->blob, src->blob, w->blob_bytes, cudaMemcpyDeviceToDevice, c->stream);
    if (err == cudaSuccess)
        err = cudaStreamSynchronize(c->stream);
    if (err != cudaSuccess) {
        cudaGetLastError();
        if (w->blob)
            cudaFree(w->blob);
        free(w);
        return llmq_fail("wna16_clone: %s", cudaGetErrorString(err));
    }
    carve(w);
    *out = w;
    return 0;
}

extern "C" void wna16_free(wna16_weight *w)
{
    if (!w)
        return;
    if (w->dense)
        cudaFree(w->dense);
    if (w->blob)
        cudaFree(w->blob);
    free(w);
}

extern "C" void wna16_info(const wna16_weight *w, int *K, int *N, int *bits, size_t *code_bytes, size_t *param_bytes)
{
    if (K)
        *K = w->K;
    if (N)
        *N = w->N;
    if (bits)
        *bits = w->bits;
    if (code_bytes)
        *code_bytes = w->code_bytes;
    if (param_bytes)
        *param_bytes = w->param_bytes;
}

extern "C" void wna16_set_scratch(wna16_weight *w, void *scratch, size_t bytes)
{
    w->scratch = scratch;
    w->scratch_bytes = scratch ? bytes : 0;
}

template <typename T, int BITS, int MT, bool PERM>
static void launch_mma(const wna16_weight *w, cudaStream_t st, void *y, const void *x, int M)
{
    const dim3 grid((unsigned)w->ntiles, ceil_div((size_t)M, (size_t)(8 * MT)));
    wna16_mma_kernel<T, BITS, MT, PERM><<<grid, WARPS * 32, 0, st>>>(
        (T *)y, (const T *)x, M, w->K, w->N, w->wq, w->sz, w->step_group, w->perm, w->nkc, w->ntiles);
}

/* Row tiles per block by M: enough to cover M when it is small (weights
 * read once), 8 (64 rows per pass over the weights) beyond. */
template <typename T, int BITS>
static void launch_mma_mt(const wna16_weight *w, cudaStream_t st, void *y, const void *x, int M)
{
#define WNA16_LAUNCH(MT)                                                                                             \
    (w->use_perm ? launch_mma<T, BITS, MT, true>(w, st, y, x, M) : launch_mma<T, BITS, MT, false>(w, st, y, x, M))
    if (M <= 8)
        WNA16_LAUNCH(1);
    else if (M <= 16)
        WNA16_LAUNCH(2);
    else if (M <= 32)
        WNA16_LAUNCH(4);
    else
        WNA16_LAUNCH(8);
#undef WNA16_LAUNCH
}

static int run_mma(const wna16_weight *w, cuda_ctx *c, llmq_dtype dt, void *y, const void *x, int M)
{
    if (M > 65535 * 64)
        return llmq_fail("wna16_linear: M = %d rows is too many for one call", M);
    if (dt == LLMQ_F16)
        w->bits == 4 ? launch_mma_mt<__half, 4>(w, c->stream, y, x, M)
                     : launch_mma_mt<__half, 8>(w, c->stream, y, x, M);
    else
        w->bits == 4 ? launch_mma_mt<__nv_bfloat16, 4>(w, c->stream, y, x, M)
                     : launch_mma_mt<__nv_bfloat16, 8>(w, c->stream, y, x, M);
    LAUNCH_CHECK("wna16_mma_kernel");
    return 0;
}

/* The decode kernel's dynamic shared memory: the tile's scales/zeros and
 * the step -> group table. Past this budget (tiny groups on a huge K) the
 * MMA kernel, which reads them from global memory, takes over. */
static size_t gemv_smem(const wna16_weight *w)
{
    const int steps = w->bits == 4 ? Cfg<4>::STEPS : Cfg<8>::STEPS;
    return (size_t)w->ng * 8 * sizeof(uint2) + (size_t)w->nkc * steps * sizeof(int);
}
#define GEMV_SMEM_MAX ((size_t)32 << 10)

template <typename T, int BITS, int MT, bool PERM>
static void launch_gemv(const wna16_weight *w, cudaStream_t st, void *y, const void *x, int M)
{
    const dim3 grid((unsigned)w->ntiles, ceil_div((size_t)M, (size_t)(8 * MT)));
    wna16_gemv_kernel<T, BITS, MT, PERM><<<grid, WARPS * 32, gemv_smem(w), st>>>(
        (T *)y, (const T *)x, M, w->K, w->N, w->wq, w->sz, w->step_group, w->perm, w->nkc, w->ntiles, w->ng);
}

/* 8 rows per block row up to M = 8, then 16 (two row tiles per fragment). */
template <typename T, int BITS>
static void launch_gemv_mt(const wna16_weight *w, cudaStream_t st, void *y, const void *x, int M)
{
    if (M <= 8)
        w->use_perm ? launch_gemv<T, BITS, 1, true>(w, st, y, x, M) : launch_gemv<T, BITS, 1, false>(w, st, y, x, M);
    else
        w->use_perm ? launch_gemv<T, BITS, 2, true>(w, st, y, x, M) : launch_gemv<T, BITS, 2, false>(w, st, y, x, M);
}

static int run_gemv(const wna16_weight *w, cuda_ctx *c, llmq_dtype dt, void *y, const void *x, int M)
{
    if (gemv_smem(w) > GEMV_SMEM_MAX)
        return llmq_fail("wna16_linear: %d groups x %d k-steps need %zu bytes of shared memory (gemv path)", w->ng,
                         w->nkc, gemv_smem(w));
    if (M > 65535 * 16)
        return llmq_fail("wna16_linear: M = %d rows is too many for one call", M);
    if (dt == LLMQ_F16)
        w->bits == 4 ? launch_gemv_mt<__half, 4>(w, c->stream, y, x, M)
                     : launch_gemv_mt<__half, 8>(w, c->stream, y, x, M);
    else
        w->bits == 4 ? launch_gemv_mt<__nv_bfloat16, 4>(w, c->stream, y, x, M)
                     : launch_gemv_mt<__nv_bfloat16, 8>(w, c->stream, y, x, M);
    LAUNCH_CHECK("wna16_gemv_kernel");
    return 0;
}

static int check_dt(llmq_dtype dt, const char *what)
{
    if (dt != LLMQ_F16 && dt != LLMQ_BF16)
        return llmq_fail("%s: storage type %s (F16 or BF16 only)", what, llmq_dtype_name(dt));
    return 0;
}

template <typename T, int BITS> static void launch_dequant(const wna16_weight *w, cuda_ctx *c, void *dst)
{
    const size_t nchunks = (size_t)w->ntiles * w->nkc;
    const unsigned grid = grid_for(c, nchunks * 32, 256);
    if (w->use_perm)
        wna16_dequant_kernel<T, BITS, true><<<grid, 256, 0, c->stream>>>((T *)dst, w->K, w->N, w->wq, w->sz,
                                                                         w->step_group, w->perm, w->nkc, w->ntiles);
    else
        wna16_dequant_kernel<T, BITS, false><<<grid, 256, 0, c->stream>>>((T *)dst, w->K, w->N, w->wq, w->sz,
                                                                          w->step_group, w->perm, w->nkc, w->ntiles);
}

extern "C" int wna16_dequant(const wna16_weight *w, llmq_backend *b, void *dst)
{
    cuda_ctx *c = cctx(b, "wna16_dequant");
    if (!c || check_dt(b->dt, "wna16_dequant"))
        return -1;
    if (b->dt == LLMQ_F16)
        w->bits == 4 ? launch_dequant<__half, 4>(w, c, dst) : launch_dequant<__half, 8>(w, c, dst);
    else
        w->bits == 4 ? launch_dequant<__nv_bfloat16, 4>(w, c, dst) : launch_dequant<__nv_bfloat16, 8>(w, c, dst);
    LAUNCH_CHECK("wna16_dequant_kernel");
    return 0;
}

extern "C" int wna16_cache_dense(wna16_weight *w, llmq_backend *b, int on)
{
    if (w->dense) {
        cudaFree(w->dense); /* waits for work in flight that may read it */
        w->dense = NULL;
    }
    if (!on)
        return 0;
    if (!cctx(b, "wna16_cache_dense") || check_dt(b->dt, "wna16_cache_dense"))
        return -1;
    CUDA_TRY(cudaMalloc(&w->dense, (size_t)w->N * w->K * 2));
    w->dense_dt = b->dt;
    if (wna16_dequant(w, b, w->dense)) {
        cudaFree(w->dense);
        w->dense = NULL;
        return -1;
    }
    return 0;
}

extern "C" int wna16_linear_path(wna16_weight *w, llmq_backend *b, void *y, const void *x, int M, int path)
{
    cuda_ctx *c = cctx(b, "wna16_linear");
    if (!c || check_dt(b->dt, "wna16_linear"))
        return -1;
    if (M < 0)
        return llmq_fail("wna16_linear: M = %d", M);
    if (M == 0)
        return 0;
    if (((uintptr_t)x & 3) || ((uintptr_t)y & 1))
        return llmq_fail("wna16_linear: x must be 4-byte aligned, y 2-byte aligned");
    const size_t dense_bytes = (size_t)w->N * w->K * 2;
    if (path == WNA16_AUTO) {
        if (M <= WNA16_GEMV_MAX_M && gemv_smem(w) <= GEMV_SMEM_MAX)
            path = WNA16_GEMV;
        else if (w->dense && w->dense_dt == b->dt)
            path = WNA16_DENSE;
        else if (w->scratch && w->scratch_bytes >= dense_bytes)
            path = WNA16_SCRATCH;
        else
            path = WNA16_MMA;
    }
    switch (path) {
    case WNA16_GEMV: return run_gemv(w, c, b->dt, y, x, M);
    case WNA16_MMA: return run_mma(w, c, b->dt, y, x, M);
    case WNA16_DENSE:
        if (!w->dense || w->dense_dt != b->dt)
            return llmq_fail("wna16_linear: no dense %s copy (wna16_cache_dense)", llmq_dtype_name(b->dt));
        return b->linear(b, y, x, w->dense, NULL, M, w->K, w->N);
    case WNA16_SCRATCH:
        if (!w->scratch || w->scratch_bytes < dense_bytes)
            return llmq_fail("wna16_linear: scratch of %zu bytes needed (wna16_set_scratch)", dense_bytes);
        if (wna16_dequant(w, b, w->scratch))
            return -1;
        return b->linear(b, y, x, w->scratch, NULL, M, w->K, w->N);
    default: return llmq_fail("wna16_linear: unknown path %d", path);
    }
}

extern "C" int wna16_linear(wna16_weight *w, llmq_backend *b, void *y, const void *x, int M)
{
    return wna16_linear_path(w, b, y, x, M, WNA16_AUTO);
}

extern "C" int wna16_forward(struct llmq_linear *lin, llmq_backend *b, void *y, const void *x, int rows)
{
    wna16_weight *w = (wna16_weight *)lin->ctx;
    if (w->K != lin->in || w->N != lin->out)
        return llmq_fail("wna16_forward: weight [%d, %d] in a [%d, %d] linear", w->N, w->K, lin->out, lin->in);
    if (wna16_linear(w, b, y, x, rows))
        return -1;
    if (lin->bias && cuda_add_bias((cuda_ctx *)b->impl, b->dt, y, lin->bias, rows, lin->out))
        return -1;
    return 0;
}

extern "C" void wna16_free_ctx(struct llmq_linear *lin, llmq_backend *b)
{
    (void)b;
    wna16_free((wna16_weight *)lin->ctx);
    lin->ctx = NULL;
}
