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
#include <cstdlib>
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
    pdl_wait();
    pdl_trigger();
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

/* The warps' partials of row r merged (online softmax): the sum over
 * warps w of part[w * stride] rescaled from warp w's running max
 * w_m[w * RB + r] to the largest one, which goes to *mx_out if given. */
template <int RB>
__device__ __forceinline__ float merge_warps(const float *w_m, int r, const float *part, int stride, float *mx_out)
{
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < AK_WARPS; w++)
        mx = fmaxf(mx, w_m[w * RB + r]);
    const float mu = safe_max(mx);
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < AK_WARPS; w++)
        s += exp2f(w_m[w * RB + r] - mu) * part[w * stride];
    if (mx_out)
        *mx_out = mx;
    return s;
}

/* The block's end, after every warp has left its partial -- unnormalized
 * output w_acc over hd dimensions per row, running max w_m and sum w_l --
 * in shared memory: merge the warps, then the blocks of the cluster through
 * distributed shared memory, and store the tile's rows of out. */
template <typename T, int RB>
__device__ __forceinline__ void block_merge_store(const AttnArgs &a, int kvh, int tile, int seq)
{
    extern __shared__ float ak_smem[];
    cg::cluster_group cl = cg::this_cluster();
    const int C = (int)cl.num_blocks(), rank = (int)cl.block_rank();
    const int hd = a.hd;
    const size_t qdim = (size_t)a.n_heads * hd;
    float *w_acc = ak_smem;                       /* [AK_WARPS][RB][hd] */
    float *w_m = w_acc + AK_WARPS * RB * hd;      /* [AK_WARPS][RB] */
    float *w_l = w_m + AK_WARPS * RB;
    float *b_acc = w_l + AK_WARPS * RB;           /* [RB][hd] */
    float *b_m = b_acc + RB * hd;                 /* [RB] */
    float *b_l = b_m + RB;
    __syncthreads();
    for (int idx = threadIdx.x; idx < RB * hd; idx += AK_THREADS)
        b_acc[idx] = merge_warps<RB>(w_m, idx / hd, w_acc + idx, RB * hd, NULL);
    if (threadIdx.x < RB) {
        const int r = threadIdx.x;
        b_l[r] = merge_warps<RB>(w_m, r, w_l + r, RB, &b_m[r]);
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
    pdl_wait();
    pdl_trigger();
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

    /* The warps' partials to shared memory, for block_merge_store. */
    float *w_acc = ak_smem;                       /* [AK_WARPS][RB][hd] */
    float *w_m = w_acc + AK_WARPS * RB * hd;      /* [AK_WARPS][RB] */
    float *w_l = w_m + AK_WARPS * RB;
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
    block_merge_store<T, RB>(a, kvh, tile, seq);
}

/* ---- int8 decode on tensor cores ----
 *
 * The fp32 path above spends ~5 instructions per cached int8 value (byte ->
 * float, a scale, an FMA, for K and again for V) and cannot stream the
 * cache at the copy rate. Here both products run on int8 tensor cores
 * (mma.sync m16n8k32 s8 x s8 -> s32), which take the codes as they lie in
 * memory: no per-value conversion at all. What is not int8 is made int8
 * with a second, finer code for the residual:
 *
 *   q   per (sequence, head), x = q * 127 / max|q|, codes qh = rint(x) and
 *       ql = rint((x - qh) * 254): q = max|q|/127 * (qh + ql/254) to 2^-16
 *       of max|q| (fp16 itself keeps 2^-11 of each value).
 *   p   per step of 16 or 32 keys, the weights w_t = p_t * vscale_t relative
 *       to the step's largest, x = 127 * w_t / max w, the same two codes:
 *       every weight to 1.6e-5 of the step's largest, so a step of small
 *       weights keeps its own precision.
 *
 * Both codes ride in the n dimension (the 8 query columns of the mma,
 * otherwise idle at one query row): Q K^T takes columns (qh, ql) and P V
 * takes 4 dimensions x (wh, wl), so one mma does both halves of a split.
 *
 *   Q K^T  A = 16 keys x 32 dims of K. Lane (g = lane/4, t = lane%4) holds
 *          keys g and g+8, bytes [16*HT*t, 16*HT*(t+1)) of each row, as
 *          they are loaded; the mma's k order is a permutation of the
 *          dimensions, and B (q's codes, column g: qh for even g, ql for
 *          odd) is laid out in the same permutation. C: every lane gets the
 *          scores of keys g and g+8 (columns 2t, 2t+1 = qh, ql).
 *   P V    out[d] = sum_t w_t v_td with k = (key, 4 consecutive dims) and
 *          B[(t, j)][n] = w_t's code (n / 4) where n % 4 == j: a K-word of
 *          A is then 4 consecutive dimensions of one key, again as loaded
 *          (lane (g, t): keys t, t+4, t+8, t+12 of the 16, bytes
 *          [8*HT*g, 8*HT*(g+1)) of each row). Lanes with t < 2 accumulate
 *          the wh sums, t >= 2 the wl ones, merged at the end.
 *
 * The int32 sums (< 2^22: 127*127*256 at most for a score, 127*127*32 for
 * a step of P V) start from the bits of 1.5 * 2^23, so that the result read
 * as a float is 1.5 * 2^23 + sum exactly and one FADD converts it. The
 * online softmax keeps fp32 accumulators, rescaled once per step. Scores,
 * softmax and sums are fp32 as the contract asks; only the operands are
 * rounded, to the precision above. */

constexpr float MAGIC_F = 12582912.0f; /* 1.5 * 2^23 */
constexpr int MAGIC_I = 0x4B400000;

/* volatile, with the loads below: the compiler keeps them in program order,
 * so that all of a step's loads issue before the first mma waits on K
 * (left to itself it sank the V loads below the Q K^T mmas: two memory
 * round trips per step). */
__device__ __forceinline__ void imma16832(int (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                          unsigned b0, unsigned b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int BYTES> __device__ __forceinline__ void load_raw_v(Raw<BYTES> &r, const void *p)
{
    if constexpr (BYTES % 16 == 0) {
#pragma unroll
        for (int i = 0; i < BYTES / 16; i++)
            asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];"
                         : "=r"(r.w[4 * i]), "=r"(r.w[4 * i + 1]), "=r"(r.w[4 * i + 2]), "=r"(r.w[4 * i + 3])
                         : "l"((const char *)p + 16 * i));
    } else {
        static_assert(BYTES == 8, "8 bytes or multiples of 16");
        asm volatile("ld.global.nc.v2.u32 {%0,%1}, [%2];" : "=r"(r.w[0]), "=r"(r.w[1]) : "l"(p));
    }
}

__device__ __forceinline__ float load_f32_v(const void *p)
{
    float x;
    asm volatile("ld.global.nc.f32 %0, [%1];" : "=f"(x) : "l"(p));
    return x;
}

/* The low byte of a float holding 1.5 * 2^23 + an integer in [-128, 127]:
 * that integer as an int8 code. x + MAGIC_F rounds x half to even. */
__device__ __forceinline__ unsigned magic_byte(float y) { return __float_as_uint(y) & 0xffu; }

/* Blocks per SM for ptxas's register budget (no spills): 5 (<= 96
 * registers) with one group of 16 keys a step, 4 (<= 128) with two groups
 * or a second step in flight, 3 at head_dim 256 (64 bytes of K and 32 of V
 * per key per lane). */
constexpr int kv8_mma_min_blocks(int ht, int nb, bool pf) { return ht > 2 ? 3 : nb == 1 && !pf ? 5 : 4; }

/* One (sequence, head) of a decode step, n = 1 and no GQA; HT = head_dim /
 * 64; NB groups of 16 keys per warp step. Grid and clusters as
 * attn_kv_kernel with one row tile. */
template <typename T, int HT, int NB, bool PF>
__global__ void __launch_bounds__(AK_THREADS, kv8_mma_min_blocks(HT, NB, PF)) attn_kv8_mma_kernel(const AttnArgs a)
{
    constexpr int KB = 16 * HT; /* K bytes per key per lane */
    constexpr int VB = 8 * HT;  /* V bytes per key per lane */
    constexpr int KEYS = 16 * NB;
    pdl_wait();
    pdl_trigger();
    cg::cluster_group cl = cg::this_cluster();
    const int C = (int)cl.num_blocks(), rank = (int)cl.block_rank();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int pos = a.pos_dev ? *a.pos_dev : a.pos;
    const int hd = 64 * HT, kvh = blockIdx.y, seq = blockIdx.z;
    const size_t kvdim = (size_t)a.n_kv * hd;

    /* q's codes for this lane's dimensions [KB*t, KB*(t+1)): column g of B. */
    unsigned qb[KB / 4];
    float qscale;
    {
        const T *qp = (const T *)a.q + (size_t)seq * a.n_heads * hd + (size_t)kvh * hd + KB * t;
        float qv[KB], mx = 0.0f;
#pragma unroll
        for (int e = 0; e < KB; e++) {
            qv[e] = to_f32(qp[e]);
            mx = fmaxf(mx, fabsf(qv[e]));
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        mx = fmaxf(mx, 1e-30f); /* q = 0: codes 0 */
        const float inv = 127.0f / mx;
#pragma unroll
        for (int w = 0; w < KB / 4; w++) {
            unsigned word = 0;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const float x = qv[4 * w + b] * inv, hi = rintf(x);
                const float code = (g & 1) ? rintf((x - hi) * 254.0f) : hi;
                word |= ((unsigned)(int)code & 0xffu) << (8 * b);
            }
            qb[w] = word;
        }
        qscale = mx * (1.0f / 127.0f) * a.scale_log2;
    }

    /* Keys 0 .. pos split over the cluster, as attn_kv_kernel. */
    const int len = pos + 1, per = (len + C - 1) / C;
    const int kb = rank * per, ke = min(len, kb + per);
    const size_t slot0 = (size_t)seq * a.cap;
    const int8_t *kbase = (const int8_t *)a.kc + slot0 * kvdim + (size_t)kvh * hd + KB * t;
    const int8_t *vbase = (const int8_t *)a.vc + slot0 * kvdim + (size_t)kvh * hd + VB * g;
    const char *ksb = (const char *)(a.ks + slot0 * a.n_kv + kvh), *vsb = (const char *)(a.vs + slot0 * a.n_kv + kvh);
    const unsigned kvd = (unsigned)kvdim, sstride = (unsigned)a.n_kv * 4u; /* bytes per position */

    /* P V's B: byte j = g % 4 of the word is the code (g / 4: wh, wl) of a
     * key, the other bytes 0 (byte 4 of __byte_perm's zero operand). The
     * code comes packed (wh, wl) of key k, (wh, wl) of key k+8. */
    unsigned sel[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        sel[h] = 0;
        for (int p = 0; p < 4; p++)
            sel[h] |= (unsigned)(p == (g & 3) ? 2 * h + (g >> 2) : 4) << (4 * p);
    }
    /* The wl sums weigh 1/254 of the wh ones; both 1/127 of the step's
     * reference weight. */
    const float lane_w = t < 2 ? 1.0f / 127.0f : 1.0f / (127.0f * 254.0f);

    float m = -INFINITY, l = 0.0f, acc[HT][4];
#pragma unroll
    for (int dt = 0; dt < HT; dt++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            acc[dt][i] = 0.0f;

    /* A step's loads: K rows g, g+8 and their scales, V rows t, t+4, t+8,
     * t+12 of each group of 16 keys from k0. Keys past the end load the
     * last key again (masked below). 32-bit offsets (the launch checks that
     * a sequence's rows fit): one IMAD.WIDE.U32 per address. */
    struct Step {
        Raw<KB> kr[NB][2];
        Raw<VB> vr[NB][4];
        float ksc[NB][2], lvs[NB][2];
    };
    auto load_step = [&](Step &d, int k0) {
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const unsigned tl = (unsigned)min(k0 + 16 * nb + g + 8 * h, ke - 1);
                load_raw_v(d.kr[nb][h], kbase + (unsigned long long)tl * kvd);
                d.ksc[nb][h] = load_f32_v(ksb + (unsigned long long)tl * sstride);
                d.lvs[nb][h] = load_f32_v(vsb + (unsigned long long)tl * sstride);
            }
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const unsigned tl = (unsigned)min(k0 + 16 * nb + t + 4 * i, ke - 1);
                load_raw_v(d.vr[nb][i], vbase + (unsigned long long)tl * kvd);
            }
        }
    };

    /* PF: the next step's loads are issued before this step's math (ptxas
     * otherwise sinks the V loads below the Q K^T mmas, which wait on K:
     * two memory round trips per step). */
    Step cur;
    const int k_first = kb + warp * KEYS;
    if (k_first < ke)
        load_step(cur, k_first);
    for (int k0 = k_first; k0 < ke; k0 += AK_WARPS * KEYS) {
        Step nxt;
        if (PF && k0 + AK_WARPS * KEYS < ke)
            load_step(nxt, k0 + AK_WARPS * KEYS);
        auto &kr = cur.kr;
        auto &vr = cur.vr;
        auto &ksc = cur.ksc;
        auto &lvs = cur.lvs;

        /* Scores s (log2 units) of keys g, g+8 of each group, and s + log2
         * of the V scale: the log2 of the weight w that P V needs. */
        float s[NB][2], sw[NB][2], bm = -INFINITY, bw = -INFINITY;
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
            int c[4] = {MAGIC_I, MAGIC_I, MAGIC_I, MAGIC_I};
#pragma unroll
            for (int j = 0; j < 2 * HT; j++)
                imma16832(c, kr[nb][0].w[2 * j], kr[nb][1].w[2 * j], kr[nb][0].w[2 * j + 1], kr[nb][1].w[2 * j + 1],
                          qb[2 * j], qb[2 * j + 1]);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const float sh = __int_as_float(c[2 * h]) - MAGIC_F, sl = __int_as_float(c[2 * h + 1]) - MAGIC_F;
                const bool valid = k0 + 16 * nb + g + 8 * h < ke;
                s[nb][h] = valid ? fmaf(sl, 1.0f / 254.0f, sh) * (qscale * ksc[nb][h]) : -INFINITY;
                sw[nb][h] = s[nb][h] + __log2f(lvs[nb][h]);
                bm = fmaxf(bm, s[nb][h]);
                bw = fmaxf(bw, sw[nb][h]);
            }
        }
        /* Over the warp's keys (the 4 lanes of a g hold the same ones). */
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) {
            bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, o));
            bw = fmaxf(bw, __shfl_xor_sync(0xffffffffu, bw, o));
        }
        /* k0 < ke: the step has a valid key, bm and bw are finite. */
        const float mn = fmaxf(m, bm), alpha = exp2f(m - mn);
        const float wref = exp2f(bw - mn) * lane_w; /* the largest weight, per code step */
        m = mn;
        l *= alpha;
        /* Codes of w / max w * 127, packed (wh, wl) of key g, (wh, wl) of g+8. */
        const float bwc = bw - 6.9886846867721655f; /* log2(127) */
        unsigned pk[NB];
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
            unsigned hl[2];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                l += exp2f(s[nb][h] - mn);
                const float x = exp2f(sw[nb][h] - bwc); /* [0, 127] */
                const float yh = x + MAGIC_F, yl = fmaf(x - (yh - MAGIC_F), 254.0f, MAGIC_F);
                hl[h] = magic_byte(yh) | magic_byte(yl) << 8;
            }
            pk[nb] = hl[0] | hl[1] << 16;
        }

        int cv[HT][4];
#pragma unroll
        for (int dt = 0; dt < HT; dt++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                cv[dt][i] = MAGIC_I;
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
            /* Keys t, t+8 live in lanes 4t.., keys t+4, t+12 in lanes 4(t+4)... */
            const unsigned x0 = __shfl_sync(0xffffffffu, pk[nb], 4 * t);
            const unsigned x1 = __shfl_sync(0xffffffffu, pk[nb], 4 * t + 16);
#pragma unroll
            for (int h = 0; h < 2; h++) { /* keys 8h .. 8h+7 of the group */
                const unsigned b0 = __byte_perm(x0, 0u, sel[h]), b1 = __byte_perm(x1, 0u, sel[h]);
#pragma unroll
                for (int dt = 0; dt < HT; dt++)
                    imma16832(cv[dt], vr[nb][2 * h].w[2 * dt], vr[nb][2 * h].w[2 * dt + 1],
                              vr[nb][2 * h + 1].w[2 * dt], vr[nb][2 * h + 1].w[2 * dt + 1], b0, b1);
            }
        }
#pragma unroll
        for (int dt = 0; dt < HT; dt++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                acc[dt][i] = fmaf(__int_as_float(cv[dt][i]) - MAGIC_F, wref, acc[dt][i] * alpha);
        if (PF)
            cur = nxt;
        else if (k0 + AK_WARPS * KEYS < ke)
            load_step(cur, k0 + AK_WARPS * KEYS);
    }

    /* wl sums into the wh ones (lanes t and t^2 hold the same dimensions),
     * the softmax sum over the warp's keys. */
#pragma unroll
    for (int dt = 0; dt < HT; dt++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            acc[dt][i] += __shfl_xor_sync(0xffffffffu, acc[dt][i], 2);
#pragma unroll
    for (int o = 4; o < 32; o <<= 1)
        l += __shfl_xor_sync(0xffffffffu, l, o);

    extern __shared__ float ak_smem[];
    float *w_acc = ak_smem, *w_m = w_acc + AK_WARPS * hd, *w_l = w_m + AK_WARPS;
    if (t < 2) {
        /* C element i: row g + 8*(i/2) -> word 2*dt + i/2 of the lane's V
         * bytes, column 2t + i%2 -> dimension j = 2t + i%2 of that word. */
#pragma unroll
        for (int dt = 0; dt < HT; dt++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                w_acc[warp * hd + VB * g + 4 * (2 * dt + (i >> 1)) + 2 * t + (i & 1)] = acc[dt][i];
    }
    if (lane == 0) {
        w_m[warp] = m;
        w_l[warp] = l;
    }
    block_merge_store<T, 1>(a, kvh, 0, seq);
}

/* Launch kern over grid (C, n_kv * tiles, batch) in clusters of C, with the
 * shared memory of block_merge_store for RB rows. */
int launch_kv(cuda_ctx *c, void (*kern)(AttnArgs), const AttnArgs &a, int RB, int C, int batch)
{
    const size_t smem = ((size_t)(AK_WARPS + 1) * RB * a.hd + 2 * (AK_WARPS + 1) * RB) * sizeof(float);
    /* At most 5 * 8 * 258 floats = 41 KB for head_dim 256: under the 48 KB
     * that needs no opt-in. */
    if (smem > 48 * 1024)
        return llmq_fail("attention_kv: %zu bytes of shared memory", smem);
    if ((size_t)a.n_kv * a.tiles > 65535)
        return llmq_fail("attention_kv: %d kv heads x %d row tiles exceed the grid", a.n_kv, a.tiles);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)C, (unsigned)(a.n_kv * a.tiles), (unsigned)batch);
    cfg.blockDim = dim3(AK_THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = c->stream;
    cudaLaunchAttribute attr[1] = {cluster_x((unsigned)C)};
    cudaError_t err = launch_pdl(kern, cfg.gridDim, cfg.blockDim, smem, c->stream, attr, 1, a);
    if (err != cudaSuccess && C > 1) {
        /* A device or partition that refuses the cluster (a launch error,
         * not sticky): the same work unsplit, a block per tile. */
        (void)cudaGetLastError();
        err = launch_pdl(kern, dim3(1, cfg.gridDim.y, cfg.gridDim.z), cfg.blockDim, smem, c->stream, NULL, 0, a);
    }
    if (err != cudaSuccess)
        return llmq_fail("attention_kv: kernel launch failed: %s", cudaGetErrorString(err));
    LAUNCH_CHECK("attention_kv");
    return 0;
}

template <typename T, bool KV8, int E, bool VEC, int RB>
int launch_attn(cuda_ctx *c, AttnArgs a, int C, int batch)
{
    a.nchunks = (a.hd + E - 1) / E;
    a.lpk_log2 = 0;
    while ((1 << a.lpk_log2) < a.nchunks)
        a.lpk_log2++;
    a.tiles = (a.rows + RB - 1) / RB;
    return launch_kv(c, attn_kv_kernel<T, KV8, E, VEC, RB>, a, RB, C, batch);
}

/* The int8 tensor-core decode: head_dim 64, 128 or 256, one row. */
template <typename T> int launch_kv8_mma(cuda_ctx *c, AttnArgs a, int nb, int C, int batch)
{
    a.tiles = 1;
    const bool pf = nb == 3;
    nb = nb == 2 ? 2 : 1;
    if (a.hd == 64)
        return pf ? launch_kv(c, attn_kv8_mma_kernel<T, 1, 1, true>, a, 1, C, batch)
               : nb == 2 ? launch_kv(c, attn_kv8_mma_kernel<T, 1, 2, false>, a, 1, C, batch)
                         : launch_kv(c, attn_kv8_mma_kernel<T, 1, 1, false>, a, 1, C, batch);
    if (a.hd == 128)
        return pf ? launch_kv(c, attn_kv8_mma_kernel<T, 2, 1, true>, a, 1, C, batch)
               : nb == 2 ? launch_kv(c, attn_kv8_mma_kernel<T, 2, 2, false>, a, 1, C, batch)
                         : launch_kv(c, attn_kv8_mma_kernel<T, 2, 1, false>, a, 1, C, batch);
    /* head_dim 256: 64 + 32 bytes a key a lane leave no registers for a
     * second step in flight (ptxas spills). */
    return launch_kv(c, attn_kv8_mma_kernel<T, 4, 1, false>, a, 1, C, batch);
}

/* Which int8 decode kernel (llmq_kv8_tune): 0 the fp32 one; the
 * tensor-core one with 1: 16 keys per warp step, 2: 32, 3 (the default): 16
 * with the next step's loads in flight. */
int g_kv8_mode = 3;
int kv8_mma_mode() { return g_kv8_mode; }

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
    /* Decode without GQA on 16-bit types: the tensor-core int8 kernel (f32
     * keeps the fp32 one: its 1e-5 bound is finer than q's codes). */
    if constexpr (sizeof(T) == 2)
        if (kv8 && a.rows == 1 && al16 && (hd == 64 || hd == 128 || hd == 256) && kv8_mma_mode() != 0 &&
            (size_t)a.cap * a.n_kv * hd < ((size_t)1 << 32))
            return launch_kv8_mma<T>(c, a, kv8_mma_mode(), C, batch);
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

} // namespace

extern "C" int llmq_kv8_tune(int mode)
{
    if (mode < 0 || mode > 3)
        return llmq_fail("kv8 attention: mode %d (0..3)", mode);
    g_kv8_mode = mode;
    return 0;
}

namespace {

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
        cudaError_t e = launch_pdl(kv8 ? kv_store_kernel<T, true> : kv_store_kernel<T, false>, grid,
                                   dim3(ST_WARPS * 32), 0, c->stream, NULL, 0, cache, scales, (const T *)x, n, pos,
                                   cap, n_kv, head_dim, pos_dev);
        if (e != cudaSuccess)
            return llmq_fail("kv_store: kernel launch failed: %s", cudaGetErrorString(e));
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
