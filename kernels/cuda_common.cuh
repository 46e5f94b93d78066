/* Shared by the CUDA backend's translation units: the backend state, error
 * checks, storage-type helpers and the launchers each kernels .cu file exports.
 *
 * Every launcher enqueues work on the backend's one stream and returns 0, or
 * -1 with llmq_fail() when a launch or an API call fails. Kernels are
 * templates over the storage type T (float, __half, __nv_bfloat16); all
 * arithmetic is fp32. */
#ifndef LLMQ_KERNELS_CUDA_COMMON_CUH
#define LLMQ_KERNELS_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "src/backend.h"
#include "src/error.h"
}

/* Backend state behind llmq_backend.impl. */
struct cuda_ctx {
    int device;
    int num_sms;
    int cc_major;          /* compute capability (>= 9: bulk copies, mbarriers, clusters, st.async) */
    size_t smem_optin;     /* largest dynamic shared memory a block may opt into */
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;         /* cuBLAS workspace */
    /* Host <-> device staging: two pinned host buffers and two device
     * buffers of stage_bytes each, so that the CPU fills one while the copy
     * engine drains the other. */
    size_t stage_bytes;
    void *pinned[2];
    void *dstage[2];
    cudaEvent_t staged[2]; /* recorded after the copy out of pinned[i] */
    /* nll: per-row losses and their sum, grown on demand. */
    double *nll_rows;
    int nll_cap;
    double *nll_sum;
};

/* Return -1 with a message naming the call when a CUDA API call fails. */
#define CUDA_TRY(call)                                                                             \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess)                                                                   \
            return llmq_fail("%s (%s:%d): %s", #call, __FILE__, __LINE__, cudaGetErrorString(err_)); \
    } while (0)

/* After a <<<>>> launch: configuration errors show up here at once;
 * faults inside the kernel surface at the next synchronizing call. */
#define LAUNCH_CHECK(what)                                                                         \
    do {                                                                                           \
        cudaError_t err_ = cudaGetLastError();                                                     \
        if (err_ != cudaSuccess)                                                                   \
            return llmq_fail("%s: kernel launch failed: %s", what, cudaGetErrorString(err_));      \
    } while (0)

/* For launchers that return a cudaError_t (launch_pdl, cudaLaunchKernelEx). */
#define LAUNCH_TRY(what, call)                                                                     \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess)                                                                   \
            return llmq_fail("%s: kernel launch failed: %s", what, cudaGetErrorString(err_));      \
    } while (0)

const char *cublas_status_name(cublasStatus_t s);

#define CUBLAS_TRY(call)                                                                           \
    do {                                                                                           \
        cublasStatus_t st_ = (call);                                                               \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                          \
            return llmq_fail("%s (%s:%d): %s", #call, __FILE__, __LINE__, cublas_status_name(st_)); \
    } while (0)

/* ---- storage types ---- */

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(double x) { return (float)x; }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

/* What storing x in T and reading it back gives (exact for float): how the
 * kernels mirror PyTorch, which rounds every intermediate tensor to dt. */
template <typename T> __device__ __forceinline__ float round_to(float x) { return to_f32(from_f32<T>(x)); }

/* 16 bytes of T: the unit of coalesced vector loads and stores. */
template <typename T> struct alignas(16) Vec16 {
    static constexpr int N = 16 / (int)sizeof(T);
    T v[N];
};

template <typename T> __device__ __forceinline__ Vec16<T> load16(const T *p)
{
    Vec16<T> r;
    /* A plain load, not __ldg: in-place operations read what they write. */
    *reinterpret_cast<int4 *>(&r) = *reinterpret_cast<const int4 *>(p);
    return r;
}

template <typename T> __device__ __forceinline__ void store16(T *p, const Vec16<T> &r)
{
    *reinterpret_cast<int4 *>(p) = *reinterpret_cast<const int4 *>(&r);
}

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Run BODY with T bound to the C++ type of storage type DT (F32, F16,
 * BF16); other types fail. */
#define DISPATCH_DT(DT, WHAT, ...)                                                                 \
    switch (DT) {                                                                                  \
    case LLMQ_F32: {                                                                               \
        typedef float T;                                                                           \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    case LLMQ_F16: {                                                                               \
        typedef __half T;                                                                          \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    case LLMQ_BF16: {                                                                              \
        typedef __nv_bfloat16 T;                                                                   \
        __VA_ARGS__;                                                                               \
    } break;                                                                                       \
    default: return llmq_fail("%s: unsupported storage type %s", WHAT, llmq_dtype_name(DT));        \
    }

/* 16 bytes read once (a GEMV's weight stream): kept out of L1, which serves
 * the small operands. volatile: a plain asm statement counts as a pure
 * function to the compiler, which then sinks it to its first use (into the
 * conditional block that consumes it), and the loads meant to be in flight
 * together go out one at a time. */
__device__ __forceinline__ int4 ld_stream(const void *p)
{
    int4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

__device__ __forceinline__ unsigned smem_u32(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }

/* 16-byte global -> shared copy that bypasses L1 (cp.async, compute
 * capability 8.0); src_bytes < 16 fills the rest with zeros (0: rows past
 * a window). Copies go in groups: commit closes the group issued since the
 * last commit, wait<N> returns once at most N of this thread's groups are
 * still in flight (they complete in order). */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes = 16)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes)
                 : "memory");
}
/* 8-byte global -> shared copy through L1 (cp.async.ca: .cg takes 16 bytes
 * only), in the same groups as cp_async16. */
__device__ __forceinline__ void cp_async8(void *dst, const void *src)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(smem_u32(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* mbarriers (compute capability 9.0): init with an arrival count;
 * expect_tx arrives once and adds the bytes that asynchronous copies or
 * stores must still complete on it; wait spins until the phase of the
 * given parity has completed. */
__device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes)
                 : "memory");
}

/* CLUSTER: the phase's data may come from other blocks of the cluster
 * (st.async), so the acquire is at cluster scope. */
#define MBAR_TRY_WAIT(sem)                                                                                             \
    "{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity" sem ".shared::cta.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
template <bool CLUSTER = false> __device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity)
{
    uint32_t done;
    do {
        if constexpr (CLUSTER)
            asm volatile(MBAR_TRY_WAIT(".acquire.cluster") : "=r"(done) : "r"(smem_u32(bar)), "r"(parity) : "memory");
        else
            asm volatile(MBAR_TRY_WAIT("") : "=r"(done) : "r"(smem_u32(bar)), "r"(parity) : "memory");
    } while (!done);
}
#undef MBAR_TRY_WAIT

/* Block-wide reductions for blockDim.x a multiple of 32 (<= 1024). `shm`
 * holds 32 floats; the result is returned to every thread. */
__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float block_sum(float v, float *shm)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* shm may still be read by a previous reduction */
    if (lane == 0)
        shm[warp] = v;
    __syncthreads();
    v = lane < nw ? shm[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float *shm)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        shm[warp] = v;
    __syncthreads();
    v = lane < nw ? shm[lane] : -INFINITY;
    return warp_max(v);
}

static inline unsigned ceil_div(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

/* Grid size for grid-stride loops over n items of `per_block` each:
 * enough blocks to fill the GPU a few times over, no more. */
static inline unsigned grid_for(const cuda_ctx *c, size_t n, size_t per_block)
{
    size_t g = (n + per_block - 1) / per_block, cap = (size_t)c->num_sms * 16;
    return (unsigned)(g < 1 ? 1 : g > cap ? cap : g);
}

/* Blocks of nw warps, regs registers per thread and smem bytes of dynamic
 * shared memory that one multiprocessor of `device` holds at once (at most
 * 32; the device's shared memory asked once): how the GEMV kernels size
 * their splits so that the grid is one wave (backend_cuda.cu). */
int cuda_resident_blocks(int device, int nw, int regs, size_t smem);

/* ---- launchers (one file each) ---- */

/* convert.cu: dst[i] = (dst_dt) src[i]; src_dt F32/F16/BF16/F64, dst_dt F32/F16/BF16. */
int cuda_convert(cuda_ctx *c, void *dst, llmq_dtype dst_dt, const void *src, llmq_dtype src_dt, size_t n);

/* elementwise.cu */
int cuda_embed(cuda_ctx *c, llmq_dtype dt, void *out, const void *table, const int32_t *ids, int rows, int dim);
int cuda_silu_mul(cuda_ctx *c, llmq_dtype dt, void *out, const void *gate, const void *up, size_t n);
int cuda_add(cuda_ctx *c, llmq_dtype dt, void *x, const void *y, size_t n);
int cuda_add_bias(cuda_ctx *c, llmq_dtype dt, void *y, const void *bias, int rows, int cols);

/* norm.cu */
int cuda_rmsnorm(cuda_ctx *c, llmq_dtype dt, void *out, const void *x, const void *w, int rows, int dim, float eps);

/* rope.cu */
int cuda_rope(cuda_ctx *c, llmq_dtype dt, void *x, const float *cos_sin, int rows, int seq, int n_heads,
              int head_dim, const int32_t *pos_dev);

/* attention.cu */
int cuda_attention(cuda_ctx *c, llmq_dtype dt, void *out, const void *q, const void *k, const void *v, int batch,
                   int seq, int n_heads, int n_kv, int head_dim);

/* ---- programmatic dependent launch (PDL, compute capability 9.0) ----
 *
 * A decode step is a chain of ~17 kernels per layer, most of them a few
 * microseconds long, so the gap between two kernels (the next one's launch
 * and ramp after the previous one drains) costs as much as the work. A
 * kernel launched by launch_pdl may start while the kernel before it on the
 * stream still runs: it first calls pdl_wait(), which returns once the
 * previous grid has completed and its writes are visible, so nothing it
 * reads can be stale; then pdl_trigger() lets the kernel after it start
 * early in turn. Both are no-ops for a kernel launched without the
 * attribute (and on older GPUs), so a kernel with them may be launched
 * either way. Every kernel launched by launch_pdl must call pdl_wait()
 * before it touches global memory that another kernel writes. */
__device__ __forceinline__ void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* 1 while launches with programmatic stream serialization succeed; the
 * first refusal (an older device or driver) turns it off for the process. */
extern int cuda_pdl_ok;

/* A launch attribute: thread-block clusters of n blocks along x. */
static inline cudaLaunchAttribute cluster_x(unsigned n)
{
    cudaLaunchAttribute a;
    a.id = cudaLaunchAttributeClusterDimension;
    a.val.clusterDim.x = n;
    a.val.clusterDim.y = 1;
    a.val.clusterDim.z = 1;
    return a;
}

/* kern<<<grid, block, smem, stream>>>(args...) with extra launch attributes
 * (clusters) when given and, when pdl is set and the process has not seen
 * it refused, programmatic stream serialization. */
template <typename... P, typename... A>
cudaError_t launch_ex(void (*kern)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                      const cudaLaunchAttribute *extra, int nextra, int pdl, A... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[4];
    int na = 0;
    for (int i = 0; i < nextra && na < 3; i++)
        at[na++] = extra[i];
    const int with_pdl = pdl && cuda_pdl_ok;
    if (with_pdl) {
        at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[na].val.programmaticStreamSerializationAllowed = 1;
        na++;
    }
    cfg.attrs = at;
    cfg.numAttrs = (unsigned)na;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kern, args...);
    if (e != cudaSuccess && with_pdl) { /* refused with PDL: go on without it */
        (void)cudaGetLastError();
        cuda_pdl_ok = 0;
        cfg.numAttrs = (unsigned)(na - 1);
        e = cudaLaunchKernelEx(&cfg, kern, args...);
    }
    return e;
}

/* launch_ex with programmatic stream serialization. */
template <typename... P, typename... A>
cudaError_t launch_pdl(void (*kern)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                       const cudaLaunchAttribute *extra, int nextra, A... args)
{
    return launch_ex(kern, grid, block, smem, st, extra, nextra, 1, args...);
}

/* nll.cu: per-row losses into c->nll_rows, summed in double into *nll on the host. */
int cuda_nll(cuda_ctx *c, llmq_dtype dt, double *nll, const void *logits, const int32_t *targets, int rows,
             int vocab);

/* observe.cu */
int cuda_col_absmax(cuda_ctx *c, llmq_dtype dt, float *amax, const void *x, int rows, int cols);
int cuda_act_stats(cuda_ctx *c, llmq_dtype dt, float *col_amax, float *col_abssum, float *row_amax, const void *x,
                   int rows, int cols);

/* fake_quant.cu */
int cuda_fq_per_token(cuda_ctx *c, llmq_dtype dt, void *x, int rows, int cols, int qmax);
int cuda_fq_tensor(cuda_ctx *c, llmq_dtype dt, void *x, size_t n, float scale, int qmax);

/* kv_cache.cu: src/backend.h's kv_store and attention_kv (dt or int8 caches). */
int cuda_kv_store(cuda_ctx *c, llmq_dtype dt, void *cache, float *scales, const void *x, int batch, int n, int pos,
                  int cap, int n_kv, int head_dim, int kv8, const int32_t *pos_dev);
int cuda_attention_kv(cuda_ctx *c, llmq_dtype dt, void *out, const void *q, const void *kc, const float *ks,
                      const void *vc, const float *vs, int batch, int n, int pos, int cap, int n_heads, int n_kv,
                      int head_dim, int kv8, const int32_t *pos_dev);

#endif
