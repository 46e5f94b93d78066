/* Internals of the W4A16 / W8A16 kernels (kernels/wna16.h), shared by
 * kernels/wna16.cu (repack, the MMA and ring GEMV products, dequantization,
 * the host-side paths), kernels/wna16_stream.cu (the streaming GEMV) and
 * kernels/wna16_slice.cu (the slice GEMV for a few rows):
 * the weight handle, the repacked code layout, and the device steps that
 * turn a lane's code words into mma A fragments. Not an interface: only
 * those three files include it. */
#ifndef LLMQ_KERNELS_WNA16_INTERNAL_CUH
#define LLMQ_KERNELS_WNA16_INTERNAL_CUH

#include <string.h>

#include <cooperative_groups.h>

#include "kernels/cuda_common.cuh"

extern "C" {
#include "kernels/wna16.h"
}

/* One remembered plan of the stream kernel (kernels/wna16_stream.cu): the
 * split depends only on the key, and a decode step asks for the same few
 * keys on every call of every linear. */
struct wna16_stream_memo {
    int M, ntiles, regs, force_sw, device, ok; /* M = 0: empty; ntiles: of the launch (a group's sum) */
    size_t xs_bytes;
    int sw, cps, gspan;
    size_t smem;
};

/* The ring GEMV's plan (kernels/wna16.cu), here for its memo below. */
#define GV_KS_MAX 8 /* K slices: the portable cluster size */

struct GvPlan {
    int mt, ks, cps, ns, gspan, blocks;
    size_t smem;
    int glo[GV_KS_MAX], ghi[GV_KS_MAX];
};

/* One remembered ring GEMV plan: besides M and regs it depends on the
 * device (its SM count, shared memory and attributes) and on three of
 * wna16_gemv_tune's knobs, all in the key. */
struct wna16_gemv_memo {
    int M, regs, device, num_sms, ks_max, bps, ns_max, ok; /* M = 0: empty */
    size_t smem_optin;
    GvPlan plan;
};

struct wna16_weight {
    int K, N, bits, ng;
    int Kp, nkc, ntiles; /* repacked rows (padded), 16-byte chunks per 16 channels, Np / 16 */
    int use_perm;        /* act-order (or padded groups): x gathered through perm */
    int spg_shift;       /* k-step s is in group s >> spg_shift (static groups of 16 * 2^j rows), or -1 */
    void *blob;          /* one device allocation holding the arrays below */
    size_t blob_bytes, code_bytes, param_bytes;
    int4 *wq;            /* [ntiles][nkc][32 lanes] */
    uint2 *sz;           /* [ng][ntiles][8]: {half2 scales, half2 zeros} of channels gl, gl+8 */
    int *step_group;     /* [Kp/16]: group of each 16-row k-step */
    int *perm;           /* [Kp]: repacked row -> input channel, -1 = padding */
    int *rowpos;         /* [K]: input channel -> repacked row (kept for inspection) */
    int nf4;             /* NF4 (wna16_prepare_nf4): codes index nf4_code, sz holds fp32 absmax pairs */
    float *nf4_code;     /* [16] the codebook on the device (NF4 weights) */
    int *sg_host;        /* host copy of step_group (the GEMV plan reads group spans), then (use_perm) of perm */
    int *perm_host;      /* use_perm: that copy of perm (weights that read x in one order: q/k/v, gate/up), or NULL */
    wna16_stream_memo st_memo[4]; /* the stream kernel's plans, replaced round robin (not thread-safe) */
    int st_memo_next;
    wna16_gemv_memo gv_memo[4]; /* the ring GEMV's plans, likewise */
    int gv_memo_next;
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

/* The A fragment of k-step s (4 registers) from a lane's 4 code words.
 * EXACT: W = s (q - z) rounded to dt once, as Deq does it (bf16 always,
 * fp16 with two row tiles). Otherwise (fp16, one row tile) the fragment is
 * the exact integers q - z and the scale is applied by the caller, in fp32,
 * to the group's partial sums: one multiply per group instead of one per
 * weight pair. fp16 tricks: the mask and the 0x6400 exponent go in one
 * LOP3; 4-bit registers 1 and 3 take their nibbles where they lie (bits 4-7
 * of each half) as 1024 + 16q, and fma(h, 1/16, -(64 + z)) = q - z exactly,
 * so one shift per word instead of three; at 8 bits one PRMT places the
 * byte and the 0x64 exponent byte together. */
template <typename T, int BITS, bool EXACT> struct GvDeq {
    Deq<T> d;
    __device__ __forceinline__ void init() {}
    __device__ __forceinline__ void set(uint2 p) { d.set(p); }
    __device__ __forceinline__ void frag(const uint32_t (&w)[4], int s, uint32_t (&af)[4]) const
    {
#pragma unroll
        for (int i = 0; i < 4; i++)
            af[i] = d(code_pair<BITS>(w, s, i), i & 1);
    }
};

__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t mask, uint32_t bits)
{
    uint32_t r; /* (a & mask) | bits in one instruction */
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(r) : "r"(a), "r"(mask), "r"(bits));
    return r;
}

template <int BITS, bool EXACT> struct GvDeq<__half, BITS, EXACT> {
    __half2 s[2], z[2], zq; /* z = 1024 + zero; zq = -(64 + zero) of channel gl + 8 */
    float sf[2];            /* !EXACT: the scales of channels gl, gl + 8 */
    __device__ __forceinline__ void init() { sf[0] = sf[1] = 0.0f; }
    __device__ __forceinline__ void set(uint2 p)
    {
        const __half2 sp = as_h2(p.x), zp = as_h2(p.y);
        if (EXACT) {
            s[0] = __low2half2(sp);
            s[1] = __high2half2(sp);
        } else {
            sf[0] = __low2float(sp);
            sf[1] = __high2float(sp);
        }
        const __half2 zz = __hadd2(zp, __float2half2_rn(1024.0f));
        z[0] = __low2half2(zz);
        z[1] = __high2half2(zz);
        zq = __hneg2(__hadd2(__high2half2(zp), __float2half2_rn(64.0f)));
    }
    __device__ __forceinline__ uint32_t fin(__half2 qz, int h) const
    {
        return as_u32(EXACT ? __hmul2(qz, s[h]) : qz);
    }
    __device__ __forceinline__ void frag(const uint32_t (&w)[4], int st, uint32_t (&af)[4]) const
    {
        if (BITS == 4) {
            const uint32_t w0 = w[st], w8 = w0 >> 8;
            const __half2 r16 = __float2half2_rn(0.0625f);
            af[0] = fin(__hsub2(as_h2(lop3_and_or(w0, 0x000F000Fu, 0x64006400u)), z[0]), 0);
            af[1] = fin(__hfma2(as_h2(lop3_and_or(w0, 0x00F000F0u, 0x64006400u)), r16, zq), 1);
            af[2] = fin(__hsub2(as_h2(lop3_and_or(w8, 0x000F000Fu, 0x64006400u)), z[0]), 0);
            af[3] = fin(__hfma2(as_h2(lop3_and_or(w8, 0x00F000F0u, 0x64006400u)), r16, zq), 1);
        } else {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const uint32_t e = __byte_perm(w[2 * st + (i >> 1)], 0x64646464u, (i & 1) ? 0x4342u : 0x4140u);
                af[i] = fin(__hsub2(as_h2(e), z[i & 1]), i & 1);
            }
        }
    }
};

/* Round 3, fp16 with one row tile (FOLD): the mma takes the codes as they
 * come out of the LOP3 (PRMT at 8 bits), with no subtraction at all: 4-bit
 * registers 0 and 2 (channel gl) are 1024 + q, registers 1 and 3 (channel
 * gl + 8, nibbles left at bits 4-7) 1024 + 16 q; 8-bit pairs are 1024 + q.
 * The zero point and the offset come off once per group:
 *   sum_k x (o + m q) = o X + m sum_k x q,  X = sum_k x over the group,
 * so the group's contribution is (s / m) (accg - (o + m z) X), with X from
 * one extra mma per k-step (A = ones, shared by the GV_TB tiles). o + m z
 * and s / 16 are exact in fp32; the cancellation costs ~2^-24 x 1264 / |q-z|
 * relative per group in fp32, far below the fp16 output rounding. 4 LOP3 +
 * 1 shift per A fragment instead of 9 instructions. */
template <int BITS> struct GvDeqFold {
    /* No per-group state in registers (the fold's x sums already cost 4):
     * the flush reads the group's scales/zeros from shared memory again. */
    __device__ __forceinline__ void init() {}
    __device__ __forceinline__ void set(uint2) {}
    /* per channel gl, gl + 8: s / m and o + m z */
    static __device__ __forceinline__ void corr(uint2 p, float (&sf)[2], float (&zc)[2])
    {
        const __half2 sp = as_h2(p.x), zp = as_h2(p.y);
        sf[0] = __low2float(sp);
        zc[0] = 1024.0f + __low2float(zp);
        if (BITS == 4) {
            sf[1] = __high2float(sp) * 0.0625f;
            zc[1] = 1024.0f + 16.0f * __high2float(zp);
        } else {
            sf[1] = __high2float(sp);
            zc[1] = 1024.0f + __high2float(zp);
        }
    }
    __device__ __forceinline__ void frag(const uint32_t (&w)[4], int st, uint32_t (&af)[4]) const
    {
        if (BITS == 4) {
            const uint32_t w0 = w[st], w8 = w0 >> 8;
            af[0] = lop3_and_or(w0, 0x000F000Fu, 0x64006400u); /* no zero, no scale: see corr */
            af[1] = lop3_and_or(w0, 0x00F000F0u, 0x64006400u);
            af[2] = lop3_and_or(w8, 0x000F000Fu, 0x64006400u);
            af[3] = lop3_and_or(w8, 0x00F000F0u, 0x64006400u);
        } else {
#pragma unroll
            for (int i = 0; i < 4; i++)
                af[i] = __byte_perm(w[2 * st + (i >> 1)], 0x64646464u, (i & 1) ? 0x4342u : 0x4140u);
        }
    }
};

/* NF4 (wna16_prepare_nf4), the slice kernel: byte i of a lane's word s is
 * the code pair of A register i (low nibble the even column), and a table
 * in shared memory maps it to the pair of codebook values in dt. The table
 * has a column per lane (entry e of lane l at word 32 e + l: every lane
 * reads its own bank), so a register is a byte extract, an address and one
 * conflict-free 4-byte shared load. The block's absmax multiplies the
 * chunk's fp32 sums at the flush (kernels/wna16_slice.cu). */
struct GvDeqNf4 {
    const uint32_t *lut; /* this lane's column */
    __device__ __forceinline__ void init() {}
    __device__ __forceinline__ void set(uint2) {}
    __device__ __forceinline__ void frag(const uint32_t (&w)[4], int st, uint32_t (&af)[4]) const
    {
#pragma unroll
        for (int i = 0; i < 4; i++)
            af[i] = lut[__byte_perm(w[st], 0u, 0x4440u + i) * 32];
    }
};

/* The streaming kernels' per-lane loads (kernels/wna16_stream.cu,
 * kernels/wna16_slice.cu). */

/* Chunks kc .. kc + U - 1 of a lane's tile (wt: the tile's codes + lane),
 * zeros past kc1. */
template <int U> __device__ __forceinline__ void lane_chunks_load(int4 (&w)[U], const int4 *wt, int kc, int kc1)
{
#pragma unroll
    for (int u = 0; u < U; u++)
        w[u] = kc + u < kc1 ? ld_stream(wt + (size_t)(kc + u) * 32) : make_int4(0, 0, 0, 0);
}

/* The scales/zeros of groups glo .. glo + ngr - 1 of tile nt into shared
 * memory (dst[(g - glo) * 8 + channel pair]) by cp.async, 8 bytes a lane
 * of the warp. Nothing waits here: the caller's next cp_async_commit closes
 * the group that holds them, and after its wait for that group a
 * __syncwarp() lets every lane read them. (A blocking load + store here,
 * issued behind the codes in flight, was 17 % of the slice kernel's stall
 * samples at M = 16: kernels/WNA16_NOTES.md round 7.) */
__device__ __forceinline__ void tile_scales_async(uint2 *dst, const uint2 *sz, int glo, int ngr, int ntiles, int nt,
                                                  int lane)
{
#pragma unroll 1 /* mostly one pass (ngr <= 4): an unrolled loop's set-up cost more than the copies */
    for (int i = lane; i < ngr * 8; i += 32)
        cp_async8(dst + i, sz + ((size_t)(glo + (i >> 3)) * ntiles + nt) * 8 + (i & 7));
}

/* x staged in shared memory in fragment order (the stream kernel at M = 1,
 * the slice kernel): 16-byte piece p of a row (its words 4p .. 4p + 3, one
 * for each t of a quad) goes to word t * (XW / 4) + j of its chunk's XW
 * words, j = (4p mod XW) / 4, so that lane t's B words of a chunk (t + 4j
 * in the row, j = 2s and 2s + 1 for k-step s) are contiguous. Chunks are
 * XP words apart: XW, or (the slice kernel at 4 bits) XW + XW / 4, so
 * that a warp's stores of 32 consecutive pieces of a row (4 chunks) fall
 * on 32 banks instead of 8 (ncu: 4-way conflicts at XP = XW). */
template <int XW, int XP = XW> __device__ __forceinline__ void xs_store_piece(uint32_t *row, int p, uint4 v)
{
    uint32_t *d = row + (4 * p) / XW * XP + (4 * p) % XW / 4;
    d[0] = v.x;
    d[XW / 4] = v.y;
    d[2 * (XW / 4)] = v.z;
    d[3 * (XW / 4)] = v.w;
}

/* The sum of piece v's 8 halves, then of the G8 lanes that hold one flush
 * unit's pieces (lanes G8-aligned; every lane of the warp takes part), in
 * fp32 and a fixed order: the fold's group sums of x. */
template <int G8> __device__ __forceinline__ float xs_unit_sum(uint4 v)
{
    const float2 f0 = __half22float2(as_h2(v.x)), f1 = __half22float2(as_h2(v.y)), f2 = __half22float2(as_h2(v.z)),
                 f3 = __half22float2(as_h2(v.w));
    float sum = ((f0.x + f0.y) + (f1.x + f1.y)) + ((f2.x + f2.y) + (f3.x + f3.y));
#pragma unroll
    for (int o = G8 / 2; o >= 1; o >>= 1)
        sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
    return sum;
}

/* A warp's output fragments, its even and odd k-step sets added, into
 * red[warp][mt][lane] (the block then sums the warps in a fixed order). */
template <int MT>
__device__ __forceinline__ void red_store(float4 *red, const float (&acc)[2][MT][4], int warp, int lane)
{
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        red[(warp * MT + mt) * 32 + lane] = make_float4(acc[0][mt][0] + acc[1][mt][0], acc[0][mt][1] + acc[1][mt][1],
                                                        acc[0][mt][2] + acc[1][mt][2], acc[0][mt][3] + acc[1][mt][3]);
}

/* n / d for 2 <= d and n * d < 2^32, by one multiply-high: d's reciprocal
 * m = floor(2^32 / d) + 1 = 2^32 / d + e (0 < e <= 1) gives n m / 2^32 =
 * n / d + n e / 2^32 with n e / 2^32 < 1 / d, which never reaches the next
 * integer. An integer division by a run-time value is ~20 instructions,
 * and so is computing m: the host makes DivBy for the kernels, which get
 * it in their arguments (kernels/WNA16_NOTES.md rounds 10 and 11). */
struct DivBy {
    uint32_t m;
    static DivBy of(uint32_t d) { return DivBy{0xFFFFFFFFu / d + 1u}; }
    __device__ __forceinline__ int operator()(int n) const { return (int)__umulhi((uint32_t)n, m); }
};

/* The end of a K-split GEMV whose K slices form a thread-block cluster of
 * nks blocks (ring and slice kernels, compute capability 9.0): the slices'
 * sums are added in rank order, and rank ks writes its share of the outputs.
 *
 * By push, not pull (kernels/WNA16_NOTES.md round 8): each block sends the
 * other ranks their shares with st.async, which completes on the receiver's
 * mbarrier, and waits only for the bytes sent to it. Pulling through
 * distributed shared memory needs a cluster barrier whose release is a
 * GPU-wide memory barrier, then a round trip per read, then a second
 * barrier that keeps each block's sums alive until they have been read:
 * 0.8-1.2 us of a 8-16 us product at 16 rows on the H100.
 *
 * The block's sums are E elements in fragment order (per tile tl and row
 * tile mt, e >> 7 = tl * MT + mt, then 32 lanes x 4 accumulators); rank q
 * owns elements [q * per, (q + 1) * per) (per a multiple of 4, so that a
 * float4 goes to one rank), all in a ClusterSplit that the host computes
 * (cluster_split). recv, per * nks floats of shared
 * memory (16-byte aligned, used by nothing else while the kernel runs: a
 * rank may send before this block has finished its own slice), receives
 * them at [sender][element - ks * per], and bar (8 bytes) counts them.
 *
 * cluster_sum_begin: at the start of the kernel, every thread (before any
 * other cluster barrier). cluster_sum_store: at the end, every thread, rf
 * (shared memory, written before a __syncthreads) holding the sums of the
 * nw warps that have parts of them in runs of U elements (U a multiple of
 * 4), the nw runs of one unit consecutive: element e is the sum over j < nw
 * of rf[(e / U) * U * nw + e % U + j * U]. Tiles from t0, rows from m0 of
 * y [M, N]. */
struct ClusterSplit {
    int E, nks, per; /* elements, ranks, elements a rank owns */
    DivBy by_per;    /* e -> its owner rank (per >= 4, e per < E^2 < 2^32) */
};

/* Host side: the split of E sums over nks ranks, for a kernel's arguments. */
static inline ClusterSplit cluster_split(int E, int nks)
{
    const int per = ((E + nks - 1) / nks + 3) & ~3;
    return ClusterSplit{E, nks, per, DivBy::of((uint32_t)per)};
}

/* The cluster's index along x (blockIdx.x / cluster size, without a division). */
__device__ __forceinline__ unsigned cluster_id_x()
{
    unsigned r;
    asm("mov.u32 %0, %%clusterid.x;" : "=r"(r));
    return r;
}

/* Elements rank ks owns (the last ranks may own fewer, or none). */
__device__ __forceinline__ int cluster_sum_len(int E, int ks, int per)
{
    const int left = E - ks * per;
    return left < per ? (left > 0 ? left : 0) : per;
}

__device__ __forceinline__ void cluster_sum_begin(uint64_t *bar, const ClusterSplit &cs, int ks)
{
    if (threadIdx.x == 0) {
        const int len = cluster_sum_len(cs.E, ks, cs.per);
        mbar_init(bar, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        mbar_expect_tx(bar, (uint32_t)((cs.nks - 1) * len * 4)); /* the one arrival; the bytes may come first */
    }
    /* No rank sends before every rank has initialized its mbarrier: the
     * wait is in cluster_sum_store, by when all have long arrived. */
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}

/* Element e's float4 v (e a multiple of 4) to its owner rank: this
 * block's receive buffer, or the owner's through st.async. */
__device__ __forceinline__ void cluster_sum_send(float *recv, uint32_t recv_s, uint32_t bar_s, int e, float4 v,
                                                 int ks, const ClusterSplit &cs)
{
    const int q = cs.by_per(e), o = ks * cs.per + (e - q * cs.per);
    if (q == ks) {
        *reinterpret_cast<float4 *>(recv + o) = v;
    } else {
        uint32_t rd, rb;
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(rd) : "r"(recv_s + (uint32_t)o * 4), "r"(q));
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(rb) : "r"(bar_s), "r"(q));
        asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];\n"
                     ::"r"(rd), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w), "r"(rb)
                     : "memory");
    }
}

/* After every element of the block has been sent: wait for the other
 * ranks' shares, add them in rank order and store this rank's outputs. */
template <typename T, int MT>
__device__ __forceinline__ void cluster_sum_finish(const float *recv, uint64_t *bar, const ClusterSplit &cs, int ks,
                                                   int tid, int nthreads, int t0, int m0, int M, int N, T *y)
{
    mbar_wait<true>(bar, 0);
    __syncthreads(); /* this block's own share */
    const int len = cluster_sum_len(cs.E, ks, cs.per);
    for (int i = tid; i < len; i += nthreads) {
        float v = 0.0f;
        for (int q = 0; q < cs.nks; q++)
            v += recv[q * cs.per + i];
        const int e = ks * cs.per + i, c = e & 3, ln = (e >> 2) & 31, mt = (e >> 7) % MT, tl = (e >> 7) / MT;
        const int n = (t0 + tl) * 16 + (ln >> 2) + (c >> 1) * 8, m = m0 + mt * 8 + (ln & 3) * 2 + (c & 1);
        if (m < M && n < N)
            y[(size_t)m * N + n] = from_f32<T>(v);
    }
    /* No barrier before exit: every byte sent to this block has arrived,
     * and nothing reads its shared memory. */
}

template <typename T, int MT>
__device__ __forceinline__ void cluster_sum_store(float *recv, uint64_t *bar, const float *rf, int U, int nw,
                                                  const ClusterSplit &cs, int ks, int tid, int nthreads, int t0, int m0,
                                                  int M, int N, T *y)
{
    asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
    const uint32_t recv_s = smem_u32(recv), bar_s = smem_u32(bar);
    for (int e = tid * 4; e < cs.E; e += nthreads * 4) {
        const int u = e / U;
        const float *r = rf + (size_t)u * U * nw + (e - u * U);
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int j = 0; j < nw; j++) {
            const float4 w = *reinterpret_cast<const float4 *>(r + (size_t)j * U);
            v.x += w.x, v.y += w.y, v.z += w.z, v.w += w.w;
        }
        cluster_sum_send(recv, recv_s, bar_s, e, v, ks, cs);
    }
    cluster_sum_finish<T, MT>(recv, bar, cs, ks, tid, nthreads, t0, m0, M, N, y);
}

/* The same where each tile's sums are one warp's (the slice kernel with
 * one warp per tile): warp w sends its own fragments, elements
 * [w MT 128, (w + 1) MT 128), as soon as its run ends, without the
 * block's barriers and the round trip through shared memory of
 * red_store. The same sums in the same order as cluster_sum_store. */
template <typename T, int MT>
__device__ __forceinline__ void cluster_sum_store_warp(float *recv, uint64_t *bar, const float (&acc)[2][MT][4],
                                                       int warp, int lane, const ClusterSplit &cs, int ks,
                                                       int tid, int nthreads, int t0, int m0, int M, int N, T *y)
{
    asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
    const uint32_t recv_s = smem_u32(recv), bar_s = smem_u32(bar);
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        cluster_sum_send(recv, recv_s, bar_s, ((warp * MT + mt) * 32 + lane) * 4,
                         make_float4(acc[0][mt][0] + acc[1][mt][0], acc[0][mt][1] + acc[1][mt][1],
                                     acc[0][mt][2] + acc[1][mt][2], acc[0][mt][3] + acc[1][mt][3]),
                         ks, cs);
    cluster_sum_finish<T, MT>(recv, bar, cs, ks, tid, nthreads, t0, m0, M, N, y);
}

/* Registers per thread of kern, read once per kernel (*regs caches it, 0
 * until then) after allowing it the device's whole opt-in shared memory:
 * the GEMV plans size their blocks from both. */
template <typename K> cudaError_t kernel_regs(K kern, const cuda_ctx *c, int *regs)
{
    if (*regs)
        return cudaSuccess;
    cudaFuncAttributes fa;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)c->smem_optin);
    if (e == cudaSuccess)
        e = cudaFuncGetAttributes(&fa, kern);
    if (e == cudaSuccess)
        *regs = fa.numRegs > 0 ? fa.numRegs : 1;
    return e;
}

/* The weight's arrays and shape into a GEMV kernel's argument block (both
 * kernels name these fields alike); zeroes the rest. */
template <typename A> void weight_args(A *a, const wna16_weight *w, int M)
{
    memset(a, 0, sizeof *a);
    a->wq = w->wq;
    a->sz = w->sz;
    a->step_group = w->step_group;
    a->perm = w->perm;
    a->M = M;
    a->K = w->K;
    a->N = w->N;
    a->nkc = w->nkc;
    a->ntiles = w->ntiles;
}

/* The streaming GEMV (kernels/wna16_stream.cu): 0 and y = x . W^T, or -1
 * with llmq_fail(). stream_usable says whether it takes this weight at M. */
int wna16_stream_run(const wna16_weight *w, cuda_ctx *c, llmq_dtype dt, void *y, const void *x, int M);
int wna16_stream_usable(const wna16_weight *w, const cuda_ctx *c, int M);
/* The same for n <= WNA16_GROUP_MAX weights of the same K, bits and groups
 * reading one x, in one launch: 0, -1 with llmq_fail(), or 1 when the
 * stream kernel does not take them together (nothing done). */
int wna16_stream_run_group(const wna16_weight *const *ws, int n, cuda_ctx *c, llmq_dtype dt, void *const *ys,
                           const void *x, int M);
/* wna16_gemv_tune's knobs for it: warps per block (0: planned), no PDL,
 * W rounded before the mma at M <= 8 too, L2 prefetch distance, dry run,
 * q - z per pair instead of the zero point folded into the group sums,
 * x read from global memory at M = 1 instead of staged in shared memory. */
void wna16_stream_tune_set(int warps, int no_pdl, int exact_dequant, int prefetch, int dry, int nofold, int no_xs);

/* The slice GEMV (kernels/wna16_slice.cu): 0 and y = x . W^T, or -1 with
 * llmq_fail(); slice_usable says whether it takes this weight at M (static
 * groups of whole chunks, compute capability 9.0). checked:
 * the caller has had slice_usable say yes for w, c and M, and x is 16-byte
 * aligned (AUTO asks before it chooses), so run does not ask again. */
int wna16_slice_run(const wna16_weight *w, cuda_ctx *c, llmq_dtype dt, void *y, const void *x, int M, int checked);
int wna16_slice_usable(const wna16_weight *w, const cuda_ctx *c, int M);
/* The slice kernel's K granularity: a warp's runs are whole batches of
 * chunks (bits 4: 256 rows, 8: 128). */
int wna16_slice_k_unit(int bits);
/* y[i] = x . W_i^T for act-order weights that share one row order
 * (equal perm_host: q/k/v or gate/up of a GPTQ act-order checkpoint,
 * whose orders come from one Hessian) and one scratch, each of which the caller
 * has had AUTO choose the slice kernel for at M: x sorted into the scratch
 * once instead of once per weight. 0, -1 with llmq_fail(), or 1 when not
 * taken (fewer than SORT_MIN_M rows, other orders or scratches: nothing
 * done). */
int wna16_slice_run_group(const wna16_weight *const *ws, int n, cuda_ctx *c, llmq_dtype dt, void *const *ys,
                          const void *x, int M);
/* wna16_gemv_tune's knobs for it: tiles per block, warps per tile, K
 * slices (0: planned), no PDL, W rounded before the mma in fp16 too. */
void wna16_slice_tune_set(int tb, int wpt, int ks, int no_pdl, int exact_dequant);

#endif
