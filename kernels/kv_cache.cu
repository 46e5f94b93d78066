/* The KV cache of decoding (src/backend.h's kv_store and attention_kv):
 * caches [batch, cap, n_kv*head_dim] in the storage type, or int8 codes
 * with one fp32 scale per (position, kv head).
 *
 * kv_store: a warp per (row, kv head); the int8 grid is exactly the CPU's
 * (IEEE divisions, rint half to even), so both backends hold the same codes.
 *
 * attention_kv: decoding reads the whole cache once per token, so the kernel
 * is built around the bytes, not the flops. A block of 4 warps owns one
 * (sequence, kv head) and a tile of up to 8 query rows -- (query, head of
 * the GQA group) pairs -- so that each K/V row is read once for the whole
 * group. Inside a warp, a "lane group" of LPK lanes holds one key: each lane
 * loads one chunk of E consecutive head dimensions (16 bytes: 8 fp16, 4 fp32
 * or 16 int8 values) of K and of V, with U keys per lane group in flight.
 * Scores are reduced across the lane group by shuffles; every lane group
 * keeps its own online softmax (running max m, sum l, unnormalized output
 * acc) in registers. At the end the lane groups of a warp merge by shuffles,
 * the 4 warps through shared memory, and the blocks of a cluster -- which
 * split the keys when there are too few (sequence, kv head) pairs to fill
 * the GPU (flash-decoding) -- through distributed shared memory, so there is
 * no second kernel and no scratch buffer in device memory.
 *
 * Exponentials are base 2 with log2(e) folded into the score scale. int8
 * entries are code * scale: the K scale multiplies the dot product of q
 * with the codes, the V scale the softmax weight, which is the same number
 * up to fp32 rounding and saves a multiply per element. */
#include <cooperative_groups.h>
#include <type_traits>

#include "kernels/cuda_common.cuh"

namespace cg = cooperative_groups;

namespace {

/* ================= kv_store ================= */

constexpr int KV_MAX_HD = 256;
constexpr int ST_WARPS = 4; /* kv heads per store block, a warp each */

/* x row `row` (= sequence * n + i) into slot (sequence, pos + i). */
template <typename T, bool KV8>
__global__ void __launch_bounds__(ST_WARPS * 32)
    kv_store_kernel(void *__restrict__ cache, float *__restrict__ scales, const T *__restrict__ x, int n, int pos,
                    int cap, int n_kv, int hd, const int32_t *__restrict__ pos_dev)
{
    if (pos_dev)
        pos = *pos_dev;
    const int row = blockIdx.x, lane = threadIdx.x & 31;
    const int h = blockIdx.y * ST_WARPS + (threadIdx.x >> 5);
    if (h >= n_kv) /* a whole warp; no block barriers below */
        return;
    const size_t kvdim = (size_t)n_kv * hd;
    const size_t slot = (size_t)(row / n) * cap + pos + row % n;
    const T *xr = x + (size_t)row * kvdim + (size_t)h * hd;
    if (!KV8) {
        T *dst = (T *)cache + slot * kvdim + (size_t)h * hd;
        for (int d = lane; d < hd; d += 32)
            dst[d] = xr[d];
        return;
    }
    constexpr int PER = KV_MAX_HD / 32;
    float v[PER], mx = 0.0f;
#pragma unroll
    for (int j = 0; j < PER; j++) {
        const int d = lane + 32 * j;
        v[j] = d < hd ? to_f32(xr[d]) : 0.0f;
        mx = fmaxf(mx, fabsf(v[j]));
    }
    mx = warp_max(mx);
    /* __fdiv_rn: the CPU's IEEE quotients, so that a value near a .5 step
     * rounds to the same code there and here. */
    const float s = __fdiv_rn(fmaxf(mx, 1e-5f), 127.0f);
    int8_t *dst = (int8_t *)cache + slot * kvdim + (size_t)h * hd;
#pragma unroll
    for (int j = 0; j < PER; j++) {
        const int d = lane + 32 * j;
        if (d < hd)
            dst[d] = (int8_t)(int)fminf(fmaxf(rintf(__fdiv_rn(v[j], s)), -127.0f), 127.0f);
    }
    if (lane == 0)
        scales[slot * n_kv + h] = s;
}

/* ================= attention_kv ================= */

constexpr int AK_WARPS = 4;
constexpr int AK_THREADS = AK_WARPS * 32;
constexpr int AK_MAX_CLUSTER = 8;  /* the portable cluster size */
constexpr int AK_MAX_ROWS = 8;     /* query rows per block: a GQA group of 8 at decode */
constexpr int AK_MIN_KEYS = 256;   /* fewest keys worth a block of their own */

struct AttnArgs {
    void *out;
    const void *q, *kc, *vc;
    const float *ks, *vs; /* int8 scales, [batch, cap, n_kv] */
    int n, pos, cap, n_heads, n_kv, hd;
    const int32_t *pos_dev; /* when set, the position is read here (graph replays) */
    int group;    /* n_heads / n_kv */
    int rows;     /* n * group query rows per (sequence, kv head) */
    int tiles;    /* ceil(rows / RB) */
    int nchunks;  /* chunks of E dimensions per head row */
    int lpk_log2; /* log2 lanes per key: nchunks rounded up to a power of 2 */
    float scale_log2; /* log2(e) / sqrt(head_dim) */
};

template <typename T, bool KV8> struct CacheElem {
    typedef T type;
};
template <typename T> struct CacheElem<T, true> {
    typedef int8_t type;
};

__device__ __forceinline__ float elem_f32(int8_t x) { return (float)x; }
template <typename S> __device__ __forceinline__ float elem_f32(S x) { return to_f32(x); }

/* BYTES of cache as 32-bit words, loaded with one or two 16-byte (or one
 * 8-byte) read-only loads. */
template <int BYTES> struct Raw {
    unsigned w[BYTES / 4];
};

template <int BYTES> __device__ __forceinline__ void load_raw(Raw<BYTES> &r, const void *p)
{
    if constexpr (BYTES % 16 == 0) {
#pragma unroll
        for (int i = 0; i < BYTES / 16; i++) {
            const uint4 v = __ldg(reinterpret_cast<const uint4 *>(p) + i);
            r.w[4 * i] = v.x, r.w[4 * i + 1] = v.y, r.w[4 * i + 2] = v.z, r.w[4 * i + 3] = v.w;
        }
    } else {
        static_assert(BYTES == 8, "chunks of 8, 16 or 32 bytes");
        const uint2 v = __ldg(reinterpret_cast<const uint2 *>(p));
        r.w[0] = v.x, r.w[1] = v.y;
    }
}

/* Words of S values -> fp32. int8 without I2F (a quarter-rate conversion
 * that would bound the int8 cache): the byte, offset to unsigned, goes into
 * the mantissa of 2^23, and subtracting 2^23 + 128 leaves the code exactly. */
template <typename S, int E> __device__ __forceinline__ void unpack(const unsigned *w, float *f)
{
    if constexpr (sizeof(S) == 4) {
#pragma unroll
        for (int e = 0; e < E; e++)
            f[e] = __uint_as_float(w[e]);
    } else if constexpr (sizeof(S) == 1) {
#pragma unroll
        for (int i = 0; i < E / 4; i++) {
            const unsigned b = w[i] ^ 0x80808080u;
#pragma unroll
            for (int j = 0; j < 4; j++)
                f[4 * i + j] = __uint_as_float(__byte_perm(b, 0x4B000000u, 0x7540u | j)) - 8388736.0f;
        }
    } else if constexpr (std::is_same<S, __half>::value) {
#pragma unroll
        for (int i = 0; i < E / 2; i++) {
            f[2 * i] = __half2float(__ushort_as_half((unsigned short)(w[i] & 0xffffu)));
            f[2 * i + 1] = __half2float(__ushort_as_half((unsigned short)(w[i] >> 16)));
        }
    } else {
#pragma unroll
        for (int i = 0; i < E / 2; i++) {
            f[2 * i] = __uint_as_float(w[i] << 16);
            f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
}

/* One lane's chunk of E dimensions of one cache row. VEC: the chunk is whole
 * and aligned (head_dim * sizeof(S) a multiple of the chunk's bytes); else
 * element loads stop at head_dim (odd sizes, tiny heads). */
template <typename S, int E, bool VEC> struct Frag;

template <typename S, int E> struct Frag<S, E, true> {
    Raw<E * (int)sizeof(S)> raw;
    __device__ __forceinline__ void load(const S *p, int) { load_raw(raw, p); }
    __device__ __forceinline__ void get(float *f) const { unpack<S, E>(raw.w, f); }
};

template <typename S, int E> struct Frag<S, E, false> {
    float v[E];
    __device__ __forceinline__ void load(const S *p, int left)
    {
#pragma unroll
        for (int e = 0; e < E; e++)
            v[e] = e < left ? elem_f32(p[e]) : 0.0f;
    }
    __device__ __forceinline__ void get(float *f) const
    {
#pragma unroll
        for (int e = 0; e < E; e++)
            f[e] = v[e];
    }
};

/* exp2 of x - m for a running max m that may still be -inf (nothing seen):
 * then every weight is 0 instead of NaN. */
__device__ __forceinline__ float safe_max(float m) { return m == -INFINITY ? 0.0f : m; }

/* Blocks per SM that ptxas must fit (the register budget). The decode
 * variants (one row, 16-byte chunks) get the occupancy that keeps the most
 * loads in flight without spilling: 6 blocks (<= 80 registers) for 16-bit
 * caches, 5 (<= 96) for int8 with its 16 codes per lane. Everything else
 * takes 1: ptxas's own occupancy target spilled in some variants. */
constexpr int ak_min_blocks(bool kv8, int e, bool vec, int rb, int elem_bytes)
{
    return rb != 1 || !vec ? 1 : kv8 ? (e == 16 ? 5 : 1) : elem_bytes == 2 ? 6 : 1;
}

/* Grid (C, n_kv * tiles, batch) in clusters of (C, 1, 1): the C blocks of a
 * cluster split the keys of one (sequence, kv head, row tile). RB query rows
 * per block, E dimensions per lane chunk. */
template <typename T, bool KV8, int E, bool VEC, int RB>
__global__ void __launch_bounds__(AK_THREADS, ak_min_blocks(KV8, E, VEC, RB, (int)sizeof(T)))
    attn_kv_kernel(const AttnArgs a)
{
    typedef typename CacheElem<T, KV8>::type S;
    /* Keys in flight per lane group: 4 (32 bytes of K and V per lane each at
     * 16-byte chunks), 2 with many rows, whose registers hold RB*E q values
     * and RB*E accumulators. */
    constexpr int U = RB >= 4 ? 2 : 4;
    extern __shared__ float ak_smem[];
    cg::cluster_group cl = cg::this_cluster();
    const int C = (int)cl.num_blocks(), rank = (int)cl.block_rank();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int pos = a.pos_dev ? *a.pos_dev : a.pos;
    const int hd = a.hd, lpk = 1 << a.lpk_log2, G = 32 >> a.lpk_log2; /* G keys per warp step */
    const int g = lane >> a.lpk_log2, ch = lane & (lpk - 1);
    const bool chunk_ok = ch < a.nchunks;
    const int kvh = blockIdx.y / a.tiles, tile = blockIdx.y % a.tiles, seq = blockIdx.z;
    const size_t qdim = (size_t)a.n_heads * hd, kvdim = (size_t)a.n_kv * hd;

    /* The block's rows: row r is query i = gr / group, head kvh*group + gr % group. */
    float qf[RB][E];
    int lim[RB]; /* last key of the row; -1 for rows past the end */
#pragma unroll
    for (int r = 0; r < RB; r++) {
        const int gr = tile * RB + r;
        const bool valid = gr < a.rows;
        const int i = valid ? gr / a.group : 0, h = kvh * a.group + (valid ? gr % a.group : 0);
        lim[r] = valid ? pos + i : -1;
        const T *qp = (const T *)a.q + ((size_t)seq * a.n + i) * qdim + (size_t)h * hd + ch * E;
#pragma unroll
        for (int e = 0; e < E; e++)
            qf[r][e] = valid && chunk_ok && ch * E + e < hd ? to_f32(qp[e]) : 0.0f;
    }

    /* Keys 0 .. pos + (last query of the tile), split over the cluster. */
    const int last = min(a.rows, (tile + 1) * RB) - 1;
    const int len = pos + last / a.group + 1;
    const int per = (len + C - 1) / C;
    const int kb = rank * per, ke = min(len, kb + per);

    /* Lanes past the last chunk (head_dim not a power-of-2 number of
     * chunks) load the last chunk again: unconditional loads keep all of an
     * iteration's loads in flight together (a branch around them splits
     * them into two round trips), and with q = 0 the copy adds nothing to
     * the scores; their accumulators are never stored. */
    const int chl = min(ch, a.nchunks - 1);
    const size_t slot0 = (size_t)seq * a.cap; /* position 0 of the sequence */
    const S *kbase = (const S *)a.kc + slot0 * kvdim + (size_t)kvh * hd + chl * E;
    const S *vbase = (const S *)a.vc + slot0 * kvdim + (size_t)kvh * hd + chl * E;
    const float *ksb = KV8 ? a.ks + slot0 * a.n_kv + kvh : nullptr;
    const float *vsb = KV8 ? a.vs + slot0 * a.n_kv + kvh : nullptr;
    const int left = hd - chl * E; /* dimensions from this chunk on (scalar path) */

    float m[RB], l[RB], acc[RB][E];
#pragma unroll
    for (int r = 0; r < RB; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int e = 0; e < E; e++)
            acc[r][e] = 0.0f;
    }

    /* Warp w takes keys [k0, k0 + G*U) of each block step of AK_WARPS*G*U;
     * k0 is warp-uniform, so the shuffles below see the whole warp. */
    for (int k0 = kb + warp * G * U; k0 < ke; k0 += AK_WARPS * G * U) {
        Frag<S, E, VEC> kf[U], vf[U];
        float ksc[U], vsc[U];
        int t[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            t[u] = k0 + u * G + g;
            /* Past the block's last key: load that key again (masked
             * below) rather than a position that may never have been written. */
            const size_t tl = (size_t)min(t[u], ke - 1);
            kf[u].load(kbase + tl * kvdim, left);
            vf[u].load(vbase + tl * kvdim, left);
            if (KV8) {
                ksc[u] = __ldg(ksb + tl * a.n_kv) * a.scale_log2;
                vsc[u] = __ldg(vsb + tl * a.n_kv);
            } else {
                ksc[u] = a.scale_log2;
                vsc[u] = 1.0f;
            }
        }

        /* Scores (already times log2(e)/sqrt(hd)), reduced over the lane group. */
        float s[RB][U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            float kv[E];
            kf[u].get(kv);
#pragma unroll
            for (int r = 0; r < RB; r++) {
                float d = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++)
                    d = fmaf(qf[r][e], kv[e], d);
                s[r][u] = d;
            }
        }
        for (int o = lpk >> 1; o > 0; o >>= 1)
#pragma unroll
            for (int r = 0; r < RB; r++)
#pragma unroll
                for (int u = 0; u < U; u++)
                    s[r][u] += __shfl_xor_sync(0xffffffffu, s[r][u], o);

        /* Online softmax: one rescale per U keys. */
        float p[RB][U];
#pragma unroll
        for (int r = 0; r < RB; r++) {
            float mx = m[r];
#pragma unroll
            for (int u = 0; u < U; u++) {
                s[r][u] = t[u] < ke && t[u] <= lim[r] ? s[r][u] * ksc[u] : -INFINITY;
                mx = fmaxf(mx, s[r][u]);
            }
            const float mu = safe_max(mx), alpha = exp2f(m[r] - mu);
            float sum = 0.0f;
#pragma unroll
            for (int u = 0; u < U; u++) {
                p[r][u] = exp2f(s[r][u] - mu);
                sum += p[r][u];
            }
            l[r] = l[r] * alpha + sum;
            m[r] = mx;
#pragma unroll
            for (int e = 0; e < E; e++)
                acc[r][e] *= alpha;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            float vv[E];
            vf[u].get(vv);
#pragma unroll
            for (int r = 0; r < RB; r++) {
                const float pv = p[r][u] * vsc[u];
#pragma unroll
                for (int e = 0; e < E; e++)
                    acc[r][e] = fmaf(pv, vv[e], acc[r][e]);
            }
        }
    }

    /* Merge the lane groups of the warp (same chunk, other keys). */
    for (int o = lpk; o < 32; o <<= 1) {
#pragma unroll
        for (int r = 0; r < RB; r++) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[r], o), lo = __shfl_xor_sync(0xffffffffu, l[r], o);
            const float mx = fmaxf(m[r], mo), mu = safe_max(mx);
            const float wa = exp2f(m[r] - mu), wb = exp2f(mo - mu);
            l[r] = l[r] * wa + lo * wb;
            m[r] = mx;
#pragma unroll
            for (int e = 0; e < E; e++)
                acc[r][e] = acc[r][e] * wa + __shfl_xor_sync(0xffffffffu, acc[r][e], o) * wb;
        }
    }

    /* Shared memory: the warps' partials, then the block's (which the other
     * blocks of the cluster read). */
    float *w_acc = ak_smem;                       /* [AK_WARPS][RB][hd] */
    float *w_m = w_acc + AK_WARPS * RB * hd;      /* [AK_WARPS][RB] */
    float *w_l = w_m + AK_WARPS * RB;
    float *b_acc = w_l + AK_WARPS * RB;           /* [RB][hd] */
    float *b_m = b_acc + RB * hd;                 /* [RB] */
    float *b_l = b_m + RB;
    if (g == 0 && chunk_ok) {
#pragma unroll
        for (int r = 0; r < RB; r++) {
#pragma unroll
            for (int e = 0; e < E; e++)
                if (ch * E + e < hd)
                    w_acc[(warp * RB + r) * hd + ch * E + e] = acc[r][e];
            if (lane == 0) {
                w_m[warp * RB + r] = m[r];
                w_l[warp * RB + r] = l[r];
            }
        }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < RB * hd; idx += AK_THREADS) {
        const int r = idx / hd;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < AK_WARPS; w++)
            mx = fmaxf(mx, w_m[w * RB + r]);
        const float mu = safe_max(mx);
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < AK_WARPS; w++)
            s += exp2f(w_m[w * RB + r] - mu) * w_acc[w * RB * hd + idx];
        b_acc[idx] = s;
    }
    if (threadIdx.x < RB) {
        const int r = threadIdx.x;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < AK_WARPS; w++)
            mx = fmaxf(mx, w_m[w * RB + r]);
        const float mu = safe_max(mx);
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < AK_WARPS; w++)
            s += exp2f(w_m[w * RB + r] - mu) * w_l[w * RB + r];
        b_m[r] = mx;
        b_l[r] = s;
    }

    /* Every block's partial is complete and visible to the cluster (the
     * barrier orders shared-memory writes before the remote reads). */
    cl.sync();
    T *out = (T *)a.out;
    for (int idx = rank * AK_THREADS + threadIdx.x; idx < RB * hd; idx += C * AK_THREADS) {
        const int r = idx / hd, d = idx - r * hd, gr = tile * RB + r;
        if (gr >= a.rows)
            continue;
        /* Unrolled over the largest cluster so that the remote loads issue
         * together; ranks past C read rank C-1 (never an address outside
         * the cluster) and weigh nothing. */
        float mj[AK_MAX_CLUSTER], lj[AK_MAX_CLUSTER], oj[AK_MAX_CLUSTER], mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < AK_MAX_CLUSTER; j++) {
            const unsigned src = (unsigned)min(j, C - 1);
            mj[j] = j < C ? *cl.map_shared_rank(b_m + r, src) : -INFINITY;
            lj[j] = *cl.map_shared_rank(b_l + r, src);
            oj[j] = *cl.map_shared_rank(b_acc + idx, src);
            mx = fmaxf(mx, mj[j]);
        }
        /* Finite for a valid row (key 0 is in its range, in rank 0's keys). */
        mx = safe_max(mx);
        float lsum = 0.0f, osum = 0.0f;
#pragma unroll
        for (int j = 0; j < AK_MAX_CLUSTER; j++) {
            const float w = exp2f(mj[j] - mx); /* 0 past C */
            lsum += w * lj[j];
            osum += w * oj[j];
        }
        const int i = gr / a.group, h = kvh * a.group + gr % a.group;
        out[((size_t)seq * a.n + i) * qdim + (size_t)h * hd + d] = from_f32<T>(osum / lsum);
    }
    /* No block leaves while another may still read its shared memory. */
    cl.sync();
}

template <typename T, bool KV8, int E, bool VEC, int RB>
int launch_attn(cuda_ctx *c, AttnArgs a, int C, int batch)
{
    const size_t smem = ((size_t)(AK_WARPS + 1) * RB * a.hd + 2 * (AK_WARPS + 1) * RB) * sizeof(float);
    /* At most 5 * 8 * 258 floats = 41 KB for head_dim 256: under the 48 KB
     * that needs no opt-in. */
    if (smem > 48 * 1024)
        return llmq_fail("attention_kv: %zu bytes of shared memory", smem);
    a.nchunks = (a.hd + E - 1) / E;
    a.lpk_log2 = 0;
    while ((1 << a.lpk_log2) < a.nchunks)
        a.lpk_log2++;
    a.tiles = (a.rows + RB - 1) / RB;
    if ((size_t)a.n_kv * a.tiles > 65535)
        return llmq_fail("attention_kv: %d kv heads x %d row tiles exceed the grid", a.n_kv, a.tiles);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)C, (unsigned)(a.n_kv * a.tiles), (unsigned)batch);
    cfg.blockDim = dim3(AK_THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = c->stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = (unsigned)C;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cudaError_t err = cudaLaunchKernelEx(&cfg, attn_kv_kernel<T, KV8, E, VEC, RB>, a);
    if (err != cudaSuccess && C > 1) {
        /* A device or partition that refuses the cluster (a launch error,
         * not sticky): the same work unsplit, a block per tile. */
        (void)cudaGetLastError();
        cfg.gridDim.x = 1;
        cfg.numAttrs = 0;
        err = cudaLaunchKernelEx(&cfg, attn_kv_kernel<T, KV8, E, VEC, RB>, a);
    }
    if (err != cudaSuccess)
        return llmq_fail("attention_kv: kernel launch failed: %s", cudaGetErrorString(err));
    LAUNCH_CHECK("attention_kv");
    return 0;
}

/* RB: the tile of query rows, rows rounded up to a power of 2 (<= 8). */
template <typename T, bool KV8, int E, bool VEC>
int launch_rows(cuda_ctx *c, const AttnArgs &a, int rb, int C, int batch)
{
    switch (rb) {
    case 1: return launch_attn<T, KV8, E, VEC, 1>(c, a, C, batch);
    case 2: return launch_attn<T, KV8, E, VEC, 2>(c, a, C, batch);
    case 4: return launch_attn<T, KV8, E, VEC, 4>(c, a, C, batch);
    default: return launch_attn<T, KV8, E, VEC, 8>(c, a, C, batch);
    }
}

/* The chunk shape: 16-byte loads where head rows allow them. */
template <typename T>
int attn_typed(cuda_ctx *c, const AttnArgs &a, int rb, int C, int batch, bool kv8, bool al16)
{
    const int hd = a.hd;
    if (kv8) {
        if (al16 && hd % 16 == 0 && rb <= 2) /* 16 codes per lane; more rows would spill */
            return rb == 1 ? launch_attn<T, true, 16, true, 1>(c, a, C, batch)
                           : launch_attn<T, true, 16, true, 2>(c, a, C, batch);
        if (al16 && hd % 8 == 0)
            return launch_rows<T, true, 8, true>(c, a, rb, C, batch);
        return launch_rows<T, true, 8, false>(c, a, rb, C, batch);
    }
    if (sizeof(T) == 4) {
        if (al16 && hd % 4 == 0 && hd <= 128)
            return launch_rows<T, false, 4, true>(c, a, rb, C, batch);
        if (al16 && hd % 8 == 0)
            return launch_rows<T, false, 8, true>(c, a, rb, C, batch);
        return launch_rows<T, false, 8, false>(c, a, rb, C, batch);
    }
    if (al16 && hd % 8 == 0)
        return launch_rows<T, false, 8, true>(c, a, rb, C, batch);
    return launch_rows<T, false, 8, false>(c, a, rb, C, batch);
}

int check_shape(const char *op, int n_kv, int head_dim)
{
    if (n_kv <= 0)
        return llmq_fail("%s: %d kv heads", op, n_kv);
    if (head_dim <= 0 || head_dim > KV_MAX_HD || head_dim % 2)
        return llmq_fail("%s: head_dim %d not supported (even, 2..%d)", op, head_dim, KV_MAX_HD);
    return 0;
}

} // namespace

int cuda_kv_store(cuda_ctx *c, llmq_dtype dt, void *cache, float *scales, const void *x, int batch, int n, int pos,
                  int cap, int n_kv, int head_dim, int kv8, const int32_t *pos_dev)
{
    if (pos < 0 || n < 1 || pos + n > cap)
        return llmq_fail("kv_store: positions %d..%d outside a cache of %d", pos, pos + n - 1, cap);
    if (check_shape("kv_store", n_kv, head_dim))
        return -1;
    if (kv8 && !scales)
        return llmq_fail("kv_store: an int8 cache needs its scales");
    if (batch <= 0)
        return 0;
    const dim3 grid((unsigned)((size_t)batch * n), ceil_div((size_t)n_kv, ST_WARPS));
    if ((size_t)batch * n > 0x7fffffff || grid.y > 65535)
        return llmq_fail("kv_store: %d x %d rows of %d kv heads exceed the grid", batch, n, n_kv);
    DISPATCH_DT(dt, "kv_store", {
        if (kv8)
            kv_store_kernel<T, true><<<grid, ST_WARPS * 32, 0, c->stream>>>(cache, scales, (const T *)x, n, pos, cap,
                                                                           n_kv, head_dim, pos_dev);
        else
            kv_store_kernel<T, false><<<grid, ST_WARPS * 32, 0, c->stream>>>(cache, scales, (const T *)x, n, pos,
                                                                            cap, n_kv, head_dim, pos_dev);
        LAUNCH_CHECK("kv_store");
    });
    return 0;
}

int cuda_attention_kv(cuda_ctx *c, llmq_dtype dt, void *out, const void *q, const void *kc, const float *ks,
                      const void *vc, const float *vs, int batch, int n, int pos, int cap, int n_heads, int n_kv,
                      int head_dim, int kv8, const int32_t *pos_dev)
{
    if (pos < 0 || pos + n > cap)
        return llmq_fail("attention_kv: positions %d..%d outside a cache of %d", pos, pos + n - 1, cap);
    if (check_shape("attention_kv", n_kv, head_dim))
        return -1;
    if (n_heads <= 0 || n_heads % n_kv)
        return llmq_fail("attention_kv: %d query heads not a multiple of %d kv heads", n_heads, n_kv);
    if (kv8 && (!ks || !vs))
        return llmq_fail("attention_kv: an int8 cache needs its scales");
    if (batch <= 0 || n <= 0)
        return 0;
    if (batch > 65535)
        return llmq_fail("attention_kv: batch %d exceeds the grid", batch);
    const int group = n_heads / n_kv;
    if ((size_t)n * group > 0x7fffffff / AK_MAX_ROWS)
        return llmq_fail("attention_kv: %d queries of %d heads each", n, n_heads);

    AttnArgs a = {};
    a.out = out;
    a.q = q;
    a.kc = kc;
    a.vc = vc;
    a.ks = ks;
    a.vs = vs;
    a.n = n;
    a.pos = pos;
    a.pos_dev = pos_dev;
    a.cap = cap;
    a.n_heads = n_heads;
    a.n_kv = n_kv;
    a.hd = head_dim;
    a.group = group;
    a.rows = n * group;
    a.scale_log2 = 1.4426950408889634f / sqrtf((float)head_dim);
    const int rb = a.rows > 4 ? 8 : a.rows > 2 ? 4 : a.rows;

    /* Split the keys over a cluster of C blocks when the (sequence, kv
     * head, tile) blocks alone would leave the GPU short of about three
     * blocks (12 warps, ~48 KB of loads in flight) per SM, keeping at least
     * AK_MIN_KEYS keys per block. */
    const size_t blocks = (size_t)batch * n_kv * ((a.rows + rb - 1) / rb);
    int C = 1;
    while (C < AK_MAX_CLUSTER && blocks * C < (size_t)3 * c->num_sms && (pos + n) / (2 * C) >= AK_MIN_KEYS)
        C *= 2;

    const bool al16 = aligned16(kc) && aligned16(vc);
    switch (dt) {
    case LLMQ_F32: return attn_typed<float>(c, a, rb, C, batch, kv8 != 0, al16);
    case LLMQ_F16: return attn_typed<__half>(c, a, rb, C, batch, kv8 != 0, al16);
    case LLMQ_BF16: return attn_typed<__nv_bfloat16>(c, a, rb, C, batch, kv8 != 0, al16);
    default: return llmq_fail("attention_kv: unsupported storage type %s", llmq_dtype_name(dt));
    }
}
