/* The streaming W4A16 / W8A16 GEMV (round 4 of the decode kernel,
 * kernels/WNA16_NOTES.md): wna16.h's STREAM path, AUTO's choice at M = 1.
 *
 * Why another kernel. Round 2's ring GEMV (kernels/wna16.cu) brings the
 * codes into shared memory by bulk copies, two 8 KB stages per block, and
 * its blocks wait out about one loaded DRAM round trip per stage: 0.31-0.43
 * of the copy bandwidth at M = 1. Here every warp streams its own
 * contiguous run of chunks straight into registers with two batches of
 * ST_U 16-byte loads per lane in flight: no ring, no barrier, no copy
 * engine, and a warp never waits on another. Streaming alone (the
 * stream_dry knob: same loads, no arithmetic) reaches ~0.85 of the copy
 * bandwidth on the 7B shapes, so what is left is arithmetic per chunk,
 * which the choices below cut:
 *
 *   - FAST (static groups of 1, 2 or 4 whole chunks, K a multiple of the
 *     chunk: GPTQ g64 / g128): runs are whole batches, and a batch is
 *     straight-line code with the group boundaries known at compile time;
 *     no bounds or group tests for the compiler to schedule around;
 *   - FOLD (fp16, M <= 8): the mma takes the codes as the LOP3 leaves them
 *     (1024 + q, or 1024 + 16 q for the high nibble pairs) and the zero
 *     point and the offset come off once per group through the group's x
 *     sums: 5 instructions per A fragment instead of 9;
 *   - XS (M = 1): x is staged once per block in shared memory, each
 *     chunk's words permuted so that a lane's B fragments are one or two
 *     16-byte loads, and the group sums of x are computed there too. Global
 *     x loads next to the stream were the largest single cost (4096 ->
 *     11008: 17.0 -> 10.6 us).
 * The general loop (any groups, padding rows, act-order through perm)
 * keeps a test per k-step and reads x from global memory.
 *
 * Work split. A block owns one 16-channel tile and all of K; its SW warps
 * (1..ST_MAX_WARPS, planned per shape so that the grid is resident in one
 * wave) take consecutive runs of cps chunks, and add their accumulator
 * fragments through shared memory at the end in a fixed order
 * (deterministic, no atomics, no workspace, no cluster). Blocks along y take
 * further groups of 8 * MT rows of x. Per warp, before the stream, the
 * scales/zeros of the groups its run touches (a contiguous range: the
 * repack sorts rows by group) go to shared memory with all loads in flight
 * at once. The weight loads go out before griddepcontrol.wait
 * (programmatic dependent launch), so they overlap the end of the kernel
 * before. Measured: docs/BENCHMARKS_KERNELS.md. */
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "kernels/wna16_internal.cuh"

#define ST_U 4          /* chunks per batch; two batches in flight per warp */
#define ST_MAX_WARPS 16 /* per block (512 threads: <= 128 registers) */
/* Registers of the M = 1 (XS) kernels: they need ~70-80, and left alone
 * ptxas picks 64 with spills for some instantiations and 71-78 for others,
 * changing from one edit of the kernel to the next. 80 costs the same
 * occupancy as 72 (registers go to warps in units of 256). */
#define ST_XS_REGS 80

/* A further weight of a group launch (q/k/v or gate/up in one grid): the
 * grid's blocks from tile0 on are its 16-channel tiles. */
struct StSeg {
    const int4 *wq;
    const uint2 *sz;
    void *y;
    int N, ntiles, tile0;
};

struct StArgs {
    const int4 *wq; /* the (first) weight; its output is the kernel's y */
    const uint2 *sz;
    const int *step_group, *perm; /* shared: the weights of a group have the same K and groups */
    int M, K, N, ng, nkc, ntiles;
    int cps;       /* chunks per warp (the last warps may have fewer or none) */
    int spg_shift; /* step -> group as a shift, or -1: the step_group table */
    int prefetch;  /* chunks prefetched into L2 ahead of the register batches (0: none) */
    int xs_off;    /* XS: byte offset of the staged x row in shared memory */
    int gshift;    /* FAST: chunk kc is in (scale) group kc >> gshift (30: one group) */
    int gspan;     /* most groups one warp's run touches */
    int nseg;      /* GRP: weights in the launch (1 + those in more) */
    StSeg more[WNA16_GROUP_MAX - 1];
};

/* Shared memory of a block of nw warps (bytes): the reduction fragments,
 * then per warp its groups' scales/zeros, then (table) its steps' groups. */
__host__ __device__ __forceinline__ size_t st_smem(int nw, int mt, int gspan, int cps, int steps, int table)
{
    return (size_t)nw * mt * 512 + (size_t)nw * gspan * 64 + (table ? (size_t)nw * cps * steps * 4 : 0);
}


/* Chunks kc .. kc + n - 1 of a tile (clipped at kc1) into L2 by one bulk
 * prefetch from lane 0 (tuning knob stream_prefetch: deeper than the
 * registers hold, at no register cost). */
__device__ __forceinline__ void st_prefetch(const int4 *tile, int kc, int n, int kc1, int lane)
{
    n = kc + n < kc1 ? n : kc1 - kc;
    if (lane == 0 && n > 0)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(tile + (size_t)kc * 32), "r"(n * 512)
                     : "memory");
}

/* dst[i] = src[i] for i < n, by the 32 lanes of a warp, 4 loads in flight
 * per lane before the first store. */
template <typename V> __device__ __forceinline__ void st_stage(V *dst, const V *src, int n, int lane)
{
    for (int i0 = 0; i0 < n; i0 += 128) {
        V v[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int i = i0 + 32 * j + lane;
            if (i < n)
                v[j] = __ldg(src + i);
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int i = i0 + 32 * j + lane;
            if (i < n)
                dst[i] = v[j];
        }
    }
}

/* x[row][r], x[row][r + 1] as a dt pair (repacked rows r, r + 1, r even;
 * through perm under act-order), 0 for padding rows. Branch-free: the
 * lanes of a warp disagree on the tests, and a divergent branch per k-step
 * costs more than the loads. */
template <bool PERM> __device__ __forceinline__ uint32_t st_x(const uint16_t *xb, int r, int K, const int *perm)
{
    if (PERM) {
        const int2 p = __ldg(reinterpret_cast<const int2 *>(perm + r));
        const uint32_t lo = __ldg(xb + (p.x > 0 ? p.x : 0)), hi = __ldg(xb + (p.y > 0 ? p.y : 0));
        return (p.x >= 0 ? lo : 0u) | (p.y >= 0 ? hi : 0u) << 16;
    }
    const uint32_t v = __ldg(reinterpret_cast<const uint32_t *>(xb + (r < K ? r : K - 2)));
    return r < K ? v : 0u;
}

template <typename T, int BITS, int MT, bool PERM, bool EXACT, int FG, bool FOLD, bool XS = false, bool DRY = false,
          bool GRP = false>
__global__ void __maxnreg__(XS ? ST_XS_REGS : 65536 / (ST_MAX_WARPS * 32))
    wna16_stream_kernel(T *__restrict__ y0, const T *__restrict__ x, const StArgs a)
{
    static_assert(WNA16_GROUP_MAX == 3, "the segment selects below");
    /* FG >= 0 (FAST): flush units of 2^FG whole chunks in which the scales
     * do not change (static groups of a multiple of it, or one group),
     * every warp's run a whole number of batches (the plan sees to it), so
     * that a batch is straight-line code the compiler schedules as one
     * block: no bounds or group tests inside it. FG < 0: any groups,
     * padding rows, act-order. */
    constexpr bool FAST = FG >= 0;
    constexpr int CPG = FAST ? 1 << FG : 1;
    static_assert(!FAST || CPG <= ST_U, "FAST: a batch holds whole groups");
    static_assert(EXACT || std::is_same<T, __half>::value, "scales after the mma: fp16 only");
    static_assert(!FAST || !PERM, "FAST: static groups only");
    static_assert(!FOLD || (FAST && !EXACT && MT == 1), "FOLD: fp16, one row tile, FAST groups");
    static_assert(!DRY || FAST, "DRY: a measurement of the FAST stream");
    static_assert(!XS || FOLD, "XS: x staged for M = 1 (FOLD kernels)");
    constexpr int XW = Cfg<BITS>::KC / 2; /* XS: x words (row pairs) per chunk; lane t takes t + 4 j */
    constexpr int STEPS = Cfg<BITS>::STEPS;
    extern __shared__ __align__(16) unsigned char st_sm[];
    const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gl = lane >> 2, t = lane & 3;
    /* GRP (a group launch): this block's weight, field by field (a runtime
     * index into the parameter struct would copy it to local memory).
     * Single weights compile with si = 0: the segment logic costs the
     * register allocation of the hot loop enough to matter (ptxas picks
     * another budget), so it is an instantiation of its own. */
    const int bx = blockIdx.x;
    int si = GRP ? (a.nseg > 2 && bx >= a.more[1].tile0 ? 2 : a.nseg > 1 && bx >= a.more[0].tile0) : 0;
#define ST_SEG(f, f0) (si == 0 ? (f0) : si == 1 ? a.more[0].f : a.more[1].f)
    const int nt = bx - ST_SEG(tile0, 0), m0 = blockIdx.y * 8 * MT;
    float4 *red = reinterpret_cast<float4 *>(st_sm); /* [nw][MT][32 lanes] */
    uint2 *szw = reinterpret_cast<uint2 *>(st_sm + (size_t)nw * MT * 512) + (size_t)warp * a.gspan * 8;
    int *sgw = reinterpret_cast<int *>(st_sm + (size_t)nw * MT * 512 + (size_t)nw * a.gspan * 64) +
               (size_t)warp * a.cps * STEPS;

    const int kc0 = warp * a.cps, kc1 = kc0 + a.cps < a.nkc ? kc0 + a.cps : a.nkc; /* kc1 <= kc0: no work */
    const int s0 = kc0 * STEPS;
    const int4 *tile = ST_SEG(wq, a.wq) + (size_t)nt * a.nkc * 32, *wt = tile + lane;

    /* The first two batches, then the run's scales while they travel. */
    int4 wa[ST_U], wb[ST_U];
    lane_chunks_load(wa, wt, kc0, kc1);
    lane_chunks_load(wb, wt, kc0 + ST_U, kc1);
    if (a.prefetch)
        st_prefetch(tile, kc0 + 2 * ST_U, a.prefetch, kc1, lane);
    int glo = 0;
    if (kc1 > kc0) { /* warp-uniform */
        const int s1 = kc1 * STEPS;
        int ghi;
        if (a.spg_shift >= 0) {
            glo = s0 >> a.spg_shift;
            ghi = (s1 - 1) >> a.spg_shift;
            ghi = ghi < a.ng ? ghi : a.ng - 1;
            glo = glo < a.ng ? glo : a.ng - 1;
        } else {
            glo = __ldg(a.step_group + s0);
            ghi = __ldg(a.step_group + s1 - 1);
            st_stage(sgw, a.step_group + s0, s1 - s0, lane);
        }
        /* by cp.async: waited for after the x staging, not before it */
        tile_scales_async(szw, ST_SEG(sz, a.sz), glo, ghi - glo + 1, ST_SEG(ntiles, a.ntiles), nt, lane);
    }
    cp_async_commit();
    __syncwarp();
    /* x and y belong to the kernel before until this returns (a no-op
     * without programmatic dependent launch). */
    pdl_wait();
    pdl_trigger();
    /* XS (M = 1): x staged once per block, each chunk's XW words permuted so
     * that lane t's B words (t + 4 j, j = 2 s and 2 s + 1 for k-step s) are
     * contiguous: one or two 16-byte shared loads per chunk instead of 2 *
     * STEPS global ones, and no x traffic through L1 next to the stream. */
    /* The fold's group sums X of x come from the staging too (fp32, in a
     * fixed order), so the mma need not compute them (FOLD without XS adds
     * one mma per k-step with A = ones instead). */
    const uint32_t *xs = reinterpret_cast<const uint32_t *>(st_sm + a.xs_off);
    const float *xsum = reinterpret_cast<const float *>(st_sm + a.xs_off + 2 * (size_t)a.K);
    if constexpr (XS) {
        constexpr int G8 = (Cfg<BITS>::KC << (FAST ? FG : 0)) / 8; /* 16-byte pieces of x per group (<= 32) */
        uint32_t *xw = reinterpret_cast<uint32_t *>(st_sm + a.xs_off);
        float *xg = reinterpret_cast<float *>(st_sm + a.xs_off + 2 * (size_t)a.K);
        const uint4 *x4 = reinterpret_cast<const uint4 *>(x);
        constexpr int XU = 4; /* 16-byte loads in flight per thread: one L2 round trip for K <= XU * 8 * threads */
        const int nq = a.K / 8;
        for (int q0 = warp * 32; q0 < nq; q0 += blockDim.x * XU) { /* warp-uniform: groups start at lane % G8 == 0 */
            uint4 v[XU];
#pragma unroll
            for (int u = 0; u < XU; u++) {
                const int q = q0 + u * blockDim.x + lane; /* words 4q .. 4q + 3: t = 0..3, one j */
                v[u] = q < nq ? __ldg(x4 + q) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < XU; u++) {
                const int q = q0 + u * blockDim.x + lane;
                if (q0 + u * blockDim.x >= nq) /* warp-uniform */
                    break;
                if (q < nq)
                    xs_store_piece<XW>(xw, q, v[u]);
                const float sum = xs_unit_sum<G8>(v[u]);
                if (q < nq && lane % G8 == 0)
                    xg[q / G8] = sum;
            }
        }
        __syncthreads();
    }
    cp_async_wait<0>(); /* the scales */
    __syncwarp();

    /* The x row of this lane's B column in each row tile. Columns past M
     * read row M - 1: their outputs are not written, and the mma keeps
     * columns apart, so no mask is needed. */
    const uint16_t *xrow[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        const int m = m0 + mt * 8 + gl;
        xrow[mt] = reinterpret_cast<const uint16_t *>(x) + (size_t)(m < a.M ? m : a.M - 1) * a.K;
    }
    /* Two accumulator sets, for even and odd k-steps: a chunk's 4 mma are
     * two chains of 2 instead of one of 4. accg: the current group's sums
     * (fp16, one row tile); xacc (FOLD): the group's x sums. */
    float acc[2][MT][4], accg[2][MT][4], xacc[2][4];
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
            xacc[h][c] = 0.0f;
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                acc[h][mt][c] = accg[h][mt][c] = 0.0f;
        }
    uint32_t dry = 0; /* DRY: the codes folded together, so that their loads stay */
    using Dq = typename std::conditional<FOLD, GvDeqFold<BITS>, GvDeq<T, BITS, EXACT>>::type;
    Dq dq;
    dq.init();
    int gcur = -1, gsz = 0; /* gsz (FAST): the scales' group, relative to glo */
    /* acc += scale * accg at the end of a group; FOLD: the zero point and
     * the fp16 offset come off there, scale * (accg - (1024 + m z) X). */
    auto flush = [&]() {
        if constexpr (FOLD) {
            if (gcur < 0) /* warp-uniform: nothing summed yet */
                return;
            float sf[2], zc[2];
            GvDeqFold<BITS>::corr(szw[gsz * 8 + gl], sf, zc);
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const float ag = accg[0][0][c] + accg[1][0][c], xs = XS ? xsum[gcur] : xacc[0][c] + xacc[1][c];
                acc[0][0][c] = fmaf(sf[c >> 1], fmaf(-zc[c >> 1], xs, ag), acc[0][0][c]);
                accg[0][0][c] = accg[1][0][c] = xacc[0][c] = xacc[1][c] = 0.0f;
            }
        } else if constexpr (!EXACT) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    acc[0][mt][c] = fmaf(dq.sf[c >> 1], accg[0][mt][c] + accg[1][mt][c], acc[0][mt][c]);
                    accg[0][mt][c] = accg[1][mt][c] = 0.0f;
                }
        }
    };
    const uint32_t ones[4] = {0x3C003C00u, 0x3C003C00u, 0x3C003C00u, 0x3C003C00u}; /* fp16 1.0 pairs */
    auto compute = [&](const int4 (&w)[ST_U], int kcb) {
#pragma unroll
        for (int u = 0; u < ST_U; u++) {
            const int kc = kcb + u;
            if (kc >= kc1) /* warp-uniform */
                break;
            const uint32_t wd[4] = {(uint32_t)w[u].x, (uint32_t)w[u].y, (uint32_t)w[u].z, (uint32_t)w[u].w};
#pragma unroll
            for (int s = 0; s < STEPS; s++) {
                const int st = kc * STEPS + s;
                int g = a.spg_shift >= 0 ? st >> a.spg_shift : sgw[st - s0];
                g = g < a.ng ? g : a.ng - 1; /* tail padding steps */
                if (g != gcur) {             /* warp-uniform */
                    flush();
                    gcur = g;
                    dq.set(szw[(g - glo) * 8 + gl]);
                }
                const int r = st * 16 + 2 * t;
                uint32_t b[MT][2];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    b[mt][0] = st_x<PERM>(xrow[mt], r, a.K, a.perm);
                    b[mt][1] = st_x<PERM>(xrow[mt], r + 8, a.K, a.perm);
                }
                uint32_t af[4];
                dq.frag(wd, s, af);
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    mma16816<T>(EXACT ? acc[s & 1][mt] : accg[s & 1][mt], af, b[mt][0], b[mt][1]);
            }
        }
    };
    /* FAST: a batch is ST_U / CPG whole groups, starting group-aligned. */
    auto compute_fast = [&](const int4 (&w)[ST_U], int kcb) {
#pragma unroll
        for (int u = 0; u < ST_U; u++) {
            const int kc = kcb + u;
            const uint32_t wd[4] = {(uint32_t)w[u].x, (uint32_t)w[u].y, (uint32_t)w[u].z, (uint32_t)w[u].w};
            if constexpr (DRY) {
                dry ^= wd[0] ^ wd[1] ^ wd[2] ^ wd[3];
                continue;
            }
            if (u % CPG == 0) { /* compile-time: a group starts */
                gcur = kc >> (FAST ? FG : 0); /* the flush's unit (its x sums); the scales' group may be longer */
                gsz = (kc >> a.gshift) - glo;
                dq.set(szw[gsz * 8 + gl]);
            }
            const uint16_t *xc[MT]; /* this chunk's x at rows 16 s + 2 t (+ 8) */
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                xc[mt] = xrow[mt] + kc * (STEPS * 16) + 2 * t;
            uint32_t xv[2 * STEPS]; /* XS: this lane's B words of the chunk */
            if constexpr (XS) {
                const uint4 *p = reinterpret_cast<const uint4 *>(xs + kc * XW + t * (XW / 4));
#pragma unroll
                for (int h = 0; h < XW / 16; h++) {
                    const uint4 v = p[h];
                    xv[4 * h] = v.x;
                    xv[4 * h + 1] = v.y;
                    xv[4 * h + 2] = v.z;
                    xv[4 * h + 3] = v.w;
                }
            }
#pragma unroll
            for (int s = 0; s < STEPS; s++) {
                uint32_t b[MT][2];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    if constexpr (XS) {
                        b[mt][0] = xv[2 * s];
                        b[mt][1] = xv[2 * s + 1];
                    } else {
                        b[mt][0] = __ldg(reinterpret_cast<const uint32_t *>(xc[mt] + 16 * s));
                        b[mt][1] = __ldg(reinterpret_cast<const uint32_t *>(xc[mt] + 16 * s + 8));
                    }
                }
                uint32_t af[4];
                dq.frag(wd, s, af);
                if constexpr (FOLD && !XS)
                    mma16816<T>(xacc[s & 1], ones, b[0][0], b[0][1]);
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    mma16816<T>(EXACT ? acc[s & 1][mt] : accg[s & 1][mt], af, b[mt][0], b[mt][1]);
            }
            if (u % CPG == CPG - 1) /* compile-time: the group ends */
                flush();
        }
    };
    if constexpr (FAST) {
        /* Runs and batches are whole: a batch is loaded only when it exists. */
        for (int kcb = kc0; kcb < kc1; kcb += 2 * ST_U) {
            compute_fast(wa, kcb);
            if (kcb + 2 * ST_U < kc1) {
                lane_chunks_load(wa, wt, kcb + 2 * ST_U, kc1);
                if (a.prefetch)
                    st_prefetch(tile, kcb + 2 * ST_U + a.prefetch, ST_U, kc1, lane);
            }
            if (kcb + ST_U >= kc1)
                break;
            compute_fast(wb, kcb + ST_U);
            if (kcb + 3 * ST_U < kc1) {
                lane_chunks_load(wb, wt, kcb + 3 * ST_U, kc1);
                if (a.prefetch)
                    st_prefetch(tile, kcb + 3 * ST_U + a.prefetch, ST_U, kc1, lane);
            }
        }
        gcur = -1; /* every group was flushed at its end */
    } else {
        for (int kcb = kc0; kcb < kc1; kcb += 2 * ST_U) {
            compute(wa, kcb);
            lane_chunks_load(wa, wt, kcb + 2 * ST_U, kc1);
            if (a.prefetch)
                st_prefetch(tile, kcb + 2 * ST_U + a.prefetch, ST_U, kc1, lane);
            compute(wb, kcb + ST_U);
            lane_chunks_load(wb, wt, kcb + 3 * ST_U, kc1);
            if (a.prefetch)
                st_prefetch(tile, kcb + 3 * ST_U + a.prefetch, ST_U, kc1, lane);
        }
    }
    flush();
    if constexpr (DRY)
        acc[0][0][0] = (float)(dry & 1u);

    /* The warps' fragments, summed in warp order; each thread writes one
     * (row, channel) of the tile at a time. */
    red_store<MT>(red, acc, warp, lane);
    __syncthreads();
    const float *rf = reinterpret_cast<const float *>(red);
    /* The segment again, from a fresh read of the block index: keeping si
     * (or y and N) live through the stream costs the batches registers. */
    if constexpr (GRP) {
        unsigned bxr;
        asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(bxr));
        si = a.nseg > 2 && (int)bxr >= a.more[1].tile0 ? 2 : a.nseg > 1 && (int)bxr >= a.more[0].tile0;
    }
    T *y = si == 0 ? y0 : static_cast<T *>(si == 1 ? a.more[0].y : a.more[1].y);
    const int N = ST_SEG(N, a.N);
#undef ST_SEG
    for (int e = threadIdx.x; e < MT * 128; e += blockDim.x) {
        const int c = e & 3, ln = (e >> 2) & 31, mt = e >> 7;
        const int n = nt * 16 + (ln >> 2) + (c >> 1) * 8, m = m0 + mt * 8 + (ln & 3) * 2 + (c & 1);
        if (m >= a.M || n >= N)
            continue;
        float v = 0.0f;
        for (int wp = 0; wp < nw; wp++)
            v += rf[wp * MT * 128 + e];
        y[(size_t)m * N + n] = from_f32<T>(v);
    }
}

/* ---- host side ---- */

struct StPlan {
    int sw, cps, gspan;
    size_t smem;
};

/* What one launch computes: n weights of the same K, bits and groups (w[0]
 * stands for all in the plan) read one x, y[i] = x . w[i]^T; ntiles: their
 * 16-channel tiles together (the grid's x). */
struct StGroup {
    const wna16_weight *w[WNA16_GROUP_MAX];
    void *y[WNA16_GROUP_MAX];
    int n, ntiles;
};

/* The warps per block: the split whose grid is resident in the fewest
 * waves, each wave costing its warps' chunks plus ~3 chunks of start-up
 * (first loads, scales, the reduction); ties go to fewer warps; runs of at
 * least two batches. FAST rounds runs up to whole batches. 0, or -1 when
 * no split fits shared memory. */
static int st_fast_group(const wna16_weight *w);
static int st_group_shift(const wna16_weight *w);

static int st_plan_compute(const wna16_weight *w, int ntiles, const cuda_ctx *c, int M, int regs, int force_sw,
                           size_t xs_bytes, StPlan *out)
{
    const int STEPS = w->bits == 4 ? Cfg<4>::STEPS : Cfg<8>::STEPS, table = w->spg_shift < 0;
    const int mt = M <= 8 ? 1 : 2, q = st_fast_group(w) >= 0 ? ST_U : 1; /* FAST: runs of whole batches */
    const long blocks = (long)ntiles * ((M + 8 * mt - 1) / (8 * mt));
    long best = -1;
    for (int sw = 1; sw <= ST_MAX_WARPS && sw <= w->nkc; sw++) {
        const int cps = ((w->nkc + sw - 1) / sw + q - 1) / q * q, swe = (w->nkc + cps - 1) / cps;
        if (swe != sw)
            continue; /* the same runs as a smaller block */
        if (force_sw > 0 && sw <= force_sw) /* forced: the largest split up to force_sw */
            best = -1;
        else if (force_sw > 0)
            continue;
        else if (cps < 2 * ST_U && sw > 1)
            continue; /* a warp with one batch has nothing to load while it computes (measured: 4096 x 4096
                         at M = 1 takes 4.8 us with 16 warps of 4 chunks, 4.0 with 8 of 8) */
        int gspan = 1;
        for (int r = 0; r < sw; r++) {
            const int kc0 = r * cps, kc1 = kc0 + cps < w->nkc ? kc0 + cps : w->nkc;
            const int span = w->sg_host[kc1 * STEPS - 1] - w->sg_host[kc0 * STEPS] + 1;
            gspan = span > gspan ? span : gspan;
        }
        const size_t smem = st_smem(sw, mt, gspan, cps, STEPS, table) + xs_bytes;
        if (smem > c->smem_optin)
            continue;
        const int bps = regs > 0 ? cuda_resident_blocks(c->device, sw, regs, smem) : 1;
        const long waves = (blocks + (long)bps * c->num_sms - 1) / ((long)bps * c->num_sms);
        const long cost = waves * (cps + 3);
        if (best < 0 || cost < best) {
            best = cost;
            out->sw = sw;
            out->cps = cps;
            out->gspan = gspan;
            out->smem = smem;
        }
    }
    return best < 0 ? -1 : 0;
}

/* st_plan_compute, remembered per weight (wna16_weight.st_memo). */
static int st_plan(const wna16_weight *w, int ntiles, const cuda_ctx *c, int M, int regs, int force_sw,
                   size_t xs_bytes, StPlan *out)
{
    wna16_weight *wm = const_cast<wna16_weight *>(w); /* the memo only: the weight itself stays as it is */
    for (const wna16_stream_memo &e : wm->st_memo)
        if (e.M == M && e.ntiles == ntiles && e.regs == regs && e.force_sw == force_sw && e.device == c->device &&
            e.xs_bytes == xs_bytes) {
            *out = StPlan{e.sw, e.cps, e.gspan, e.smem};
            return e.ok ? 0 : -1;
        }
    const int rc = st_plan_compute(w, ntiles, c, M, regs, force_sw, xs_bytes, out);
    wna16_stream_memo &e = wm->st_memo[wm->st_memo_next];
    wm->st_memo_next = (wm->st_memo_next + 1) % 4;
    e = wna16_stream_memo{M, ntiles, regs, force_sw, c->device, rc == 0, xs_bytes, out->sw, out->cps, out->gspan,
                          out->smem};
    return rc;
}

/* XS: shared memory for the staged x row and its group sums. */
static size_t st_xs_bytes(const wna16_weight *w) { return ((size_t)w->K * 2 + (size_t)(w->K / 16) * 4 + 15) & ~(size_t)15; }

static int st_force_sw, st_no_pdl, st_exact, st_prefetch_n, st_dry, st_nofold, st_no_xs;

void wna16_stream_tune_set(int warps, int no_pdl, int exact_dequant, int prefetch, int dry, int nofold, int no_xs)
{
    st_no_xs = no_xs;
    st_nofold = nofold;
    st_force_sw = warps;
    st_no_pdl = no_pdl;
    st_exact = exact_dequant;
    st_prefetch_n = prefetch > 0 ? prefetch : 0;
    st_dry = dry;
}

template <typename T, int BITS, int MT, bool PERM, bool EXACT, int FG, bool FOLD = false, bool XS = false,
          bool DRY = false, bool GRP = false>
static cudaError_t st_launch(const StGroup &g, const cuda_ctx *c, const void *x, int M)
{
    static int regs; /* per instantiation */
    cudaError_t re = kernel_regs(wna16_stream_kernel<T, BITS, MT, PERM, EXACT, FG, FOLD, XS, DRY, GRP>, c, &regs);
    if (re != cudaSuccess)
        return re;
    const wna16_weight *w = g.w[0];
    StPlan p;
    const size_t xs_bytes = XS ? st_xs_bytes(w) : 0;
    if (st_plan(w, g.ntiles, c, M, regs, st_force_sw, xs_bytes, &p))
        return cudaErrorInvalidConfiguration; /* wna16_stream_usable said no: not reached */
    StArgs a;
    weight_args(&a, w, M);
    for (int i = 1, t0 = w->ntiles; i < g.n; t0 += g.w[i]->ntiles, i++)
        a.more[i - 1] = StSeg{g.w[i]->wq, g.w[i]->sz, g.y[i], g.w[i]->N, g.w[i]->ntiles, t0};
    a.nseg = g.n;
    a.ng = w->ng;
    a.cps = p.cps;
    a.spg_shift = w->spg_shift;
    a.gspan = p.gspan;
    a.prefetch = st_prefetch_n;
    a.xs_off = (int)(p.smem - xs_bytes);
    a.gshift = FG >= 0 ? st_group_shift(w) : 0;
    const dim3 grid((unsigned)g.ntiles, (unsigned)((M + 8 * MT - 1) / (8 * MT)));
    return launch_ex(wna16_stream_kernel<T, BITS, MT, PERM, EXACT, FG, FOLD, XS, DRY, GRP>, grid,
                     dim3((unsigned)(p.sw * 32)), p.smem, c->stream, NULL, 0, !st_no_pdl, (T *)g.y[0], (const T *)x, a);
}

/* FAST (see the kernel): log2 of the chunks per flush unit (1, 2 or 4
 * chunks) when groups are static and whole multiples of it (or one group),
 * K a multiple of the chunk and the chunks a multiple of the batch (GPTQ
 * g64 / g128 / g-1 checkpoints of 7B shapes), else -1. */
static int st_fast_group(const wna16_weight *w)
{
    const int KC = w->bits == 4 ? Cfg<4>::KC : Cfg<8>::KC, lsteps = w->bits == 4 ? 2 : 1;
    const int fg = w->spg_shift - lsteps;
    if (w->use_perm || w->K % KC || w->nkc % ST_U)
        return -1;
    if (w->ng == 1) /* one group (g-1, per channel): any unit will do */
        return 2;
    return w->spg_shift >= 0 && fg >= 0 ? (fg < 2 ? fg : 2) : -1; /* longer groups: flushed every 4 chunks */
}

/* FAST: log2 of the chunks per scale group (30 for one group). */
static int st_group_shift(const wna16_weight *w) { return w->ng == 1 ? 30 : w->spg_shift - (w->bits == 4 ? 2 : 1); }

template <typename T, int BITS, int MT, bool EXACT, int FG, bool GRP>
static cudaError_t st_launch_fast(const StGroup &g, const cuda_ctx *c, const void *x, int M)
{
    StPlan p;
    if constexpr (MT == 1 && !EXACT) { /* fp16, one row tile, scales after the mma */
        if (st_dry && BITS == 4 && !GRP) /* measurement only */
            return st_launch<T, BITS, MT, false, EXACT, FG, false, false, true>(g, c, x, M);
        if (!st_nofold && M == 1 && !st_no_xs && ((uintptr_t)x & 15) == 0 &&
            st_plan(g.w[0], g.ntiles, c, M, 0, st_force_sw, st_xs_bytes(g.w[0]), &p) == 0)
            return st_launch<T, BITS, MT, false, EXACT, FG, true, true, false, GRP>(g, c, x, M);
        if (!st_nofold)
            return st_launch<T, BITS, MT, false, EXACT, FG, true, false, false, GRP>(g, c, x, M);
    }
    return st_launch<T, BITS, MT, false, EXACT, FG, false, false, false, GRP>(g, c, x, M);
}

template <typename T, int BITS, int MT, bool EXACT, bool GRP>
static cudaError_t st_launch_mode(const StGroup &g, const cuda_ctx *c, const void *x, int M)
{
    if (g.w[0]->use_perm) /* never grouped (st_group_ok) */
        return GRP ? cudaErrorInvalidValue : st_launch<T, BITS, MT, true, EXACT, -1>(g, c, x, M);
    switch (st_fast_group(g.w[0])) {
    case 0: return st_launch_fast<T, BITS, MT, EXACT, 0, GRP>(g, c, x, M);
    case 1: return st_launch_fast<T, BITS, MT, EXACT, 1, GRP>(g, c, x, M);
    case 2: return st_launch_fast<T, BITS, MT, EXACT, 2, GRP>(g, c, x, M);
    default: return st_launch<T, BITS, MT, false, EXACT, -1, false, false, false, GRP>(g, c, x, M);
    }
}

/* fp16 with one row tile scales the group sums (unless exact_dequant);
 * bf16 and two row tiles round W to dt first. */
template <typename T, int BITS>
static cudaError_t st_launch_mt(const StGroup &g, const cuda_ctx *c, const void *x, int M)
{
    const bool grp = g.n > 1; /* groups: M <= 8 (wna16_stream_run_group) */
    if (M <= 8) {
        if (std::is_same<T, __half>::value && !st_exact)
            return grp ? st_launch_mode<__half, BITS, 1, false, true>(g, c, x, M)
                       : st_launch_mode<__half, BITS, 1, false, false>(g, c, x, M);
        return grp ? st_launch_mode<T, BITS, 1, true, true>(g, c, x, M)
                   : st_launch_mode<T, BITS, 1, true, false>(g, c, x, M);
    }
    return grp ? cudaErrorInvalidValue : st_launch_mode<T, BITS, 2, true, false>(g, c, x, M);
}

/* The device and M the kernel takes (compute capability 9.0, one launch). */
static int st_device_ok(const cuda_ctx *c, int M) { return c->cc_major >= 9 && M >= 1 && (M + 15) / 16 <= 65535; }

int wna16_stream_usable(const wna16_weight *w, const cuda_ctx *c, int M)
{
    StPlan p;
    return st_device_ok(c, M) && st_plan(w, w->ntiles, c, M, 0, st_force_sw, 0, &p) == 0;
}

/* The weights of one launch: the same K, bits and groups (the kernel
 * shares the chunk count, scale layout and step -> group map), no
 * act-order (x is gathered through one weight's perm). */
static int st_group_ok(const wna16_weight *const *ws, int n)
{
    const wna16_weight *a = ws[0];
    for (int i = 1; i < n; i++) {
        const wna16_weight *b = ws[i];
        if (b->K != a->K || b->bits != a->bits || b->ng != a->ng || b->Kp != a->Kp || b->nkc != a->nkc ||
            b->spg_shift != a->spg_shift || a->use_perm || b->use_perm ||
            memcmp(b->sg_host, a->sg_host, (size_t)(a->Kp / 16) * sizeof(int)))
            return 0;
    }
    return 1;
}

static int st_run(const StGroup &g, cuda_ctx *c, llmq_dtype dt, const void *x, int M)
{
    const wna16_weight *w = g.w[0];
    cudaError_t e;
    if (dt == LLMQ_F16)
        e = w->bits == 4 ? st_launch_mt<__half, 4>(g, c, x, M) : st_launch_mt<__half, 8>(g, c, x, M);
    else
        e = w->bits == 4 ? st_launch_mt<__nv_bfloat16, 4>(g, c, x, M) : st_launch_mt<__nv_bfloat16, 8>(g, c, x, M);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return llmq_fail("wna16_stream_kernel: launch failed: %s", cudaGetErrorString(e));
    }
    return 0;
}

int wna16_stream_run(const wna16_weight *w, cuda_ctx *c, llmq_dtype dt, void *y, const void *x, int M)
{
    if (!wna16_stream_usable(w, c, M))
        return llmq_fail("wna16_linear: the stream kernel cannot take K = %d with %d groups at M = %d", w->K, w->ng,
                         M);
    StGroup g = {{w}, {y}, 1, w->ntiles};
    return st_run(g, c, dt, x, M);
}

int wna16_stream_run_group(const wna16_weight *const *ws, int n, cuda_ctx *c, llmq_dtype dt, void *const *ys,
                           const void *x, int M)
{
    if (n < 1 || n > WNA16_GROUP_MAX || M > 8 || !st_group_ok(ws, n))
        return 1;
    /* Worth it where a weight alone leaves the GPU part idle (q/k/v of a 7B
     * layer: 256 tiles each, 1.26x together on an H100); weights that fill
     * it alone (gate/up: 688 tiles each) measured no faster together
     * (0.98x; bench_wna16 groups). */
    int small = 0;
    for (int i = 0; i < n; i++)
        small |= ws[i]->ntiles < 2 * c->num_sms;
    if (!small)
        return 1;
    StGroup g = {};
    g.n = n;
    for (int i = 0; i < n; i++) {
        g.w[i] = ws[i];
        g.y[i] = ys[i];
        g.ntiles += ws[i]->ntiles;
    }
    StPlan p;
    if (!st_device_ok(c, M) || st_plan(ws[0], g.ntiles, c, M, 0, st_force_sw, 0, &p))
        return 1;
    return st_run(g, c, dt, x, M);
}
