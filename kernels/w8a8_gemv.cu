/* The W8A8 linear for decode batches (M <= LLMQ_W8A8_GEMV_MAX_M): int8
 * weights straight from the checkpoint layout into int8 tensor cores, the
 * per-token x per-channel rescale in the kernel's epilogue (w8a8.h).
 *
 * Why not cuBLASLt here. At a few rows the product is a pass over the
 * weight; cuBLASLt's int8 kernels are built for tiles of 64+ rows, and its
 * int32 result still needs the rescale kernel (cuBLASLt 13.0 takes no
 * outer-vector scales for int8), so a decode step paid two launches and an
 * int32 round trip per linear.
 *
 * Layout without a repack. The weight stays row-major [N, K] int8 (the
 * array cuBLASLt reads for prefill: one copy in memory). A warp's mma tile
 * is 16 channels; lane (g = lane / 4, t = lane % 4) loads the 16 bytes at
 * column 64 u + 16 t of rows g and g + 8 for every 64-column unit u, so a
 * warp instruction reads 8 rows x 64 contiguous bytes (whole sectors). The
 * dot product does not care in which order k is summed as long as A and B
 * agree: for m16n8k32 k-step s of the unit the lane's A registers are the
 * words 2 s and 2 s + 1 of its two rows and its B registers the words 2 s
 * and 2 s + 1 of the 16 bytes of x at the same columns (row g of the row
 * tile), which is the PTX fragment with the unit's 64 columns permuted the
 * same way on both sides. No conversion instruction between load and mma.
 *
 * Work split, as kernels/wna16_stream.cu: a block owns one 16-channel tile
 * and all of K, its warps take consecutive runs of units with two batches
 * of GV_U units in flight per lane, and add their int32 fragments through
 * shared memory (exact: the sum is the same in any order, so the result is
 * deterministic and equals the reference's int32 product). The epilogue
 * writes rnd((acc * s_tok[m]) * s_ch[n]), quant/w8a8_ref.h's formula. The
 * weight loads go out before griddepcontrol.wait (programmatic dependent
 * launch), so they overlap the kernel before, which writes x. */
#include "kernels/cuda_common.cuh"

#include <stdlib.h>

extern "C" {
#include "kernels/w8a8.h"
}

#define GV_U 2          /* 64-column units per batch; two batches in flight per lane */
#define GV_MAX_WARPS 16 /* per block */

/* One linear of a launch: the grid's blocks from tile0 on are its. */
struct GvSeg {
    const int8_t *w;
    const float *s_ch;
    void *y;
    int N, tile0;
};

struct GvArgs {
    GvSeg seg[LLMQ_W8A8_GEMV_GROUP];
    int nseg;
    const int8_t *x;
    const float *s_tok;
    int M, K;
    int nu;  /* 64-column units per row: ceil(K / 64) */
    int cpw; /* units per warp */
};

/* Field f of the segment block `bx` belongs to. Selected field by field:
 * indexing the parameter struct with a runtime index would copy it to
 * local memory. */
#define GV_SEG(a, i, f) ((i) == 0 ? (a).seg[0].f : (i) == 1 ? (a).seg[1].f : (a).seg[2].f)

/* The 16 bytes at column c of a row of K bytes (K % 4 == 0, the row
 * 4-byte aligned), zeros past K. VEC: K % 128 == 0, so every unit is whole
 * and 16-byte aligned. */
template <bool VEC, bool STREAM> __device__ __forceinline__ int4 gv_load(const int8_t *row, int c, int K)
{
    if constexpr (VEC) {
        return STREAM ? ld_stream(row + c) : __ldg(reinterpret_cast<const int4 *>(row + c));
    } else {
        int v[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            v[j] = c + 4 * j < K ? __ldg(reinterpret_cast<const int *>(row + c + 4 * j)) : 0;
        return make_int4(v[0], v[1], v[2], v[3]);
    }
}

/* c += A (16 x 32 s8) . B (32 x 8 s8), exact int32. */
__device__ __forceinline__ void mma_s8(int (&c)[4], int a0, int a1, int a2, int a3, int b0, int b1)
{
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <typename T, int MT, bool VEC>
__global__ void __maxnreg__(MT == 1 ? 72 : 128) w8a8_gemv_kernel(const GvArgs a)
{
    static_assert(LLMQ_W8A8_GEMV_GROUP == 3, "GV_SEG selects among 3 segments");
    extern __shared__ int4 red[]; /* [nw][MT][32 lanes]: the warps' fragments */
    const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int bx = blockIdx.x, si = a.nseg > 2 && bx >= a.seg[2].tile0 ? 2 : a.nseg > 1 && bx >= a.seg[1].tile0;
    const int8_t *w = GV_SEG(a, si, w);
    const int N = GV_SEG(a, si, N), n0 = (bx - GV_SEG(a, si, tile0)) * 16, m0 = blockIdx.y * 8 * MT;
    /* Channels past N read channel N - 1: their outputs are not written. */
    const int8_t *wr0 = w + (size_t)(n0 + g < N ? n0 + g : N - 1) * a.K;
    const int8_t *wr1 = w + (size_t)(n0 + g + 8 < N ? n0 + g + 8 : N - 1) * a.K;
    const int u0 = warp * a.cpw, u1 = u0 + a.cpw < a.nu ? u0 + a.cpw : a.nu; /* u1 <= u0: no work */

    int4 wa[GV_U][2], wb[GV_U][2];
    auto load = [&](int4 (&wv)[GV_U][2], int ub) {
#pragma unroll
        for (int u = 0; u < GV_U; u++) {
            const bool in = VEC || ub + u < u1; /* VEC: runs are whole batches */
            wv[u][0] = in ? gv_load<VEC, true>(wr0, 64 * (ub + u) + 16 * t, a.K) : make_int4(0, 0, 0, 0);
            wv[u][1] = in ? gv_load<VEC, true>(wr1, 64 * (ub + u) + 16 * t, a.K) : make_int4(0, 0, 0, 0);
        }
    };
    if (u0 < u1)
        load(wa, u0);
    if (u0 + GV_U < u1)
        load(wb, u0 + GV_U);
    /* x and s_tok belong to the kernel before until this returns. */
    pdl_wait();
    pdl_trigger();

    /* The x row of this lane's B column in each row tile; columns past M
     * read row M - 1 (the mma keeps columns apart; not written). */
    const int8_t *xr[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        const int m = m0 + mt * 8 + g;
        xr[mt] = a.x + (size_t)(m < a.M ? m : a.M - 1) * a.K;
    }
    /* Even and odd k-steps accumulate apart: two mma chains per row tile. */
    int acc[2][MT][4];
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[h][mt][c] = 0;
    auto compute = [&](const int4 (&wv)[GV_U][2], int ub) {
#pragma unroll
        for (int u = 0; u < GV_U; u++) {
            if (!VEC && ub + u >= u1)
                break;
            const int c = 64 * (ub + u) + 16 * t;
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                const int4 xv = gv_load<VEC, false>(xr[mt], c, a.K);
                mma_s8(acc[0][mt], wv[u][0].x, wv[u][1].x, wv[u][0].y, wv[u][1].y, xv.x, xv.y);
                mma_s8(acc[1][mt], wv[u][0].z, wv[u][1].z, wv[u][0].w, wv[u][1].w, xv.z, xv.w);
            }
        }
    };
    for (int ub = u0; ub < u1; ub += 2 * GV_U) {
        compute(wa, ub);
        if (ub + 2 * GV_U < u1)
            load(wa, ub + 2 * GV_U);
        if (ub + GV_U >= u1)
            break;
        compute(wb, ub + GV_U);
        if (ub + 3 * GV_U < u1)
            load(wb, ub + 3 * GV_U);
    }

    /* c0, c1: channel g, rows 2t, 2t + 1; c2, c3: channel g + 8. */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        red[(warp * MT + mt) * 32 + lane] = make_int4(acc[0][mt][0] + acc[1][mt][0], acc[0][mt][1] + acc[1][mt][1],
                                                      acc[0][mt][2] + acc[1][mt][2], acc[0][mt][3] + acc[1][mt][3]);
    __syncthreads();
    const int *rf = reinterpret_cast<const int *>(red);
    const float *s_ch = GV_SEG(a, si, s_ch);
    T *y = static_cast<T *>(GV_SEG(a, si, y));
    for (int e = threadIdx.x; e < MT * 128; e += blockDim.x) {
        const int c = e & 3, ln = (e >> 2) & 31, mt = e >> 7;
        const int n = n0 + (ln >> 2) + (c >> 1) * 8, m = m0 + mt * 8 + (ln & 3) * 2 + (c & 1);
        if (m >= a.M || n >= N)
            continue;
        int v = 0;
        for (int wp = 0; wp < nw; wp++)
            v += rf[wp * MT * 128 + e];
        y[(size_t)m * N + n] = from_f32<T>(__fmul_rn(__fmul_rn((float)v, __ldg(a.s_tok + m)), __ldg(s_ch + n)));
    }
}

/* ---- host side ---- */

static int gv_force_warps, gv_no_pdl;

/* Dynamic shared memory of a block: the warps' int32 fragments. */
static size_t gv_smem(int nw, int mt) { return (size_t)nw * mt * 32 * sizeof(int4); }

extern "C" void llmq_w8a8_gemv_tune(int warps, int no_pdl)
{
    gv_force_warps = warps > 0 ? warps : 0;
    gv_no_pdl = no_pdl;
}

/* The warps per block: the split whose grid is resident in the fewest
 * waves, a wave costing its warps' units plus ~3 of start-up (first loads,
 * the reduction); ties go to fewer warps; runs of at least two batches
 * (a warp with one batch has nothing to load while it computes). VEC runs
 * are whole batches. A forced split (llmq_w8a8_gemv_tune) takes the
 * largest split up to it. */
static int gv_plan(int device, int regs, int mt, long blocks, int nu, int vec, int *sw_out, int *cpw_out)
{
    static int sms[64]; /* per device, asked once: a decode step plans every call */
    int &nsm = sms[device >= 0 && device < 64 ? device : 0];
    if (!nsm && (cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || nsm <= 0)) {
        cudaGetLastError();
        nsm = 1;
    }
    long best = -1;
    for (int sw = 1; sw <= GV_MAX_WARPS && sw <= nu; sw++) {
        int cpw = (nu + sw - 1) / sw;
        if (vec)
            cpw = (cpw + GV_U - 1) / GV_U * GV_U;
        if ((nu + cpw - 1) / cpw != sw)
            continue; /* the same runs as a smaller block */
        if (gv_force_warps > 0) {
            if (sw <= gv_force_warps)
                *sw_out = sw, *cpw_out = cpw, best = 0;
            continue;
        }
        if (cpw < 2 * GV_U && sw > 1)
            continue;
        const int bps = cuda_resident_blocks(device, sw, regs, gv_smem(sw, mt));
        const long waves = (blocks + (long)bps * nsm - 1) / ((long)bps * nsm);
        const long cost = waves * (cpw + 3);
        if (best < 0 || cost < best) {
            best = cost;
            *sw_out = sw;
            *cpw_out = cpw;
        }
    }
    return best < 0 ? -1 : 0;
}

template <typename T, int MT, bool VEC> static cudaError_t gv_launch(cudaStream_t st, GvArgs a, unsigned tiles)
{
    static int regs[64]; /* per instantiation and device */
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess)
        return e;
    const int d = dev >= 0 && dev < 64 ? dev : 0;
    if (!regs[d]) {
        cudaFuncAttributes fa;
        if ((e = cudaFuncGetAttributes(&fa, w8a8_gemv_kernel<T, MT, VEC>)) != cudaSuccess)
            return e;
        regs[d] = fa.numRegs > 0 ? fa.numRegs : 1;
    }
    const unsigned rows = (unsigned)((a.M + 8 * MT - 1) / (8 * MT));
    int sw = 1;
    if (gv_plan(dev, regs[d], MT, (long)rows * tiles, a.nu, VEC, &sw, &a.cpw))
        return cudaErrorInvalidConfiguration;
    const size_t smem = gv_smem(sw, MT);
    if (gv_no_pdl) {
        w8a8_gemv_kernel<T, MT, VEC><<<dim3(tiles, rows), dim3(32 * sw), smem, st>>>(a);
        return cudaGetLastError();
    }
    return launch_pdl(w8a8_gemv_kernel<T, MT, VEC>, dim3(tiles, rows), dim3(32 * sw), smem, st, NULL, 0, a);
}

template <typename T> static cudaError_t gv_dispatch(cudaStream_t st, const GvArgs &a, unsigned tiles, bool vec)
{
    if (a.M <= 8)
        return vec ? gv_launch<T, 1, true>(st, a, tiles) : gv_launch<T, 1, false>(st, a, tiles);
    return vec ? gv_launch<T, 2, true>(st, a, tiles) : gv_launch<T, 2, false>(st, a, tiles);
}

extern "C" int llmq_w8a8_gemv_group(void *stream, llmq_dtype dt, int n, void *const *y, const int8_t *x,
                                    const float *s_tok, const int8_t *const *w, const float *const *s_ch, const int *N,
                                    int M, int K)
{
    if (n < 1 || n > LLMQ_W8A8_GEMV_GROUP)
        return llmq_fail("w8a8_gemv: %d linears in one launch (1 to %d)", n, LLMQ_W8A8_GEMV_GROUP);
    if (M < 0 || K <= 0 || K % 4 || ((uintptr_t)x & 3))
        return llmq_fail("w8a8_gemv: K = %d must be a positive multiple of 4 with 4-byte-aligned x (M = %d)", K, M);
    if ((M + 15) / 16 > 65535)
        return llmq_fail("w8a8_gemv: M = %d rows is beyond one launch", M);
    GvArgs a = {};
    a.nseg = n;
    a.x = x;
    a.s_tok = s_tok;
    a.M = M;
    a.K = K;
    a.nu = (K + 63) / 64;
    bool vec = K % 128 == 0 && aligned16(x);
    long tiles = 0;
    for (int i = 0; i < n; i++) {
        if (N[i] <= 0 || ((uintptr_t)w[i] & 3))
            return llmq_fail("w8a8_gemv: linear %d of the launch: N = %d, weight %p (4-byte aligned)", i, N[i],
                             (const void *)w[i]);
        a.seg[i] = GvSeg{w[i], s_ch[i], y[i], N[i], (int)tiles};
        tiles += (N[i] + 15) / 16;
        vec = vec && aligned16(w[i]);
    }
    if (tiles > 0x7FFFFFFF)
        return llmq_fail("w8a8_gemv: %ld channel tiles in one launch", tiles);
    if (M == 0)
        return 0;
    cudaStream_t st = (cudaStream_t)stream;
    cudaError_t e;
    switch (dt) {
    case LLMQ_F16: e = gv_dispatch<__half>(st, a, (unsigned)tiles, vec); break;
    case LLMQ_BF16: e = gv_dispatch<__nv_bfloat16>(st, a, (unsigned)tiles, vec); break;
    case LLMQ_F32: e = gv_dispatch<float>(st, a, (unsigned)tiles, vec); break;
    default: return llmq_fail("w8a8_gemv: unsupported output type %s", llmq_dtype_name(dt));
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        return llmq_fail("w8a8_gemv_kernel: launch failed: %s", cudaGetErrorString(e));
    }
    return 0;
}

extern "C" int llmq_w8a8_gemv(void *stream, llmq_dtype dt, void *y, const int8_t *x, const float *s_tok,
                              const int8_t *w, const float *s_ch, int M, int N, int K)
{
    return llmq_w8a8_gemv_group(stream, dt, 1, &y, x, s_tok, &w, &s_ch, &N, M, K);
}
