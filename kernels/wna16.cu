/* W4A16 / W8A16 on the GPTQ layout (kernels/wna16.h): load-time repack, two
 * tensor-core products (MMA, the first version, and GEMV, the decode
 * kernel), a dense dequantization for the cuBLAS paths.
 *
 * Both products multiply 16 output channels (one mma M-tile, A = the
 * dequantized weight) by 8 rows of x per mma (B), MT such row tiles reusing
 * one fragment; a lane's 16-byte chunk word holds its A fragments for 4
 * k-steps (4-bit) or 2 (8-bit). MMA: one block per 16 channels, 8 warps
 * splitting K (chunk kc to warp kc % 8), x and the scales loaded next to
 * each mma from global memory. GEMV: bulk copies of the codes into a
 * shared-memory ring, K split across a thread-block cluster (see its
 * comment). Blocks along grid.y take further groups of 8*MT rows. */
#include <stdlib.h>
#include <string.h>

#include <cooperative_groups.h>
#include <type_traits>

#include "kernels/cuda_common.cuh"
#include "kernels/wna16_internal.cuh"

namespace cg = cooperative_groups;

extern "C" {
#include "kernels/wna16.h"
#include "src/dtype.h"
#include "src/model.h"
}

#define WARPS 8  /* per block, splitting K */
#define UNROLL 4 /* chunks each warp loads before it computes */

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

/* ---- the decode product: GEMV (M <= 16 per block row) ----
 *
 * Round 2 of this kernel (kernels/WNA16_NOTES.md has the measurements).
 * At M = 1 the product is a stream of the codes, and a 7B linear (8-24 MB)
 * is only 60-180 KB per multiprocessor: round 1, which asked for its bytes
 * a few KB at a time from registers, spent most of its life waiting out
 * DRAM latency. Here the bytes travel by bulk copies (cp.async.bulk, the
 * copy engine) into a ring of shared-memory stages, so bytes in flight cost
 * no registers and no issue slots:
 *
 *   - a block owns GV_TB 16-channel tiles (64 channels) and one slice of K
 *     (cps chunks); the slices of the same tiles form a thread-block cluster
 *     whose blocks send each other their partial sums (st.async into
 *     distributed shared memory, cluster_sum_store) at the end (no
 *     workspace, no atomics, a fixed order). The host picks
 *     the split from the occupancy, so that every block is resident at once;
 *   - thread 0 copies the slice's scales/zeros and step -> group table,
 *     then the first ns stages (default 2); stage st holds GV_WARPS
 *     consecutive chunks of each tile (one copy per tile: a tile's chunks
 *     are contiguous along K) and is refilled as soon as the block is done
 *     with it. The ring is shallow on purpose: with every block's whole
 *     slice requested at once (measured at M = 1: 1.6x and 1.85x slower
 *     on the two large 7B shapes, 2x at 8 bits) each block's first stage
 *     lands only after much of everyone else's, and the compute cannot
 *     overlap the stream;
 *   - warp w computes chunk w of each stage for every tile, so the x pairs
 *     of its B fragments are read once per GV_TB tiles; x (the block's rows
 *     and slice, gathered through perm under act-order) is staged once with
 *     ordinary loads, all rows in flight together;
 *   - fp16 and M <= 8: the mma multiplies the exact integers q - z (one
 *     LOP3 and one HSUB2/HFMA2 per pair) and the group's scale is applied in
 *     fp32 to the per-group sums (9 instructions per A fragment besides the
 *     mma, against 13 when W is rounded first and 19 in round 1); otherwise
 *     the MMA kernel's dequantization (W rounded to dt once).
 * Measured (docs/BENCHMARKS_KERNELS.md): 0.31-0.43 of the copy bandwidth
 * at M = 1 (1.8-2.1x cuBLAS fp16), bound by instruction issue with ~20
 * warps per SM, not by bytes: 8-bit takes only ~30 % longer than 4-bit.
 * x rows past M are not read (their B columns are zero and not written).
 * Round 3 (opt-in, measured no faster: WNA16_NOTES.md) adds a refill by the
 * last warp out of a stage instead of the block barrier, and fp16 codes fed
 * to the mma as 1024 + q with the zero taken off per group (GvDeqFold). */

#define GV_WARPS 4                       /* per block; warp w takes chunk w of each stage */
#define GV_THREADS (GV_WARPS * 32)
#define GV_TB 4                          /* 16-channel tiles per block */
#define GV_SLOT (GV_TB * GV_WARPS * 512) /* bytes of one ring stage */
/* GV_KS_MAX (K slices, the portable cluster size): kernels/wna16_internal.cuh */

struct GvArgs {
    const int4 *wq;
    const uint2 *sz;
    const int *step_group, *perm;
    int M, K, N, nkc, ntiles;
    int ks;    /* K slices = cluster size */
    int cps;   /* chunks per slice (the last may hold fewer) */
    int ns;    /* ring stages */
    int gspan; /* most groups one slice touches */
    int xvec;  /* x 16-byte aligned and K % 8 == 0: stage x with 16-byte loads */
    int bulk_meta; /* scales and groups by bulk copy (else ordinary loads) */
    int sync_refill; /* round 2 (default): a block barrier before each ring refill (else the last warp out refills) */
    int glo[GV_KS_MAX], ghi[GV_KS_MAX]; /* groups of each slice */
    ClusterSplit cs; /* the cluster sum of the block's GV_TB * MT * 128 sums over its ks slices */
};

/* Shared-memory layout of one block (byte offsets), computed the same way
 * by the host (size, occupancy) and the kernel. The ring doubles as the
 * warps' reduction buffer once the last stage is consumed; bulk-copy
 * destinations are 16-byte aligned. */
struct GvSmem {
    int szs, sgs, xs, part, bars, cnt, total, xsw;
};

__host__ __device__ __forceinline__ int gv_al16(int n) { return (n + 15) & ~15; }

__host__ __device__ __forceinline__ GvSmem gv_smem(int bits, int mt, int ns, int cps, int gspan, int xrows)
{
    const int KC = bits == 4 ? 64 : 32, E = GV_TB * mt * 128;
    const int ring = ns * GV_SLOT > GV_WARPS * E * 4 ? ns * GV_SLOT : GV_WARPS * E * 4;
    GvSmem s;
    s.szs = ring;
    s.sgs = gv_al16(s.szs + gspan * GV_TB * 8 * 8);
    s.xs = gv_al16(s.sgs + (cps * (KC / 16) + 8) * 4); /* + 8: the copied window is 16-byte aligned */
    /* x rows in 32-bit words: a row pitch of 4 (mod 8) words puts the 32
     * lanes' B-fragment reads (row gl, word t) on 32 different banks. */
    s.xsw = cps * KC / 2 + 4;
    s.part = gv_al16(s.xs + xrows * s.xsw * 4);
    s.bars = s.part + (E + 4 * GV_KS_MAX) * 4; /* the slices' sums (cluster_sum_store: per * ks <= E + 4 ks) */
    s.cnt = s.bars + (ns + 2) * 8; /* per slot: warps done with it, ever (mod GV_WARPS: who is last) */
    s.total = s.cnt + ns * 4;
    return s;
}

/* Bulk copy global -> this block's shared memory, completing on bar; the
 * weight is read once per call, so it is marked first to leave L2. */
__device__ __forceinline__ void bulk_g2s(void *dst, const void *src, uint32_t bytes, uint64_t *bar, uint64_t policy)
{
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, "
                 "[%3], %4;" ::"r"(smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar)), "l"(policy)
                 : "memory");
}

/* Stage st of the block's slice into ring slot st % ns: chunks
 * kc0 + st*GV_WARPS .. of each of the ntb tiles, one bulk copy per tile. */
__device__ __forceinline__ void gv_issue(unsigned char *ring, uint64_t *bars, int st, const GvArgs &a, int t0,
                                         int ntb, int kc0, int kc1, uint64_t policy)
{
    const int slot = st % a.ns, kcs = kc0 + st * GV_WARPS;
    const int n = kc1 - kcs < GV_WARPS ? kc1 - kcs : GV_WARPS;
    const uint32_t bytes = (uint32_t)n * 512u;
    mbar_expect_tx(&bars[slot], bytes * (uint32_t)ntb);
    for (int tb = 0; tb < ntb; tb++)
        bulk_g2s(ring + slot * GV_SLOT + tb * (GV_WARPS * 512), a.wq + ((size_t)(t0 + tb) * a.nkc + kcs) * 32, bytes,
                 &bars[slot], policy);
}

/* x rows m0 .. m0+mr (mr <= ROWS), repacked rows r0 .. r0+nr, into xs
 * (pitch xsw words) as dt pairs: gathered through perm under act-order;
 * padding rows are 0. A thread takes a column (8 or 2 repacked rows) and
 * loads it for every row at once, so one round trip (two under act-order,
 * perm first) stages the slice. */
template <bool PERM, int ROWS>
__device__ __forceinline__ void gv_stage_x(uint32_t *xs, int xsw, const uint16_t *x, int m0, int mr, int r0, int nr,
                                           int K, const int *perm, int xvec)
{
    const int tid = threadIdx.x;
    if (!PERM && xvec) {
        for (int c = tid; c < (nr >> 3); c += GV_THREADS) {
            const int r = r0 + 8 * c;
            int4 v[ROWS];
#pragma unroll
            for (int m = 0; m < ROWS; m++)
                v[m] = m < mr && r < K ? __ldg(reinterpret_cast<const int4 *>(x + (size_t)(m0 + m) * K + r))
                                       : make_int4(0, 0, 0, 0);
#pragma unroll
            for (int m = 0; m < ROWS; m++)
                if (m < mr)
                    *reinterpret_cast<int4 *>(xs + m * xsw + 4 * c) = v[m];
        }
        return;
    }
    for (int c = tid; c < (nr >> 1); c += GV_THREADS) {
        const int r = r0 + 2 * c;
        int2 p = make_int2(r < K ? r : -1, r + 1 < K ? r + 1 : -1);
        if (PERM)
            p = __ldg(reinterpret_cast<const int2 *>(perm + r));
        uint32_t v[ROWS];
#pragma unroll
        for (int m = 0; m < ROWS; m++) {
            const uint16_t *xr = x + (size_t)(m0 + m) * K;
            if (m >= mr)
                v[m] = 0;
            else if (PERM)
                v[m] = (p.x >= 0 ? (uint32_t)__ldg(xr + p.x) : 0u) | (p.y >= 0 ? (uint32_t)__ldg(xr + p.y) : 0u) << 16;
            else
                v[m] = p.x >= 0 ? __ldg(reinterpret_cast<const uint32_t *>(xr + r)) : 0u;
        }
#pragma unroll
        for (int m = 0; m < ROWS; m++)
            if (m < mr)
                xs[m * xsw + c] = v[m];
    }
}

/* The block's stream: wait for each stage, compute this warp's chunk of
 * every tile, refill the slot when the ring is shorter than the slice.
 * FULL: all GV_TB tiles exist (no per-tile test in the loop). !EXACT: the
 * per-group sums accg are scaled into acc when the group changes; FOLD: and
 * the zero point comes off there too (GvDeqFold). */
template <typename T, int BITS, int MT, bool EXACT, bool FOLD, bool FULL>
__device__ __forceinline__ void gv_main(float (&acc)[GV_TB][MT][4], unsigned char *ring, uint64_t *bars,
                                        unsigned *cnt, const int *sgs, const uint2 *szs, const uint32_t *xs, int xsw,
                                        const GvArgs &a, int t0, int ntb, int kc0, int kc1, int nst, int mr,
                                        int glo, uint64_t policy)
{
    constexpr int STEPS = Cfg<BITS>::STEPS;
    constexpr bool SCALE_AFTER = !EXACT; /* per-group sums accg, scaled into acc when the group changes */
    using Dq = typename std::conditional<FOLD, GvDeqFold<BITS>, GvDeq<T, BITS, EXACT>>::type;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gl = lane >> 2, t = lane & 3;
    const int nch = kc1 - kc0;
    Dq dq[GV_TB];
#pragma unroll
    for (int tb = 0; tb < GV_TB; tb++)
        dq[tb].init();
    float accg[GV_TB][MT][4], xacc[MT][4]; /* xacc (FOLD): the group's x sums, rows 2t, 2t+1 */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        xacc[mt][0] = xacc[mt][1] = xacc[mt][2] = xacc[mt][3] = 0.0f;
#pragma unroll
        for (int tb = 0; tb < GV_TB; tb++)
            accg[tb][mt][0] = accg[tb][mt][1] = accg[tb][mt][2] = accg[tb][mt][3] = 0.0f;
    }
    /* acc += scale * accg (FOLD: scale * (accg - zc * X)), channel gl in c0,
     * c1 and gl + 8 in c2, c3 */
    auto flush = [&](int gold) {
        if constexpr (FOLD) {
            if (gold < 0) /* warp-uniform: nothing summed yet */
                return;
#pragma unroll
            for (int tb = 0; tb < GV_TB; tb++) {
                if (!FULL && tb >= ntb)
                    break;
                float sf[2], zc[2];
                GvDeqFold<BITS>::corr(szs[((gold - glo) * GV_TB + tb) * 8 + gl], sf, zc);
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        acc[tb][mt][c] =
                            fmaf(sf[c >> 1], fmaf(-zc[c >> 1], xacc[mt][c], accg[tb][mt][c]), acc[tb][mt][c]);
                        accg[tb][mt][c] = 0.0f;
                    }
            }
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                xacc[mt][0] = xacc[mt][1] = xacc[mt][2] = xacc[mt][3] = 0.0f;
        } else if constexpr (SCALE_AFTER) {
#pragma unroll
            for (int tb = 0; tb < GV_TB; tb++)
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        acc[tb][mt][c] = fmaf(dq[tb].sf[c >> 1], accg[tb][mt][c], acc[tb][mt][c]);
                        accg[tb][mt][c] = 0.0f;
                    }
        }
    };
    const uint32_t ones[4] = {0x3C003C00u, 0x3C003C00u, 0x3C003C00u, 0x3C003C00u}; /* fp16 1.0 pairs */
    int gcur = -1, slot = 0;
    uint32_t phase = 0;
    for (int st = 0; st < nst; st++) {
        const int lc = st * GV_WARPS + warp; /* chunk of the slice this warp computes */
        if (lc < nch) {
            mbar_wait(&bars[slot], phase);
            const int4 *sw = reinterpret_cast<const int4 *>(ring + slot * GV_SLOT) + warp * 32 + lane;
            uint32_t wd[GV_TB][4];
#pragma unroll
            for (int tb = 0; tb < GV_TB; tb++) {
                const int4 v = FULL || tb < ntb ? sw[tb * GV_WARPS * 32] : make_int4(0, 0, 0, 0);
                wd[tb][0] = (uint32_t)v.x;
                wd[tb][1] = (uint32_t)v.y;
                wd[tb][2] = (uint32_t)v.z;
                wd[tb][3] = (uint32_t)v.w;
            }
#pragma unroll
            for (int s = 0; s < STEPS; s++) {
                const int ls = lc * STEPS + s;
                const int g = sgs[ls];
                if (g != gcur) { /* warp-uniform */
                    flush(gcur);
                    gcur = g;
#pragma unroll
                    for (int tb = 0; tb < GV_TB; tb++)
                        if (FULL || tb < ntb)
                            dq[tb].set(szs[((g - glo) * GV_TB + tb) * 8 + gl]);
                }
                /* B fragments: x rows mt*8 + gl, local rows 16 ls + 2t (+8). */
                uint32_t b[MT][2];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    const int row = mt * 8 + gl;
                    const uint32_t *xr = xs + row * xsw + ls * 8 + t;
                    b[mt][0] = row < mr ? xr[0] : 0u;
                    b[mt][1] = row < mr ? xr[4] : 0u;
                }
                if constexpr (FOLD)
#pragma unroll
                    for (int mt = 0; mt < MT; mt++)
                        mma16816<T>(xacc[mt], ones, b[mt][0], b[mt][1]);
#pragma unroll
                for (int tb = 0; tb < GV_TB; tb++) {
                    if (!FULL && tb >= ntb)
                        break;
                    uint32_t af[4];
                    dq[tb].frag(wd[tb], s, af);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        if constexpr (SCALE_AFTER)
                            mma16816<T>(accg[tb][mt], af, b[mt][0], b[mt][1]);
                        else
                            mma16816<T>(acc[tb][mt], af, b[mt][0], b[mt][1]);
                    }
                }
            }
        }
        if (st + a.ns < nst) { /* refill the slot just consumed, once every warp is done with it */
            if (a.sync_refill) { /* round 2: all 4 warps meet here every stage */
                __syncthreads();
                if (tid == 0)
                    gv_issue(ring, bars, st + a.ns, a, t0, ntb, kc0, kc1, policy);
            } else {
                /* Round 3: each warp counts itself out of the slot; the last
                 * one refills it and nobody waits (warps drift up to ns stages
                 * apart). The fences order the warps' reads of the slot before
                 * the copy that overwrites it. */
                __syncwarp();
                if (lane == 0) {
                    __threadfence_block();
                    if (atomicAdd(&cnt[slot], 1u) % GV_WARPS == GV_WARPS - 1) {
                        __threadfence_block();
                        gv_issue(ring, bars, st + a.ns, a, t0, ntb, kc0, kc1, policy);
                    }
                }
                __syncwarp();
            }
        }
        if (++slot == a.ns) {
            slot = 0;
            phase ^= 1u;
        }
    }
    flush(gcur);
}

template <typename T, int BITS, int MT, bool PERM, bool EXACT, bool FOLD>
__global__ void __launch_bounds__(GV_THREADS, MT == 1 ? 5 : 4)
    wna16_gemv_kernel(T *__restrict__ y, const T *__restrict__ x, const GvArgs a)
{
    static_assert(EXACT || std::is_same<T, __half>::value, "scales after the mma: fp16 only");
    static_assert(!FOLD || (!EXACT && MT == 1), "zero folded into the group sums: fp16, one row tile");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int KC = Cfg<BITS>::KC, STEPS = Cfg<BITS>::STEPS, E = GV_TB * MT * 128;
    extern __shared__ __align__(128) unsigned char gv_sm[];
    const GvSmem L = gv_smem(BITS, MT, a.ns, a.cps, a.gspan, a.M < 8 * MT ? a.M : 8 * MT);
    unsigned char *ring = gv_sm;
    uint2 *szs = reinterpret_cast<uint2 *>(gv_sm + L.szs); /* [group - glo][GV_TB][8] */
    int *sgw = reinterpret_cast<int *>(gv_sm + L.sgs);     /* step -> group, from a 16-byte aligned step */
    uint32_t *xs = reinterpret_cast<uint32_t *>(gv_sm + L.xs);
    float *part = reinterpret_cast<float *>(gv_sm + L.part);
    uint64_t *bars = reinterpret_cast<uint64_t *>(gv_sm + L.bars); /* ns ring stages, then the metadata */
    unsigned *cnt = reinterpret_cast<unsigned *>(gv_sm + L.cnt);    /* [ns]: warps done with each slot */

    cg::cluster_group cl = cg::this_cluster();
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int ks = (int)cl.block_rank(); /* cluster dims (a.ks, 1, 1): the K slice */
    const int t0 = (int)(blockIdx.x / a.ks) * GV_TB, ntb = a.ntiles - t0 < GV_TB ? a.ntiles - t0 : GV_TB;
    const int kc0 = ks * a.cps, kc1 = kc0 + a.cps < a.nkc ? kc0 + a.cps : a.nkc, nch = kc1 - kc0;
    const int nst = (nch + GV_WARPS - 1) / GV_WARPS;
    const int m0 = blockIdx.y * 8 * MT, mr = a.M - m0 < 8 * MT ? a.M - m0 : 8 * MT;
    const int glo = a.glo[ks], gsp = a.ghi[ks] - glo + 1;
    const int s0 = (kc0 * STEPS) & ~3, s1 = (kc1 * STEPS + 3) & ~3; /* the step window, 16-byte aligned */
    const int *sgs = sgw + (kc0 * STEPS - s0);                      /* [local k-step]: group */

    uint64_t policy; /* every thread: any warp's lane 0 may issue a refill */
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    if (tid == 0) {
        for (int s = 0; s <= a.ns; s++)
            mbar_init(&bars[s], 1);
        for (int s = 0; s < a.ns; s++)
            cnt[s] = 0;
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    cluster_sum_begin(&bars[a.ns + 1], a.cs, ks);
    __syncthreads();
    if (tid == 0) {
        /* The slice's groups and their scales/zeros, ahead of the codes (with
         * the 2-stage ring, within 3 % of ordinary loads: knob meta_loads). */
        if (a.bulk_meta) {
            mbar_expect_tx(&bars[a.ns], (uint32_t)((s1 - s0) * 4 + gsp * ntb * 64));
            bulk_g2s(sgw, a.step_group + s0, (uint32_t)((s1 - s0) * 4), &bars[a.ns], policy);
            for (int g = 0; g < gsp; g++)
                bulk_g2s(szs + g * GV_TB * 8, a.sz + ((size_t)(glo + g) * a.ntiles + t0) * 8, (uint32_t)ntb * 64u,
                         &bars[a.ns], policy);
        }
        for (int st = 0; st < nst && st < a.ns; st++)
            gv_issue(ring, bars, st, a, t0, ntb, kc0, kc1, policy);
    }
    if (!a.bulk_meta) { /* round 1's way: ordinary loads, behind the codes */
        for (int i = tid; i < s1 - s0; i += GV_THREADS)
            sgw[i] = __ldg(a.step_group + s0 + i);
        for (int i = tid; i < gsp * GV_TB * 8; i += GV_THREADS) {
            const int tb = (i >> 3) % GV_TB, g = glo + i / (GV_TB * 8);
            if (tb < ntb)
                szs[i] = __ldg(a.sz + ((size_t)g * a.ntiles + t0 + tb) * 8 + (i & 7));
        }
    }
    /* Programmatic dependent launch: when the host launched this grid so,
     * it may start while the previous kernel on the stream still runs. The
     * weight is read-only, so its copies (above) go out at once; x and y
     * belong to the previous kernel until this wait returns (a no-op
     * without such a launch). Then let the next kernel's blocks start their
     * own weight copies early. */
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    gv_stage_x<PERM, 8 * MT>(xs, L.xsw, reinterpret_cast<const uint16_t *>(x), m0, mr, kc0 * KC, nch * KC, a.K,
                             a.perm, a.xvec);
    __syncthreads();
    if (a.bulk_meta)
        mbar_wait(&bars[a.ns], 0);

    float acc[GV_TB][MT][4];
#pragma unroll
    for (int tb = 0; tb < GV_TB; tb++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
            acc[tb][mt][0] = acc[tb][mt][1] = acc[tb][mt][2] = acc[tb][mt][3] = 0.0f;
    if (ntb == GV_TB) /* block-uniform: only the last tile group can be short */
        gv_main<T, BITS, MT, EXACT, FOLD, true>(acc, ring, bars, cnt, sgs, szs, xs, L.xsw, a, t0, ntb, kc0, kc1, nst, mr, glo,
                                          policy);
    else
        gv_main<T, BITS, MT, EXACT, FOLD, false>(acc, ring, bars, cnt, sgs, szs, xs, L.xsw, a, t0, ntb, kc0, kc1, nst, mr, glo,
                                           policy);

    /* Sum the warps (the ring is free: every stage was waited for), then
     * the cluster's K slices in rank order; rank ks writes its share of the
     * tile group's outputs. */
    __syncthreads();
    float4 *red = reinterpret_cast<float4 *>(ring);
#pragma unroll
    for (int tb = 0; tb < GV_TB; tb++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
            red[((warp * GV_TB + tb) * MT + mt) * 32 + lane] =
                make_float4(acc[tb][mt][0], acc[tb][mt][1], acc[tb][mt][2], acc[tb][mt][3]);
    __syncthreads();
    /* every warp holds a share of all E sums: one run of E per warp */
    cluster_sum_store<T, MT>(part, &bars[a.ns + 1], reinterpret_cast<const float *>(red), E, GV_WARPS, a.cs, ks, tid,
                             GV_THREADS, t0, m0, a.M, a.N, y);
#else
    (void)y;
    (void)x;
    (void)a;
    __trap(); /* the host launches it on compute capability >= 9.0 only */
#endif
}

/* ---- dense dequantization (the cuBLAS paths; also checks the repack) ----
 *
 * One warp per 512-byte chunk, read coalesced; each lane turns its codes
 * into dt pairs with the product's own code_pair/Deq (so the dense W is
 * bit for bit the W the mma paths multiply) and stores them where they go:
 * a pair is two consecutive input channels of one output channel (a 4-byte
 * store) unless act-order scatters them. NF4 weights: codebook value times
 * the block's absmax, as the reference dequantizes (the slice kernel
 * instead rounds the codebook values to dt and applies the absmax to fp32
 * sums). */
template <typename T, int BITS, bool PERM, bool NF4>
__global__ void wna16_dequant_kernel(T *dst, int K, int N, const int4 *__restrict__ wq, const uint2 *__restrict__ sz,
                                     const int *__restrict__ step_group, const int *__restrict__ perm,
                                     const float *__restrict__ code, int nkc, int ntiles)
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
        float am[2] = {0.0f, 0.0f}; /* NF4 (wna16_prepare_nf4): the block's absmax, channels gl, gl + 8 */
        if (NF4) {
            const uint2 p = __ldg(sz + ((size_t)kc * ntiles + nt) * 8 + gl);
            am[0] = __uint_as_float(p.x);
            am[1] = __uint_as_float(p.y);
        }
#pragma unroll
        for (int s = 0; s < STEPS; s++) {
            const int st = kc * STEPS + s;
            if (!NF4)
                dq.set(__ldg(sz + ((size_t)__ldg(step_group + st) * ntiles + nt) * 8 + gl));
#pragma unroll
            for (int i = 0; i < 4; i++) {
                uint32_t pair;
                if (NF4) { /* code[q] * absmax in fp32, rounded to dt once, as nf4_dequantize and then dt */
                    const uint32_t e = (wd[s] >> (8 * i)) & 0xFFu;
                    const float lo = __ldg(code + (e & 15)) * am[i & 1], hi = __ldg(code + (e >> 4)) * am[i & 1];
                    pair = std::is_same<T, __half>::value ? as_u32(__floats2half2_rn(lo, hi))
                                                          : as_u32(__floats2bfloat162_rn(lo, hi));
                } else {
                    pair = dq(code_pair<BITS>(wd, s, i), i & 1);
                }
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
    p += align256((size_t)w->K * sizeof(int));
    w->nf4_code = (float *)p;
}

static size_t blob_size(const wna16_weight *w)
{
    return align256(w->code_bytes) + align256(w->param_bytes) + align256((size_t)(w->Kp / 16) * sizeof(int)) +
           align256((size_t)w->Kp * sizeof(int)) + align256((size_t)w->K * sizeof(int)) + 16 * sizeof(float);
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
    /* Static groups of 16 * 2^j rows in the sorted order (GPTQ's
     * g32/g64/g128, with act-order too: each group is group_size rows of
     * the checkpoint's order): the streaming and slice GEMVs compute a
     * step's group as a shift. */
    w->spg_shift = -1;
    for (int j = 0; j < 16 && w->spg_shift < 0; j++) {
        int ok = 1;
        for (int st = 0; st < w->Kp / 16 && ok; st++)
            ok = sg[st] == (st >> j < ng ? st >> j : ng - 1);
        if (ok)
            w->spg_shift = j;
    }

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
                    const uint32_t zw = (uint32_t)qzeros[(size_t)g * ((N + pf - 1) / pf) + n / pf];
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

/* w->sg_host: step_group, then (use_perm) perm at w->perm_host, in one
 * allocation; -1 when out of memory. */
static int host_copies(wna16_weight *w, const int *step_group, const int *perm)
{
    const size_t sg_n = (size_t)w->Kp / 16, perm_n = w->use_perm ? (size_t)w->Kp : 0;
    w->sg_host = (int *)malloc((sg_n + perm_n) * sizeof(int));
    w->perm_host = w->sg_host && perm_n ? w->sg_host + sg_n : NULL;
    if (!w->sg_host)
        return -1;
    memcpy(w->sg_host, step_group, sg_n * sizeof(int));
    if (perm_n)
        memcpy(w->perm_host, perm, perm_n * sizeof(int));
    return 0;
}

/* The host image img of w's blob to the device (img freed, w freed on
 * failure); *out = w. Synchronizes. */
static int upload(wna16_weight **out, wna16_weight *w, char *img, cuda_ctx *c, const char *what)
{
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
        free(w->sg_host);
        free(w);
        return llmq_fail("%s: upload of %zu bytes: %s", what, nbytes, cudaGetErrorString(err));
    }
    w->blob = dev;
    carve(w);
    *out = w;
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
    if (K <= 0 || N <= 0)
        return llmq_fail("wna16_prepare: [%d, %d] is not a weight shape", N, K);
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
    if (host_copies(w, w->step_group, w->perm)) { /* still the host image's */
        free(img);
        free(w);
        return llmq_fail("wna16_prepare: out of host memory");
    }
    return upload(out, w, img, c, "wna16_prepare");
}

/* NF4 into the slice kernel's layout (wna16.h): chunk kc of tile nt is
 * bitsandbytes' block kc of each of the tile's 16 rows of W (blocks of 64
 * along K), so a block's absmax is a static group of one chunk. */
extern "C" int wna16_prepare_nf4(wna16_weight **out, llmq_backend *b, const llmq_nf4 *q, int K, int N)
{
    *out = NULL;
    cuda_ctx *c = cctx(b, "wna16_prepare_nf4");
    if (!c)
        return -1;
    if (K <= 0 || N <= 0 || K % 64 || q->blocksize != 64 || q->n != (size_t)N * K)
        return llmq_fail("wna16_prepare_nf4: needs a [%d, %d] weight (K a multiple of 64) in blocks of 64, not %zu "
                         "values in blocks of %d",
                         N, K, q->n, q->blocksize);
    wna16_weight *w = (wna16_weight *)calloc(1, sizeof *w);
    float *absmax = (float *)malloc(q->nblocks * sizeof(float));
    if (!w || !absmax) {
        free(w);
        free(absmax);
        return llmq_fail("wna16_prepare_nf4: out of host memory");
    }
    nf4_block_absmax(q, absmax);
    w->K = w->Kp = K;
    w->N = N;
    w->bits = 4;
    w->nf4 = 1;
    w->ng = w->nkc = K / 64;
    w->ntiles = (N + 15) / 16;
    w->spg_shift = 2; /* k-step s is in block s >> 2: one chunk */
    w->code_bytes = (size_t)w->ntiles * w->nkc * 512;
    w->param_bytes = (size_t)w->ng * w->ntiles * 8 * sizeof(uint2);
    w->blob_bytes = blob_size(w);
    char *img = (char *)calloc(1, w->blob_bytes);
    if (img) {
        w->blob = img; /* host image for now */
        carve(w);
        for (int st = 0; st < K / 16; st++)
            w->step_group[st] = st >> 2;
        for (int k = 0; k < K; k++)
            w->perm[k] = w->rowpos[k] = k;
    }
    if (!img || host_copies(w, w->step_group, w->perm)) { /* use_perm 0: perm not copied */
        const size_t nbytes = w->blob_bytes;
        free(img);
        free(w);
        free(absmax);
        return llmq_fail("wna16_prepare_nf4: out of host memory (%zu bytes)", nbytes);
    }
    memcpy(w->nf4_code, nf4_code, 16 * sizeof(float));
    /* Byte i of lane (gl, t)'s word s: the codes of columns 2t + 8 (i >> 1)
     * and one more of k-step s, channel gl + 8 (i & 1) (GvDeqNf4); padding
     * channels take code 7 (0.0) and absmax 0. */
    uint32_t *words = (uint32_t *)w->wq;
    for (int n = 0; n < w->ntiles * 16; n++) {
        const int nt = n / 16, nl = n % 16, gl = nl % 8;
        const uint8_t *cr = n < N ? q->codes + (size_t)n * K : NULL;
        for (int r = 0; r < K; r += 2) {
            const int kc = r / 64, rl = r % 64, s = rl / 16, c16 = rl % 16;
            const int t = c16 % 8 / 2, i = nl / 8 + 2 * (c16 / 8), lane = 4 * gl + t;
            const uint32_t pair = cr ? (uint32_t)cr[r] | (uint32_t)cr[r + 1] << 4 : 0x77u;
            words[((size_t)nt * w->nkc + kc) * 128 + lane * 4 + s] |= pair << (8 * i);
        }
    }
    const int nbk = K / 64; /* blocks per row of W */
    for (int g = 0; g < w->ng; g++)
        for (int nt = 0; nt < w->ntiles; nt++)
            for (int gl = 0; gl < 8; gl++) {
                const int n0 = nt * 16 + gl, n1 = n0 + 8;
                const float a0 = n0 < N ? absmax[(size_t)n0 * nbk + g] : 0.0f, a1 = n1 < N ? absmax[(size_t)n1 * nbk + g] : 0.0f;
                uint2 v;
                memcpy(&v.x, &a0, 4);
                memcpy(&v.y, &a1, 4);
                w->sz[((size_t)g * w->ntiles + nt) * 8 + gl] = v;
            }
    free(absmax);
    return upload(out, w, img, c, "wna16_prepare_nf4");
}

extern "C" int wna16_nf4_supported(llmq_backend *b, int K)
{
    return b && b->name && strcmp(b->name, "cuda") == 0 && (b->dt == LLMQ_F16 || b->dt == LLMQ_BF16) && K > 0 &&
           K % wna16_slice_k_unit(4) == 0 && ((const cuda_ctx *)b->impl)->cc_major >= 9;
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
    if (host_copies(w, src->sg_host, src->perm_host)) {
        free(w);
        return llmq_fail("wna16_clone: out of host memory");
    }
    cudaError_t err = cudaMalloc(&w->blob, w->blob_bytes);
    if (err == cudaSuccess)
        err = cudaMemcpyAsync(w->blob, src->blob, w->blob_bytes, cudaMemcpyDeviceToDevice, c->stream);
    if (err == cudaSuccess)
        err = cudaStreamSynchronize(c->stream);
    if (err != cudaSuccess) {
        cudaGetLastError();
        if (w->blob)
            cudaFree(w->blob);
        free(w->sg_host);
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
    free(w->sg_host);
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

/* ---- the GEMV path's plan and launch ----
 *
 * The plan: a ring of stages_max (2) stages per block, and the K split
 * (cluster size ks <= 8) from the occupancy: the smallest ks that gives
 * blocks_per_sm blocks per multiprocessor, without spilling into a second
 * partial wave of blocks (run 1: 28 blocks past one wave cost ~25 %). */
static wna16_gemv_tuning gv_tune; /* zeros: the defaults */

static int gv_ks_max(void) { return gv_tune.ksplit_max > 0 && gv_tune.ksplit_max < GV_KS_MAX ? gv_tune.ksplit_max : GV_KS_MAX; }
static int gv_bps(void) { return gv_tune.blocks_per_sm > 0 ? gv_tune.blocks_per_sm : 4; }
static int gv_ns_max(void) { return gv_tune.stages_max > 0 ? gv_tune.stages_max : 2; }

extern "C" void wna16_gemv_tune(const wna16_gemv_tuning *t)
{
    if (t)
        gv_tune = *t;
    else
        memset(&gv_tune, 0, sizeof gv_tune);
    wna16_stream_tune_set(gv_tune.stream_warps, gv_tune.no_pdl, gv_tune.exact_dequant, gv_tune.stream_prefetch,
                          gv_tune.stream_dry, gv_tune.stream_nofold, gv_tune.stream_no_xs);
    wna16_slice_tune_set(gv_tune.slice_tb, gv_tune.slice_wpt, gv_tune.slice_ks, gv_tune.no_pdl, gv_tune.exact_dequant);
}

/* GvPlan: kernels/wna16_internal.cuh (the weight remembers plans). */

/* What the device gives a block (asked once per device). */
struct GvDev {
    int major, smem_sm, smem_reserved; /* 0: not asked yet */
};

static const GvDev *gv_dev(const cuda_ctx *c)
{
    static GvDev d[64];
    if (c->device < 0 || c->device >= 64)
        return NULL;
    GvDev *p = &d[c->device];
    if (!p->major) {
        if (cudaDeviceGetAttribute(&p->major, cudaDevAttrComputeCapabilityMajor, c->device) != cudaSuccess ||
            cudaDeviceGetAttribute(&p->smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, c->device) !=
                cudaSuccess ||
            cudaDeviceGetAttribute(&p->smem_reserved, cudaDevAttrReservedSharedMemoryPerBlock, c->device) !=
                cudaSuccess) {
            cudaGetLastError();
            p->major = -1;
        }
    }
    return p;
}

/* Bulk copies, mbarriers and clusters: compute capability 9.0 or newer. */
static int gv_device_ok(const cuda_ctx *c)
{
    const GvDev *d = gv_dev(c);
    return d && d->major >= 9;
}

/* The plan with ks K slices; 0, or -1 when it does not fit shared memory. */
static int gv_plan_ks(const wna16_weight *w, const cuda_ctx *c, int M, int ks, GvPlan *p)
{
    const int STEPS = w->bits == 4 ? Cfg<4>::STEPS : Cfg<8>::STEPS;
    const int mt = M <= 8 ? 1 : 2, xrows = M < 8 * mt ? M : 8 * mt;
    const int cps = (w->nkc + ks - 1) / ks, kse = (w->nkc + cps - 1) / cps;
    p->mt = mt;
    p->ks = kse;
    p->cps = cps;
    p->gspan = 1;
    for (int s = 0; s < kse; s++) {
        const int kc0 = s * cps, kc1 = kc0 + cps < w->nkc ? kc0 + cps : w->nkc;
        p->glo[s] = w->sg_host[kc0 * STEPS];
        p->ghi[s] = w->sg_host[kc1 * STEPS - 1];
        p->gspan = p->ghi[s] - p->glo[s] + 1 > p->gspan ? p->ghi[s] - p->glo[s] + 1 : p->gspan;
    }
    const int nst = (cps + GV_WARPS - 1) / GV_WARPS;
    p->blocks = (int)(((w->ntiles + GV_TB - 1) / GV_TB) * kse * (((long)M + 8 * mt - 1) / (8 * mt)));
    for (int ns = nst < gv_ns_max() ? nst : gv_ns_max(); ns >= 1; ns--) {
        const GvSmem L = gv_smem(w->bits, mt, ns, cps, p->gspan, xrows);
        if ((size_t)L.total <= c->smem_optin) {
            p->ns = ns;
            p->smem = (size_t)L.total;
            return 0;
        }
    }
    return -1;
}

/* Blocks of regs registers per thread and smem bytes one SM holds. */
static int gv_resident(const cuda_ctx *c, int regs, size_t smem)
{
    const GvDev *d = gv_dev(c);
    const int warp_regs = (regs * 32 + 255) / 256 * 256;
    int n = regs > 0 ? 65536 / (warp_regs * GV_WARPS) : 16;
    const int by_smem = d && d->smem_sm > 0 ? (int)(d->smem_sm / (smem + (size_t)d->smem_reserved)) : n;
    n = by_smem < n ? by_smem : n;
    n = 2048 / GV_THREADS < n ? 2048 / GV_THREADS : n;
    return n > 0 ? n : 1;
}

/* 0 and the plan, or -1 when no split fits the device's shared memory. */
static int gv_plan_compute(const wna16_weight *w, const cuda_ctx *c, int M, int regs, GvPlan *out)
{
    const long target = (long)gv_bps() * c->num_sms;
    const int kmax = gv_ks_max() < w->nkc ? gv_ks_max() : w->nkc;
    GvPlan p, prev;
    int have = 0, have_prev = 0;
    for (int ks = 1; ks <= GV_KS_MAX && ks <= w->nkc; ks++) {
        if (gv_plan_ks(w, c, M, ks, &p))
            continue; /* too big for shared memory: split further */
        const long slots = (long)gv_resident(c, regs, p.smem) * c->num_sms;
        if (have && ks > kmax)
            break;
        if (have_prev && p.blocks > slots) { /* one wave before, more than one now */
            *out = prev;
            return 0;
        }
        *out = p;
        have = 1;
        if (p.blocks >= target || ks >= kmax)
            break;
        if (p.blocks <= slots) {
            prev = p;
            have_prev = 1;
        }
    }
    return have ? 0 : -1;
}

/* gv_plan_compute, remembered per weight (wna16_weight.gv_memo): AUTO,
 * run_gemv and launch_gemv each ask for it on every call. */
static int gv_plan(const wna16_weight *w, const cuda_ctx *c, int M, int regs, GvPlan *out)
{
    wna16_weight *wm = const_cast<wna16_weight *>(w); /* the memo only: the weight itself stays as it is */
    const int ks_max = gv_ks_max(), bps = gv_bps(), ns_max = gv_ns_max();
    for (const wna16_gemv_memo &e : wm->gv_memo)
        if (e.M == M && e.regs == regs && e.device == c->device && e.num_sms == c->num_sms &&
            e.smem_optin == c->smem_optin && e.ks_max == ks_max && e.bps == bps && e.ns_max == ns_max) {
            if (!e.ok)
                return -1; /* out untouched, as gv_plan_compute leaves it */
            *out = e.plan;
            return 0;
        }
    const int rc = gv_plan_compute(w, c, M, regs, out);
    wna16_gemv_memo &e = wm->gv_memo[wm->gv_memo_next];
    wm->gv_memo_next = (wm->gv_memo_next + 1) % 4;
    e.M = M;
    e.regs = regs;
    e.device = c->device;
    e.num_sms = c->num_sms;
    e.smem_optin = c->smem_optin;
    e.ks_max = ks_max;
    e.bps = bps;
    e.ns_max = ns_max;
    e.ok = rc == 0;
    if (rc == 0)
        e.plan = *out;
    return rc;
}

template <typename T, int BITS, int MT, bool PERM, bool EXACT, bool FOLD = false>
static cudaError_t launch_gemv(const wna16_weight *w, const cuda_ctx *c, void *y, const void *x, int M)
{
    static int regs; /* per instantiation */
    cudaError_t re = kernel_regs(wna16_gemv_kernel<T, BITS, MT, PERM, EXACT, FOLD>, c, &regs);
    if (re != cudaSuccess)
        return re;
    GvPlan p;
    if (gv_plan(w, c, M, regs, &p))
        return cudaErrorInvalidConfiguration; /* gemv_usable said no: not reached */
    GvArgs a;
    weight_args(&a, w, M);
    a.ks = p.ks;
    a.cps = p.cps;
    a.ns = p.ns;
    a.gspan = p.gspan;
    a.xvec = ((uintptr_t)x & 15) == 0 && w->K % 8 == 0;
    a.bulk_meta = !gv_tune.meta_loads;
    a.sync_refill = !gv_tune.refill_last_warp; /* round 3's barrier-free refill measured 2-4 % slower */
    for (int s = 0; s < p.ks; s++) {
        a.glo[s] = p.glo[s];
        a.ghi[s] = p.ghi[s];
    }
    a.cs = cluster_split(GV_TB * MT * 128, p.ks);
    const dim3 grid((unsigned)(((w->ntiles + GV_TB - 1) / GV_TB) * p.ks), ceil_div((size_t)M, (size_t)(8 * MT)));
    const cudaLaunchAttribute cl = cluster_x((unsigned)p.ks); /* the K slices of a tile group */
    return launch_ex(wna16_gemv_kernel<T, BITS, MT, PERM, EXACT, FOLD>, grid, dim3(GV_THREADS), p.smem, c->stream, &cl,
                     1, !gv_tune.no_pdl, (T *)y, (const T *)x, a);
}

/* One row tile (M <= 8) in fp16 takes the scales after the mma unless the
 * exact_dequant knob is set; bf16 and two row tiles always dequantize W. */
template <typename T, int BITS>
static cudaError_t launch_gemv_mt(const wna16_weight *w, const cuda_ctx *c, void *y, const void *x, int M)
{
    if (M <= 8) {
        if (std::is_same<T, __half>::value && !gv_tune.exact_dequant && gv_tune.zero_fold) /* round 3, opt-in */
            return w->use_perm ? launch_gemv<__half, BITS, 1, true, false, true>(w, c, y, x, M)
                               : launch_gemv<__half, BITS, 1, false, false, true>(w, c, y, x, M);
        if (std::is_same<T, __half>::value && !gv_tune.exact_dequant) /* round 2, the default */
            return w->use_perm ? launch_gemv<__half, BITS, 1, true, false>(w, c, y, x, M)
                               : launch_gemv<__half, BITS, 1, false, false>(w, c, y, x, M);
        return w->use_perm ? launch_gemv<T, BITS, 1, true, true>(w, c, y, x, M)
                           : launch_gemv<T, BITS, 1, false, true>(w, c, y, x, M);
    }
    return w->use_perm ? launch_gemv<T, BITS, 2, true, true>(w, c, y, x, M)
                       : launch_gemv<T, BITS, 2, false, true>(w, c, y, x, M);
}

static int run_gemv(const wna16_weight *w, cuda_ctx *c, llmq_dtype dt, void *y, const void *x, int M)
{
    if (!gv_device_ok(c))
        return llmq_fail("wna16_linear: the gemv path needs compute capability 9.0 or newer");
    GvPlan p;
    if (gv_plan(w, c, M, 0, &p))
        return llmq_fail("wna16_linear: K = %d with %d groups does not fit the gemv kernel's shared memory", w->K,
                         w->ng);
    if ((M + 15) / 16 > 65535)
        return llmq_fail("wna16_linear: M = %d rows is too many for one call", M);
    cudaError_t e;
    if (dt == LLMQ_F16)
        e = w->bits == 4 ? launch_gemv_mt<__half, 4>(w, c, y, x, M) : launch_gemv_mt<__half, 8>(w, c, y, x, M);
    else
        e = w->bits == 4 ? launch_gemv_mt<__nv_bfloat16, 4>(w, c, y, x, M)
                         : launch_gemv_mt<__nv_bfloat16, 8>(w, c, y, x, M);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return llmq_fail("wna16_gemv_kernel: launch failed: %s", cudaGetErrorString(e));
    }
    return 0;
}

/* AUTO's test for the GEMV path. */
static int gemv_usable(const wna16_weight *w, const cuda_ctx *c, int M)
{
    GvPlan p;
    return gv_device_ok(c) && gv_plan(w, c, M, 0, &p) == 0;
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
    auto kern = w->nf4 ? wna16_dequant_kernel<T, BITS, false, BITS == 4>
                : w->use_perm ? wna16_dequant_kernel<T, BITS, true, false>
                              : wna16_dequant_kernel<T, BITS, false, false>;
    kern<<<grid, 256, 0, c->stream>>>((T *)dst, w->K, w->N, w->wq, w->sz, w->step_group, w->perm, w->nf4_code,
                                      w->nkc, w->ntiles);
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

/* Whether AUTO takes the slice kernel for a GPTQ weight at M, unless the
 * stream kernel took it first (wna16_linear_path). */
static int auto_slice(const wna16_weight *w, const cuda_ctx *c, llmq_dtype dt, const void *x, int M)
{
    return !gv_tune.ring && !gv_tune.slice_off && ((uintptr_t)x & 15) == 0 &&
           M >= (w->use_perm ? 1 : WNA16_SLICE_MIN_M) && M <= WNA16_SLICE_MAX_M && wna16_slice_usable(w, c, M) &&
           (M <= WNA16_SLICE_DENSE_M || !(w->dense && w->dense_dt == dt));
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
    int slice_checked = 0; /* AUTO has asked wna16_slice_usable already */
    if (w->nf4) {
        /* NF4 has the slice kernel and the dense paths only: SLICE up to
         * WNA16_SLICE_MAX_M rows (WNA16_SLICE_DENSE_M with a dense copy),
         * and beyond where there is no dense copy or scratch. */
        if (path == WNA16_AUTO) {
            const int dense = w->dense && w->dense_dt == b->dt, scratch = w->scratch && w->scratch_bytes >= dense_bytes;
            path = dense && M > WNA16_SLICE_DENSE_M              ? WNA16_DENSE
                   : scratch && !dense && M > WNA16_SLICE_MAX_M ? WNA16_SCRATCH
                                                                : WNA16_SLICE;
        } else if (path != WNA16_SLICE && path != WNA16_DENSE && path != WNA16_SCRATCH) {
            return llmq_fail("wna16_linear: an NF4 weight takes the slice, dense and scratch paths only (path %d)",
                             path);
        }
    }
    if (path == WNA16_AUTO) {
        /* Measured on an H100 (docs/BENCHMARKS.md, fourth to sixth
         * sessions): in the decode of a 7B slice the slice kernel is the
         * fastest from batch 2 on (one block per SM: 3-7 % ahead of the
         * ring GEMV at batch 4-8; 2.0-2.9x the ring at batch 32-64, where
         * it is also 2-3x the MMA kernel; cuBLAS on a dense copy is faster
         * above 32 rows). Act-order weights, which the stream kernel does
         * not take, go to the slice kernel from one row. The ring keeps
         * what the slice kernel does not take: groups of part of a chunk,
         * odd K. */
        if (M <= WNA16_STREAM_MAX_M && !gv_tune.ring && !w->use_perm && wna16_stream_usable(w, c, M))
            path = WNA16_STREAM;
        else if (auto_slice(w, c, b->dt, x, M))
            path = WNA16_SLICE, slice_checked = 1;
        else if (M <= WNA16_GEMV_MAX_M && gemv_usable(w, c, M))
            path = WNA16_GEMV;
        else if (w->dense && w->dense_dt == b->dt)
            path = WNA16_DENSE;
        else if (w->scratch && w->scratch_bytes >= dense_bytes)
            path = WNA16_SCRATCH;
        else
            path = WNA16_MMA;
    }
    switch (path) {
    case WNA16_STREAM: return wna16_stream_run(w, c, b->dt, y, x, M);
    case WNA16_SLICE: return wna16_slice_run(w, c, b->dt, y, x, M, slice_checked);
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

extern "C" int wna16_linear_group(wna16_weight *const *ws, int n, llmq_backend *b, void *const *ys, const void *x,
                                  int M)
{
    cuda_ctx *c = cctx(b, "wna16_linear");
    if (!c || check_dt(b->dt, "wna16_linear"))
        return -1;
    for (int i = 0; i < n; i++)
        if (((uintptr_t)ys[i] & 1) || ws[i]->nf4)
            return 1;
    /* Act-order weights that AUTO sends to the slice kernel, in one row
     * order (q/k/v, gate/up): x sorted once for all of them. */
    int slice = n > 1;
    for (int i = 0; i < n && slice; i++)
        slice = ws[i]->use_perm && auto_slice(ws[i], c, b->dt, x, M);
    if (slice)
        return wna16_slice_run_group(ws, n, c, b->dt, ys, x, M);
    /* AUTO's STREAM conditions (wna16_linear_path) */
    if (M < 1 || M > WNA16_STREAM_MAX_M || gv_tune.ring || ((uintptr_t)x & 3))
        return 1;
    return wna16_stream_run_group(ws, n, c, b->dt, ys, x, M);
}

extern "C" int wna16_forward_group(struct llmq_linear *first, int n, llmq_backend *b, void *const *y, const void *x,
                                   int rows)
{
    wna16_weight *ws[WNA16_GROUP_MAX];
    if (n < 1 || n > WNA16_GROUP_MAX)
        return 1;
    for (int i = 0; i < n; i++) {
        ws[i] = (wna16_weight *)first[i].ctx;
        if (first[i].forward != wna16_forward || ws[i]->K != first[i].in || ws[i]->N != first[i].out)
            return 1;
    }
    int rc = wna16_linear_group(ws, n, b, y, x, rows);
    for (int i = 0; i < n && rc == 0; i++)
        if (first[i].bias && cuda_add_bias((cuda_ctx *)b->impl, b->dt, y[i], first[i].bias, rows, first[i].out))
            rc = -1;
    return rc;
}

extern "C" void wna16_free_ctx(struct llmq_linear *lin, llmq_backend *b)
{
    (void)b;
    wna16_free((wna16_weight *)lin->ctx);
    lin->ctx = NULL;
}
