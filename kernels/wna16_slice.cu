/* The slice GEMV: W4A16 / W8A16 at a few rows (path WNA16_SLICE; AUTO's
 * choice from WNA16_SLICE_MIN_M to WNA16_SLICE_MAX_M rows: kernels/wna16.h).
 *
 * Why a third decode kernel. The streaming GEMV (kernels/wna16_stream.cu)
 * owns one 16-channel tile and all of K per block, and stages x in shared
 * memory only at M = 1: 16 rows of K = 11008 are 344 KB. Above one row it
 * reads x from global memory per k-step, and from M = 4 on it loses to the
 * ring GEMV, which itself reaches only 1.3-1.8x cuBLAS fp16 at M = 16 on the
 * H100 (kernels/WNA16_NOTES.md, round 6). Here a block owns a slice of K
 * (nch chunks) and tb tiles (up to 32), and stages x for the slice once,
 * 8 * MT rows, permuted as the M = 1 kernel does it so that a lane's B
 * fragments of a chunk are 16-byte shared loads; the block's tiles share
 * that staging (x costs 4 / tb of the weight bytes at 16 rows and 4 bits).
 * Each warp streams its run of one tile's chunks through its own cp.async
 * ring in shared memory, SL_D batches ahead (fewer registers than batches
 * held in registers, so up to 32 warps per SM), and feeds every A fragment
 * to MT mma (one per 8 rows). The ks slices of K of the same tiles form a
 * thread-block cluster and send each other their sums through distributed
 * shared memory, added in a fixed order: deterministic, no workspace, no
 * atomics (cluster_sum_store, shared with the ring kernel). The split (tb,
 * warps per tile, ks) is planned per weight and M from the driver's
 * cluster occupancy (sl_plan), one block per SM.
 *
 * Scope: static groups of whole chunks and K a multiple of the batch (the
 * stream kernel's FAST weights: GPTQ g32..g128 and per-channel checkpoints
 * of real shapes). Act-order too: the repack sorts W's rows by group, so
 * that GPTQ's act-order groups (each group_size rows of the checkpoint's
 * order) are static groups again, and the staging gathers x through the
 * repack's row -> channel table (perm): once per block, where the ring and
 * stream kernels pay for the gather per k-step or per call (from
 * SORT_MIN_M rows x is sorted into a scratch first, when one is attached).
 * Odd shapes stay on the ring kernel (wna16_slice_usable says no). fp16
 * folds the zero point per group as the stream kernel does (the mma takes
 * the codes as 1024 + q, and the group's x sums, per row, come from the
 * staging); bf16 and the exact_dequant knob round W to dt before the mma.
 * M > 8 * MT takes further row blocks along the grid's y, each staging its
 * own rows. NF4 weights (wna16_prepare_nf4: bitsandbytes' blocks of 64 are
 * static groups of one chunk) turn code pairs into codebook pairs through
 * a table in shared memory (GvDeqNf4) and multiply each chunk's fp32 sums
 * by its absmax.
 *
 * Shared memory of a block: the staged x [8 MT rows][xstride words], its
 * flush-unit sums (fold), each warp's scales, each warp's ring, then the
 * cluster sum's mbarrier and receive buffer (cluster_sum_store), then the
 * NF4 table; with several warps per tile their sums reuse the staging at
 * the end (with one, each warp sends its own: cluster_sum_store_warp). */
#include <string.h>

#include <type_traits>

#include "kernels/wna16_internal.cuh"

namespace cg = cooperative_groups;

#define SL_U 4          /* chunks per batch */
#define SL_D 2          /* batches in flight per warp: a ring of SL_D * SL_U chunks per warp in shared memory */
#define SL_MAX_WARPS 32 /* per block (1024 threads: <= 64 registers) at 8 rows */
#define SL_MAX_WARPS16 24 /* at 16 rows (twice the accumulators: <= 85 registers) */
#define SL_MAX_TB 32    /* tiles per block */

struct SlArgs {
    const int4 *wq;
    const uint2 *sz;
    const int *perm; /* act-order: repacked row -> channel of x (-1: padding); NULL: the identity */
    const float *code; /* NF4: the codebook [16] */
    int M, K, N, ng, nkc, ntiles;
    int tb, wpt, ks; /* tiles per block, warps per tile, K slices (cluster size) */
    int wpt_shift;   /* log2 wpt */
    int nch, cpw;    /* chunks per slice, per warp run (multiples of SL_U) */
    int gshift;      /* chunk kc is in scale group kc >> gshift (30: one group) */
    int gspan;       /* most groups one warp's run touches */
    int xstride;     /* words per staged row of x (padded against bank conflicts) */
    int off_sums, off_sz, off_ring; /* byte offsets in shared memory */
    int off_sum;                    /* the cluster sum's mbarrier, then its receive buffer */
    int off_lut;                    /* NF4: the code-pair table (SL_LUT_BYTES) */
    DivBy by_p, by_p_last;          /* by 16-byte pieces of a staged x row: slices before the last, the last */
    ClusterSplit cs;                /* the cluster sum of the block's tb * MT * 128 sums over its ks slices */
};

/* How the kernel turns codes into A fragments: W rounded to dt (bf16, and
 * the exact_dequant knob), the fold (fp16: 1024 + q, the zero and the
 * scale per flush unit), or NF4 (a table of codebook pairs, the absmax per
 * chunk). */
enum { SL_EXACT = 0, SL_FOLD = 1, SL_NF4 = 2 };
#define SL_LUT_BYTES (256 * 32 * 4) /* 256 code pairs x a column per lane */

/* Words of a staged x row: nch chunks of KC / 2 words (4 bits: at a pitch
 * of 40, conflict-free staging stores, rounded up to 32), plus a pad that
 * puts rows g and g + 1 (the two rows of a quarter warp's 16-byte loads)
 * on different banks. 8 bits keep the pitch of 16 words: the larger
 * staging at 20 changed the plans of K = 11008 at 32 rows, one for the
 * better and one 50 % slower (kernels/WNA16_NOTES.md round 10). */
static int sl_xstride(int bits, int nch) { return bits == 4 ? (nch * 40 + 31) / 32 * 32 + 4 : nch * 16 + 16; }

template <typename T, int BITS, int MT, int FG, int MODE>
__global__ void __launch_bounds__((MT == 2 ? SL_MAX_WARPS16 : SL_MAX_WARPS) * 32)
    wna16_slice_kernel(T *__restrict__ y, const T *__restrict__ x, const SlArgs a)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int KC = Cfg<BITS>::KC, STEPS = Cfg<BITS>::STEPS, XW = KC / 2, CPG = 1 << FG, R = 8 * MT;
    constexpr int XP = BITS == 4 ? XW + XW / 4 : XW; /* a staged chunk's pitch in words (sl_xstride) */
    constexpr int G8 = (KC << FG) / 8; /* 16-byte pieces of an x row per flush unit (<= 32) */
    static_assert(CPG <= SL_U, "a batch holds whole flush units");
    constexpr bool FOLD = MODE == SL_FOLD, NF4 = MODE == SL_NF4, DEFER = MODE != SL_EXACT; /* DEFER: accg */
    static_assert(!FOLD || std::is_same<T, __half>::value, "the fold: fp16");
    static_assert(!NF4 || (BITS == 4 && FG == 0), "NF4: blocks of 64 = one chunk");
    extern __shared__ __align__(16) unsigned char sl_sm[];
    const int ks = (int)cg::this_cluster().block_rank(); /* cluster dims (a.ks, 1, 1): the K slice */
    const int tg = (int)cluster_id_x(), m0 = blockIdx.y * R; /* the tile group: blockIdx.x / ks */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gl = lane >> 2, t = lane & 3;
    const int ti = warp >> a.wpt_shift, nt = tg * a.tb + ti;
    const int sc0 = ks * a.nch, sc1 = sc0 + a.nch < a.nkc ? sc0 + a.nch : a.nkc;
    const int kc0 = sc0 + (warp & (a.wpt - 1)) * a.cpw;
    const int kc1 = nt >= a.ntiles ? kc0 : kc0 + a.cpw < sc1 ? kc0 + a.cpw : sc1; /* kc1 <= kc0: no work */
    const int4 *wt = a.wq + (size_t)(nt < a.ntiles ? nt : 0) * a.nkc * 32 + lane;
    const uint32_t *xw = reinterpret_cast<const uint32_t *>(sl_sm);
    const float *xg = reinterpret_cast<const float *>(sl_sm + a.off_sums);
    uint2 *szw = reinterpret_cast<uint2 *>(sl_sm + a.off_sz) + (size_t)warp * a.gspan * 8;
    uint64_t *sum_bar = reinterpret_cast<uint64_t *>(sl_sm + a.off_sum);
    /* The codes travel by cp.async into the warp's ring in shared memory,
     * SL_D batches ahead, each lane its own 16 bytes per chunk (so no lane
     * waits on another): more bytes in flight per warp than registers
     * would hold, and 16 registers for the batch being computed instead of
     * 32 for two. One commit group per batch, empty past the run, so that
     * "batch b has landed" is always wait_group(SL_D - 1). */
    int4 *ring = reinterpret_cast<int4 *>(sl_sm + a.off_ring) + (size_t)warp * (SL_D * SL_U * 32) + lane;
    const int nb = kc1 > kc0 ? (kc1 - kc0) / SL_U : 0; /* runs are whole batches */
    auto issue = [&](int b, int u0 = 0, int u1 = SL_U) {
        int4 *d = ring + (b % SL_D) * (SL_U * 32);
        const int4 *src = wt + (size_t)(kc0 + b * SL_U) * 32;
#pragma unroll
        for (int u = 0; u < SL_U; u++)
            if (u >= u0 && u < u1)
                cp_async16(d + u * 32, src + u * 32);
    };
    /* The first H0 chunks of the first batch go out now, before x is
     * ready; the rest after the x loads: the x loads (L2 hits) queue
     * behind the copies issued before them (round 7: with both batches
     * ahead of x the staging waited on the codes; round 11: at 16 rows,
     * whose staging is twice the 8-row one, half a batch ahead of x was
     * 2-5 % faster than a whole one, at 8 rows mixed). Each batch is one
     * commit group, empty past the run, closed after the x loads: in the
     * warp's first staging pass, or after the staging for a warp with
     * none. Written out, not as a loop over a count of the groups issued,
     * which the staging loop made a run-time value (~30 instructions). */
    constexpr int H0 = MT == 2 ? SL_U / 2 : SL_U;
    if (nb > 0)
        issue(0, 0, H0);
    /* The run's scales, in the first batch's group, behind its first
     * codes: nothing waits for them before the x staging. */
    int glo = 0;
    if (kc1 > kc0) { /* warp-uniform */
        int ghi = (kc1 - 1) >> a.gshift;
        glo = kc0 >> a.gshift;
        ghi = ghi < a.ng ? ghi : a.ng - 1;
        glo = glo < a.ng ? glo : a.ng - 1;
        tile_scales_async(szw, a.sz, glo, ghi - glo + 1, a.ntiles, nt, lane);
    }
    cluster_sum_begin(sum_bar, a.cs, ks);
    auto issue_rest = [&]() {
        if (nb > 0)
            issue(0, H0, SL_U);
        cp_async_commit();
#pragma unroll
        for (int b = 1; b < SL_D; b++) {
            if (b < nb)
                issue(b);
            cp_async_commit();
        }
    };
    if constexpr (NF4) { /* the code-pair table (GvDeqNf4), from the weight's codebook: before the wait */
        uint32_t *lut = reinterpret_cast<uint32_t *>(sl_sm + a.off_lut);
        const float cv = __ldg(a.code + (lane & 15));
        for (int e = warp; e < 256; e += blockDim.x >> 5) {
            const float lo = __shfl_sync(0xFFFFFFFFu, cv, e & 15), hi = __shfl_sync(0xFFFFFFFFu, cv, e >> 4);
            lut[e * 32 + lane] = std::is_same<T, __half>::value ? as_u32(__floats2half2_rn(lo, hi))
                                                                 : as_u32(__floats2bfloat162_rn(lo, hi));
        }
    }
    /* x and y belong to the kernel before until this returns (a no-op
     * without programmatic dependent launch). */
    pdl_wait();
    pdl_trigger();

    /* Stage rows m0 .. m0 + R - 1 of the slice's x (zeros past M) in
     * fragment order (xs_store_piece), and the fold's x sums per row and
     * flush unit. */
    const int P = (sc1 - sc0) * (KC / 8), n = R * P; /* 16-byte pieces of a staged row (a multiple of G8), of all */
    {
        constexpr int XU = 4; /* 16-byte loads in flight per thread */
        const DivBy by_P = ks < a.ks - 1 ? a.by_p : a.by_p_last; /* P >= 16, n P < 2^32 */
        const uint4 *x4 = reinterpret_cast<const uint4 *>(x) + (size_t)sc0 * (KC / 8);
        uint32_t *xs = reinterpret_cast<uint32_t *>(sl_sm);
        float *sums = reinterpret_cast<float *>(sl_sm + a.off_sums);
        for (int i0 = warp * 32; i0 < n; i0 += blockDim.x * XU) {
            uint4 v[XU];
#pragma unroll
            for (int u = 0; u < XU; u++) {
                const int i = i0 + u * blockDim.x + lane, row = by_P(i);
                v[u] = make_uint4(0, 0, 0, 0);
                if (i < n && m0 + row < a.M) {
                    if (!a.perm) {
                        v[u] = __ldg(x4 + (size_t)(m0 + row) * (a.K / 8) + (i - row * P));
                    } else { /* the piece's 8 repacked rows, gathered (warp-uniform branch) */
                        const uint16_t *xr = reinterpret_cast<const uint16_t *>(x) + (size_t)(m0 + row) * a.K;
                        const int r = (sc0 * (KC / 8) + i - row * P) * 8;
                        v[u].x = x_pair<true>(xr, r, a.K, a.perm);
                        v[u].y = x_pair<true>(xr, r + 2, a.K, a.perm);
                        v[u].z = x_pair<true>(xr, r + 4, a.K, a.perm);
                        v[u].w = x_pair<true>(xr, r + 6, a.K, a.perm);
                    }
                }
            }
            if (i0 == warp * 32) /* warp-uniform: the first pass */
                issue_rest();
#pragma unroll
            for (int u = 0; u < XU; u++) {
                if (i0 + u * blockDim.x >= n) /* warp-uniform */
                    break;
                const int i = i0 + u * blockDim.x + lane, row = by_P(i), p = i - row * P;
                if (i < n)
                    xs_store_piece<XW, XP>(xs + row * a.xstride, p, v[u]);
                if constexpr (FOLD) {
                    const float sum = xs_unit_sum<G8>(v[u]);
                    if (i < n && lane % G8 == 0)
                        sums[(p / G8) * R + row] = sum; /* [unit][row]: a flush reads row pairs as float2 */
                }
            }
        }
    }
    if (warp * 32 >= n) /* no staging pass */
        issue_rest();
    __syncthreads();

    /* acc: the output fragments, one per 8 rows (c0, c1: channel gl, rows
     * 2t, 2t + 1; c2, c3: channel gl + 8). Two sets, for even and odd
     * k-steps, where nothing else breaks the chain of mma on one
     * accumulator (the fold adds into acc only at a flush).
     * accg (fold): the current flush unit's sums of x * (1024 + q) (or
     * 1024 + 16 q), NS sets: at 16 rows the two row tiles are already two
     * chains, and a second set cost 8 adds per flush. A unit's first mma
     * on each set takes zero as its accumulator (RZ), so nothing clears the
     * sets (kernels/WNA16_NOTES.md round 9). */
    constexpr int NS = DEFER && MT == 2 ? 1 : 2;
    float acc[2][MT][4] = {}, accg[NS][MT][4] = {};
    using Dq = typename std::conditional<
        NF4, GvDeqNf4, typename std::conditional<FOLD, GvDeqFold<BITS>, GvDeq<T, BITS, true>>::type>::type;
    Dq dq;
    dq.init();
    if constexpr (NF4)
        dq.lut = reinterpret_cast<const uint32_t *>(sl_sm + a.off_lut) + lane;
    int gsz = 0, unit = 0; /* the scales' group (relative to glo); the flush unit within the slice */
    auto unit_sum = [&](int mt, int c) { /* the unit's sum of one accumulator over the sets */
        float ag = accg[0][mt][c];
#pragma unroll
        for (int j = 1; j < NS; j++)
            ag += accg[j][mt][c];
        return ag;
    };
    auto flush = [&]() {
        if constexpr (FOLD) {
            float sf[2], zc[2];
            GvDeqFold<BITS>::corr(szw[gsz * 8 + gl], sf, zc);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                const float2 X = *reinterpret_cast<const float2 *>(xg + unit * R + mt * 8 + 2 * t); /* rows 2t, 2t + 1 */
#pragma unroll
                for (int c = 0; c < 4; c++)
                    acc[0][mt][c] =
                        fmaf(sf[c >> 1], fmaf(-zc[c >> 1], (c & 1) ? X.y : X.x, unit_sum(mt, c)), acc[0][mt][c]);
            }
        } else if constexpr (NF4) { /* the chunk's absmax, fp32, channels gl and gl + 8 */
            const uint2 p = szw[gsz * 8 + gl];
            const float sf[2] = {__uint_as_float(p.x), __uint_as_float(p.y)};
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int c = 0; c < 4; c++)
                    acc[0][mt][c] = fmaf(sf[c >> 1], unit_sum(mt, c), acc[0][mt][c]);
        }
    };
    auto compute = [&](const int4 (&w)[SL_U], int kcb) {
#pragma unroll
        for (int u = 0; u < SL_U; u++) {
            const int kc = kcb + u;
            const uint32_t wd[4] = {(uint32_t)w[u].x, (uint32_t)w[u].y, (uint32_t)w[u].z, (uint32_t)w[u].w};
            if (u % CPG == 0) { /* compile-time: a flush unit starts */
                unit = (kc - sc0) >> FG;
                gsz = (kc >> a.gshift) - glo;
                dq.set(szw[gsz * 8 + gl]);
            }
            uint32_t xv[MT][2 * STEPS]; /* this lane's B words of the chunk, per 8 rows */
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                const uint4 *p = reinterpret_cast<const uint4 *>(xw + (mt * 8 + gl) * a.xstride + (kc - sc0) * XP +
                                                                 t * (XW / 4));
#pragma unroll
                for (int h = 0; h < XW / 16; h++) {
                    const uint4 v = p[h];
                    xv[mt][4 * h] = v.x;
                    xv[mt][4 * h + 1] = v.y;
                    xv[mt][4 * h + 2] = v.z;
                    xv[mt][4 * h + 3] = v.w;
                }
            }
#pragma unroll
            for (int s = 0; s < STEPS; s++) {
                uint32_t af[4];
                dq.frag(wd, s, af);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    if constexpr (DEFER) {
                        if (u % CPG == 0 && s < NS) /* compile-time: the set's first mma of the unit */
                            accg[s][mt][0] = accg[s][mt][1] = accg[s][mt][2] = accg[s][mt][3] = 0.0f;
                        mma16816<T>(accg[s % NS][mt], af, xv[mt][2 * s], xv[mt][2 * s + 1]);
                    } else {
                        mma16816<T>(acc[s & 1][mt], af, xv[mt][2 * s], xv[mt][2 * s + 1]);
                    }
                }
            }
            if (u % CPG == CPG - 1) /* compile-time: the unit ends */
                flush();
        }
    };
    /* Batch b from its slot, then the slot refilled with batch b + SL_D
     * (after the compute has consumed the registers, so that the copy
     * cannot overtake the shared loads). */
    const int4 *refill = wt + (size_t)(kc0 + SL_D * SL_U) * 32; /* batch b + SL_D's codes: a pointer carried */
    for (int b = 0; b < nb; b++, refill += SL_U * 32) {       /* through the loop, not recomputed (ptxas did) */
        cp_async_wait<SL_D - 1>();
        if (b == 0)
            __syncwarp(); /* the scales: a lane reads what other lanes copied */
        int4 w[SL_U];
        int4 *slot = ring + (b % SL_D) * (SL_U * 32);
#pragma unroll
        for (int u = 0; u < SL_U; u++)
            w[u] = slot[u * 32];
        compute(w, kc0 + b * SL_U);
        if (b + SL_D < nb) /* warp-uniform */
#pragma unroll
            for (int u = 0; u < SL_U; u++)
                cp_async16(slot + u * 32, refill + u * 32);
        cp_async_commit();
    }

    /* The warps of each tile, summed in warp order, then the cluster's K
     * slices in rank order; rank ks writes its share of the block's
     * outputs. With one warp per tile (every plan at 16 rows) each warp
     * sends its own sums as its run ends. */
    float *recv = reinterpret_cast<float *>(sl_sm + a.off_sum + 16);
    if (a.wpt == 1) { /* block-uniform */
        cluster_sum_store_warp<T, MT>(recv, sum_bar, acc, warp, lane, a.cs, ks, threadIdx.x, blockDim.x, tg * a.tb,
                                      m0, a.M, a.N, y);
        return;
    }
    __syncthreads(); /* the staging is free (no copy is in flight: the groups after the run's last are empty) */
    float4 *red = reinterpret_cast<float4 *>(sl_sm); /* [nw][MT][32 lanes] */
    red_store<MT>(red, acc, warp, lane);
    __syncthreads();
    /* a tile's wpt warps hold consecutive fragment runs of MT * 128 */
    cluster_sum_store<T, MT>(recv, sum_bar, reinterpret_cast<const float *>(red), MT * 128, a.wpt, a.cs, ks,
                             threadIdx.x, blockDim.x, tg * a.tb, m0, a.M, a.N, y);
#else
    (void)y;
    (void)x;
    (void)a;
    __trap(); /* the host launches it on compute capability >= 9.0 only */
#endif
}

/* x [M, K] in the repack's row order (act-order), xs [M, Kp] (padding rows
 * 0), for a slice kernel that then reads it like any other x: gathered in
 * the slice kernel's staging, every 2-byte read of a scattered channel
 * costs an L2 sector, and the blocks of the grid all gather (w4g128 at
 * M = 16 took 15-38 us so, against 7.5-15 us for the same weight
 * without act-order). Block (s, m) copies row m into shared memory, then
 * writes its SORT_SPAN sorted positions from there. */
#define SORT_SPAN 2048
/* From this many rows on (below, the staging's gather was faster: the sort
 * kernel cannot start while the slice kernel before it holds the SMs, one
 * block each, so it adds a launch; H100, w4g128 at M = 1 / 4: 12.7-23.8 us
 * sorted against 7.8-16.7 gathered, at M = 16: 13.2 / 19.1 / 26.3 against
 * 15.0 / 27.7 / 38.1). */
#define SORT_MIN_M 9
/* (fp16 and bf16 alike: it moves 2-byte values.) */
__global__ void __launch_bounds__(256) wna16_x_sort_kernel(uint16_t *__restrict__ xs, const uint16_t *__restrict__ x,
                                                           const int *__restrict__ perm, int K, int Kp)
{
    extern __shared__ __align__(16) unsigned char sort_sm[];
    uint16_t *row = reinterpret_cast<uint16_t *>(sort_sm);
    const size_t m = blockIdx.y;
    const int r0 = blockIdx.x * SORT_SPAN, r1 = r0 + SORT_SPAN < Kp ? r0 + SORT_SPAN : Kp;
    pdl_wait();
    pdl_trigger();
    const uint16_t *xr = x + m * K;
    for (int k = threadIdx.x; k < K; k += blockDim.x)
        row[k] = __ldg(xr + k);
    __syncthreads();
    uint16_t *d = xs + m * Kp;
    for (int r = r0 + threadIdx.x; r < r1; r += blockDim.x) {
        const int k = __ldg(perm + r);
        d[r] = k >= 0 ? row[k] : (uint16_t)0;
    }
}

/* ---- host side ---- */

/* A split of the slice kernel and its shared-memory layout, with the key it
 * was planned for: the weight's shape (weights of one shape share it), M,
 * the device, the kernel instantiation (NULL: a usability check) and the
 * forced tuning values. */
struct SlPlan {
    int K, ntiles, nkc, ng, gshift, bits, nf4; /* the shape */
    int M, device, ftb, fwpt, fks, ok;
    const void *kern;
    int tb, wpt, ks, nch, cpw, gspan, xstride;
    size_t off_sums, off_sz, off_ring, off_sum, off_lut, smem;
};

static int sl_force_tb, sl_force_wpt, sl_force_ks, sl_no_pdl, sl_exact;

void wna16_slice_tune_set(int tb, int wpt, int ks, int no_pdl, int exact_dequant)
{
    sl_force_tb = tb;
    sl_force_wpt = wpt;
    sl_force_ks = ks;
    sl_no_pdl = no_pdl;
    sl_exact = exact_dequant;
}

/* log2 of the chunks per flush unit (the stream kernel's FAST weights:
 * static groups of 1, 2 or 4 whole chunks, or longer ones flushed every 4
 * chunks, or one group), or -1 when the kernel does not take the weight. */
static int sl_unit_shift(const wna16_weight *w)
{
    const int KC = w->bits == 4 ? Cfg<4>::KC : Cfg<8>::KC, lsteps = w->bits == 4 ? 2 : 1;
    if (w->K % KC || w->nkc % SL_U)
        return -1;
    if (w->ng == 1)
        return 2;
    const int fg = w->spg_shift - lsteps;
    return w->spg_shift >= 0 && fg >= 0 ? (fg < 2 ? fg : 2) : -1;
}

static int sl_group_shift(const wna16_weight *w) { return w->ng == 1 ? 30 : w->spg_shift - (w->bits == 4 ? 2 : 1); }

/* Clusters of ks blocks (nw warps, smem bytes each) of kern resident at
 * once (cudaOccupancyMaxActiveClusters: clusters live inside one GPC, so
 * this is less than SMs * blocks per SM / ks), remembered per key; 0 when
 * none fits. Not thread-safe, like the plan memos. */
static int sl_active_clusters(const void *kern, const cuda_ctx *c, int nw, size_t smem, int ks)
{
    struct entry {
        const void *kern;
        int device, nw, ks, n;
        size_t smem;
    };
    static entry cache[256];
    static int used, next;
    for (int i = 0; i < used; i++)
        if (cache[i].kern == kern && cache[i].device == c->device && cache[i].nw == nw && cache[i].ks == ks &&
            cache[i].smem == smem)
            return cache[i].n;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)ks);
    cfg.blockDim = dim3((unsigned)(nw * 32));
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute at[1] = {cluster_x((unsigned)ks)};
    cfg.attrs = at;
    cfg.numAttrs = 1;
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, kern, &cfg) != cudaSuccess) {
        cudaGetLastError();
        n = 0;
    }
    entry &e = cache[used < 256 ? used++ : (next++ % 256)];
    e = entry{kern, c->device, nw, ks, n, smem};
    return n;
}

/* The plan: tb tiles (1..32) x wpt warps per tile per block (<= 32
 * warps), the K split ks (cluster size <= 8) with runs of whole batches,
 * at least two per warp where K allows. The cost, fitted to a sweep of
 * the splits on the 7B shapes (bench_wna16 slices, H100;
 * kernels/WNA16_NOTES.md round 6): waves of resident clusters (asked of
 * the driver for kern, since a cluster lives inside one GPC; without it,
 * SMs / ks) x the work of the busiest SM of a wave, its blocks x (the
 * chunks of codes they stream + the x they stage, in 512-byte units).
 * Ties go to fewer tiles, warps and slices. The tuning knobs force tb, wpt
 * or ks where a plan with that value exists, and are ignored where none
 * does. */
static int sl_plan_compute(const wna16_weight *w, const cuda_ctx *c, int M, int mt, int fg, int mode,
                           const void *kern, int ftb, int fwpt, int fks, SlPlan *out)
{
    const int fold = mode == SL_FOLD;
    const int KC = w->bits == 4 ? Cfg<4>::KC : Cfg<8>::KC, R = 8 * mt, gshift = sl_group_shift(w);
    const long rowblocks = (M + R - 1) / R;
    double best = -1.0;
    for (int tb = 1; tb <= SL_MAX_TB; tb++) {
        if (ftb > 0 && tb != ftb)
            continue;
        for (int wpt = 1; tb * wpt <= (mt == 2 ? SL_MAX_WARPS16 : SL_MAX_WARPS); wpt *= 2) {
            if (fwpt > 0 && wpt != fwpt)
                continue;
            for (int ks = 1; ks <= GV_KS_MAX; ks++) {
                if (fks > 0 && ks != fks)
                    continue;
                const int per = (w->nkc + ks - 1) / ks;
                const int cpw = ((per + wpt - 1) / wpt + SL_U - 1) / SL_U * SL_U, nch = cpw * wpt;
                if ((w->nkc + nch - 1) / nch != ks)
                    continue; /* the same slices as fewer of them */
                if (cpw < 2 * SL_U && (ks > 1 || wpt > 1) && fks <= 0 && fwpt <= 0)
                    continue; /* a warp with one batch has nothing to load while it computes */
                int gspan = 1;
                for (int kc0 = 0; kc0 < w->nkc; kc0 += cpw) {
                    const int kc1 = kc0 + cpw < w->nkc ? kc0 + cpw : w->nkc;
                    int glo = kc0 >> gshift, ghi = (kc1 - 1) >> gshift;
                    glo = glo < w->ng ? glo : w->ng - 1;
                    ghi = ghi < w->ng ? ghi : w->ng - 1;
                    gspan = ghi - glo + 1 > gspan ? ghi - glo + 1 : gspan;
                }
                const int nw = tb * wpt, xstride = sl_xstride(w->bits, nch), units = nch >> fg;
                const size_t xbytes = (size_t)R * xstride * 4;
                const size_t off_sums = xbytes;
                const size_t off_sz = (off_sums + (fold ? (size_t)R * units * 4 : 0) + 15) & ~(size_t)15;
                const size_t off_ring = off_sz + (size_t)nw * gspan * 64;
                /* the warps' sums at the end (nw * mt * 512 bytes) reuse the staging and the ring */
                const size_t off_sum = off_ring + (size_t)nw * SL_D * SL_U * 512;
                const size_t off_lut = (off_sum + 16 + (size_t)cluster_split(tb * mt * 128, ks).per * ks * 4 + 15) &
                                       ~(size_t)15;
                size_t smem = off_lut + (mode == SL_NF4 ? SL_LUT_BYTES : 0);
                /* One block per SM: the block reserves the SM's shared
                 * memory. Where two fit, the cluster scheduler packed a
                 * cluster's blocks two to an SM and left SMs idle: at 4
                 * and 8 rows the planned split took 6.3 / 10.8 / 11.6 us
                 * so, 7.0 / 10.8 / 14.6 without (kernels/WNA16_NOTES.md
                 * round 8). */
                smem = smem > c->smem_optin ? smem : c->smem_optin;
                if (smem > c->smem_optin)
                    continue;
                const int per_wave = kern ? sl_active_clusters(kern, c, nw, smem, ks) : c->num_sms / ks;
                if (per_wave < 1)
                    continue;
                const long clusters = (long)((w->ntiles + tb - 1) / tb) * rowblocks;
                const long waves = (clusters + per_wave - 1) / per_wave;
                /* a wave lasts as long as its busiest SM: the blocks it holds x (their codes + x staged) */
                const long first = (clusters < per_wave ? clusters : per_wave) * ks;
                const long per_sm = (first + c->num_sms - 1) / c->num_sms;
                const double cost = (double)waves * per_sm * ((double)nw * cpw + (double)R * nch * KC * 2 / 512.0);
                if (best < 0 || cost < best - 1e-9) {
                    best = cost;
                    out->tb = tb, out->wpt = wpt, out->ks = ks, out->nch = nch, out->cpw = cpw;
                    out->gspan = gspan, out->xstride = xstride;
                    out->off_sums = off_sums, out->off_sz = off_sz, out->off_ring = off_ring;
                    out->off_sum = off_sum, out->off_lut = off_lut, out->smem = smem;
                }
            }
        }
    }
    return best < 0 ? -1 : 0;
}

/* The key of w's plans at M under the current tuning. */
static SlPlan sl_key(const wna16_weight *w, const cuda_ctx *c, int M, const void *kern)
{
    SlPlan k = {};
    k.K = w->K, k.ntiles = w->ntiles, k.nkc = w->nkc, k.ng = w->ng, k.gshift = sl_group_shift(w), k.bits = w->bits;
    k.nf4 = w->nf4;
    k.M = M, k.device = c ? c->device : -1, k.kern = kern;
    k.ftb = sl_force_tb, k.fwpt = sl_force_wpt, k.fks = sl_force_ks;
    return k;
}

static int sl_same_key(const SlPlan &a, const SlPlan &b)
{
    return a.K == b.K && a.ntiles == b.ntiles && a.nkc == b.nkc && a.ng == b.ng && a.gshift == b.gshift &&
           a.bits == b.bits && a.nf4 == b.nf4 && a.M == b.M && a.device == b.device && a.kern == b.kern && a.ftb == b.ftb &&
           a.fwpt == b.fwpt && a.fks == b.fks;
}

/* Plans remembered process-wide by key, replaced round robin: a model's
 * layers share a few shapes, and planning asks the driver for cluster
 * occupancy hundreds of times. Not thread-safe, like the other plan memos. */
static SlPlan sl_plans[64];
static int sl_plans_used, sl_plans_next;

static const SlPlan *sl_plan_find(const SlPlan &key)
{
    for (int i = 0; i < sl_plans_used; i++)
        if (sl_same_key(sl_plans[i], key))
            return &sl_plans[i];
    return NULL;
}

/* sl_plan_compute with the tuning knobs (dropped where no plan has the
 * forced value), remembered (sl_plans). */
static int sl_plan(const wna16_weight *w, const cuda_ctx *c, int M, int mt, int fg, int mode, const void *kern,
                   SlPlan *out)
{
    const SlPlan key = sl_key(w, c, M, kern);
    if (const SlPlan *e = sl_plan_find(key)) {
        *out = *e;
        return e->ok ? 0 : -1;
    }
    *out = key;
    int rc = sl_plan_compute(w, c, M, mt, fg, mode, kern, sl_force_tb, sl_force_wpt, sl_force_ks, out);
    if (rc && (sl_force_tb || sl_force_wpt || sl_force_ks))
        rc = sl_plan_compute(w, c, M, mt, fg, mode, kern, 0, 0, 0, out);
    out->ok = rc == 0;
    sl_plans[sl_plans_used < 64 ? sl_plans_used++ : sl_plans_next++ % 64] = *out;
    return rc;
}

template <typename T, int BITS, int MT, int FG, int MODE>
static cudaError_t sl_launch(const wna16_weight *w, const cuda_ctx *c, void *y, const void *x, int M,
                             int x_sorted, SlPlan *shown)
{
    static int regs; /* per instantiation; asking sets its shared memory limit */
    cudaError_t re = kernel_regs(wna16_slice_kernel<T, BITS, MT, FG, MODE>, c, &regs);
    if (re != cudaSuccess)
        return re;
    SlPlan p;
    if (sl_plan(w, c, M, MT, FG, MODE, (const void *)wna16_slice_kernel<T, BITS, MT, FG, MODE>, &p))
        return cudaErrorInvalidConfiguration; /* wna16_slice_usable said no: not reached */
    if (shown)
        *shown = p;
    SlArgs a;
    memset(&a, 0, sizeof a);
    a.wq = w->wq;
    a.sz = w->sz;
    a.perm = w->use_perm && !x_sorted ? w->perm : NULL;
    a.code = w->nf4_code;
    a.M = M;
    a.K = x_sorted ? w->Kp : w->K; /* x's row length */
    a.N = w->N;
    a.ng = w->ng;
    a.nkc = w->nkc;
    a.ntiles = w->ntiles;
    a.tb = p.tb;
    a.wpt = p.wpt;
    a.ks = p.ks;
    a.wpt_shift = __builtin_ctz((unsigned)p.wpt); /* wpt: a power of two (sl_plan_compute) */
    a.nch = p.nch;
    a.cpw = p.cpw;
    a.gshift = sl_group_shift(w);
    a.gspan = p.gspan;
    a.xstride = p.xstride;
    a.off_sums = (int)p.off_sums;
    a.off_sz = (int)p.off_sz;
    a.off_ring = (int)p.off_ring;
    a.off_sum = (int)p.off_sum;
    a.off_lut = (int)p.off_lut;
    const int KC = BITS == 4 ? Cfg<4>::KC : Cfg<8>::KC, last = w->nkc - (p.ks - 1) * p.nch; /* the last slice's chunks */
    a.by_p = DivBy::of((uint32_t)(p.nch * (KC / 8)));
    a.by_p_last = DivBy::of((uint32_t)(last * (KC / 8)));
    a.cs = cluster_split(p.tb * MT * 128, p.ks);
    const dim3 grid((unsigned)((w->ntiles + p.tb - 1) / p.tb * p.ks), (unsigned)((M + 8 * MT - 1) / (8 * MT)));
    const cudaLaunchAttribute cl = cluster_x((unsigned)p.ks); /* the K slices of a tile group */
    return launch_ex(wna16_slice_kernel<T, BITS, MT, FG, MODE>, grid, dim3((unsigned)(p.tb * p.wpt * 32)), p.smem,
                     c->stream, &cl, 1, !sl_no_pdl, (T *)y, (const T *)x, a);
}

template <typename T, int BITS, int MT>
static cudaError_t sl_launch_fg(const wna16_weight *w, const cuda_ctx *c, void *y, const void *x, int M,
                                int x_sorted, SlPlan *shown)
{
    const bool fold = std::is_same<T, __half>::value && !sl_exact;
    if constexpr (BITS == 4)
        if (w->nf4) /* blocks of 64: FG = 0 (wna16_prepare_nf4) */
            return sl_launch<T, 4, MT, 0, SL_NF4>(w, c, y, x, M, x_sorted, shown);
    switch (sl_unit_shift(w)) {
    case 0: return fold ? sl_launch<__half, BITS, MT, 0, SL_FOLD>(w, c, y, x, M, x_sorted, shown)
                        : sl_launch<T, BITS, MT, 0, SL_EXACT>(w, c, y, x, M, x_sorted, shown);
    case 1: return fold ? sl_launch<__half, BITS, MT, 1, SL_FOLD>(w, c, y, x, M, x_sorted, shown)
                        : sl_launch<T, BITS, MT, 1, SL_EXACT>(w, c, y, x, M, x_sorted, shown);
    case 2: return fold ? sl_launch<__half, BITS, MT, 2, SL_FOLD>(w, c, y, x, M, x_sorted, shown)
                        : sl_launch<T, BITS, MT, 2, SL_EXACT>(w, c, y, x, M, x_sorted, shown);
    default: return cudaErrorInvalidValue; /* wna16_slice_usable said no: not reached */
    }
}

template <typename T, int BITS>
static cudaError_t sl_launch_mt(const wna16_weight *w, const cuda_ctx *c, void *y, const void *x, int M,
                                int x_sorted, SlPlan *shown)
{
    return M <= 8 ? sl_launch_fg<T, BITS, 1>(w, c, y, x, M, x_sorted, shown)
                  : sl_launch_fg<T, BITS, 2>(w, c, y, x, M, x_sorted, shown);
}

int wna16_slice_k_unit(int bits) { return SL_U * (bits == 4 ? Cfg<4>::KC : Cfg<8>::KC); }

int wna16_slice_usable(const wna16_weight *w, const cuda_ctx *c, int M)
{
    const int fg = sl_unit_shift(w), mt = M <= 8 ? 1 : 2;
    SlPlan p;
    return c->cc_major >= 9 && M >= 1 && (M + 15) / 16 <= 65535 && fg >= 0 && (!w->nf4 || fg == 0) && w->K % 8 == 0 &&
           sl_plan(w, c, M, mt, fg, w->nf4 ? SL_NF4 : SL_FOLD, NULL, &p) == 0;
}

/* Whether x is sorted into w's scratch first (act-order from SORT_MIN_M
 * rows with a scratch attached: the model runner attaches its prefill
 * scratch). Otherwise the staging gathers. */
static int sl_sorts(const wna16_weight *w, const cuda_ctx *c, int M)
{
    return w->use_perm && M >= SORT_MIN_M && w->scratch && w->scratch_bytes >= (size_t)M * w->Kp * 2 &&
           (size_t)w->K * 2 <= c->smem_optin;
}

/* x [M, K] into w's scratch in the repack's row order (wna16_x_sort_kernel). */
static int sl_sort(const wna16_weight *w, cuda_ctx *c, const void *x, int M)
{
    static int regs; /* asking sets its shared memory limit */
    const dim3 grid((unsigned)((w->Kp + SORT_SPAN - 1) / SORT_SPAN), (unsigned)M);
    cudaError_t e = kernel_regs(wna16_x_sort_kernel, c, &regs);
    if (e == cudaSuccess)
        e = launch_ex(wna16_x_sort_kernel, grid, dim3(256), (size_t)w->K * 2, c->stream, NULL, 0, !sl_no_pdl,
                      (uint16_t *)w->scratch, (const uint16_t *)x, (const int *)w->perm, w->K, w->Kp);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return llmq_fail("wna16_x_sort_kernel: launch failed (M = %d, K = %d): %s", M, w->K, cudaGetErrorString(e));
    }
    return 0;
}

/* The slice kernel on x (x_sorted: already in w's row order, Kp long). */
static int sl_run(const wna16_weight *w, cuda_ctx *c, llmq_dtype dt, void *y, const void *x, int M, int x_sorted)
{
    SlPlan p = {};
    cudaError_t e = dt == LLMQ_F16 ? (w->bits == 4 ? sl_launch_mt<__half, 4>(w, c, y, x, M, x_sorted, &p)
                                                   : sl_launch_mt<__half, 8>(w, c, y, x, M, x_sorted, &p))
                                   : (w->bits == 4 ? sl_launch_mt<__nv_bfloat16, 4>(w, c, y, x, M, x_sorted, &p)
                                                   : sl_launch_mt<__nv_bfloat16, 8>(w, c, y, x, M, x_sorted, &p));
    if (e != cudaSuccess) {
        cudaGetLastError();
        return llmq_fail("wna16_slice_kernel: launch failed (%d tiles x %d warps, %d K slices, %zu bytes of shared "
                         "memory): %s",
                         p.tb, p.wpt, p.ks, p.smem, cudaGetErrorString(e));
    }
    return 0;
}

int wna16_slice_run(const wna16_weight *w, cuda_ctx *c, llmq_dtype dt, void *y, const void *x, int M, int checked)
{
    if (!checked && (((uintptr_t)x & 15) || !wna16_slice_usable(w, c, M)))
        return llmq_fail("wna16_linear: the slice kernel takes static groups of whole chunks (in the order sorted "
                         "by group), K a multiple of %d and x 16-byte aligned (K = %d, %d groups%s)",
                         wna16_slice_k_unit(w->bits), w->K, w->ng,
                         w->use_perm ? ", act-order" : "");
    if (!sl_sorts(w, c, M))
        return sl_run(w, c, dt, y, x, M, 0);
    return sl_sort(w, c, x, M) || sl_run(w, c, dt, y, w->scratch, M, 1) ? -1 : 0;
}

int wna16_slice_run_group(const wna16_weight *const *ws, int n, cuda_ctx *c, llmq_dtype dt, void *const *ys,
                          const void *x, int M)
{
    const wna16_weight *w0 = ws[0];
    if (n < 2 || !sl_sorts(w0, c, M))
        return 1;
    for (int i = 1; i < n; i++)
        if (!sl_sorts(ws[i], c, M) || ws[i]->K != w0->K || ws[i]->Kp != w0->Kp || ws[i]->scratch != w0->scratch ||
            memcmp(ws[i]->perm_host, w0->perm_host, (size_t)w0->Kp * sizeof(int)))
            return 1;
    if (sl_sort(w0, c, x, M))
        return -1;
    for (int i = 0; i < n; i++)
        if (sl_run(ws[i], c, dt, ys[i], w0->scratch, M, 1))
            return -1;
    return 0;
}

/* The plan the slice kernel ran for w's shape at M under the current
 * tuning (a launch's plan, not a usability check's): 0, or -1 when it has
 * not run. */
int wna16_slice_plan_ran(const wna16_weight *w, int M, int *tb, int *wpt, int *ks)
{
    for (int i = 0; i < sl_plans_used; i++) {
        const SlPlan &e = sl_plans[i];
        SlPlan key = sl_key(w, NULL, M, e.kern);
        key.device = e.device;
        if (e.kern && e.ok && sl_same_key(e, key)) {
            *tb = e.tb;
            *wpt = e.wpt;
            *ks = e.ks;
            return 0;
        }
    }
    return -1;
}
