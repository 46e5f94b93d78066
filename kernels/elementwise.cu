/* Memory-bound elementwise operations: embed, silu_mul, add, bias add.
 *
 * Each moves 16-byte vectors per thread when every pointer is 16-byte
 * aligned (cudaMalloc'd buffers are; views into them at odd offsets may not
 * be), with a scalar tail. Results are rounded to the storage type after
 * every operation PyTorch would round after. */
#include "kernels/cuda_common.cuh"

/* ---- embed: out[r,:] = table[ids[r],:] ---- */

/* One 16-byte chunk (or one element when VEC is false) per loop step; ids
 * outside [0, vocab) are not checked here (the caller validates tokens). */
template <typename T, bool VEC>
__global__ void embed_kernel(T *__restrict__ out, const T *__restrict__ table, const int32_t *__restrict__ ids,
                             int rows, int dim)
{
    const int per = VEC ? Vec16<T>::N : 1;
    const int chunks = dim / per;
    size_t total = (size_t)rows * chunks, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int r = (int)(i / chunks), ch = (int)(i % chunks);
        const T *src = table + (size_t)ids[r] * dim + (size_t)ch * per;
        T *dst = out + (size_t)r * dim + (size_t)ch * per;
        if (VEC)
            store16(dst, load16(src));
        else
            *dst = *src;
    }
}

int cuda_embed(cuda_ctx *c, llmq_dtype dt, void *out, const void *table, const int32_t *ids, int rows, int dim)
{
    if (rows <= 0 || dim <= 0)
        return 0;
    DISPATCH_DT(dt, "embed", {
        const bool vec = dim % Vec16<T>::N == 0 && aligned16(out) && aligned16(table);
        size_t n = (size_t)rows * (vec ? dim / Vec16<T>::N : dim);
        if (vec)
            embed_kernel<T, true><<<grid_for(c, n, 256), 256, 0, c->stream>>>((T *)out, (const T *)table, ids, rows,
                                                                             dim);
        else
            embed_kernel<T, false><<<grid_for(c, n, 256), 256, 0, c->stream>>>((T *)out, (const T *)table, ids,
                                                                              rows, dim);
        LAUNCH_CHECK("embed");
    });
    return 0;
}

/* ---- binary elementwise maps ---- */

/* HF LlamaMLP: act_fn(gate) is a tensor in dt, then multiplied by up.
 * __fdividef is within 2 ulp; for g < -87 the denominator passes 2^126 and
 * it returns 0 where silu is below 1e-36 anyway. */
struct SiluMul {
    template <typename T> __device__ __forceinline__ float operator()(float g, float u) const
    {
        float s = round_to<T>(__fdividef(g, 1.0f + __expf(-g)));
        return s * u;
    }
};

struct Add {
    template <typename T> __device__ __forceinline__ float operator()(float x, float y) const { return x + y; }
};

/* out[i] = op(a[i], b[i]) rounded to T; out may alias a. Vectors first, then
 * the n % N tail, one element per thread. */
template <typename T, typename Op, bool VEC>
__global__ void map2_kernel(T *out, const T *a, const T *b, size_t n, Op op)
{
    pdl_wait();
    pdl_trigger();
    const int N = Vec16<T>::N;
    size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t nvec = VEC ? n / N : 0;
    for (size_t i = tid; i < nvec; i += stride) {
        Vec16<T> va = load16(a + i * N), vb = load16(b + i * N), vo;
#pragma unroll
        for (int j = 0; j < N; j++)
            vo.v[j] = from_f32<T>(op.template operator()<T>(to_f32(va.v[j]), to_f32(vb.v[j])));
        store16(out + i * N, vo);
    }
    for (size_t i = nvec * N + tid; i < n; i += stride)
        out[i] = from_f32<T>(op.template operator()<T>(to_f32(a[i]), to_f32(b[i])));
}

template <typename T, typename Op> static int launch_map2(cuda_ctx *c, T *out, const T *a, const T *b, size_t n)
{
    if (n == 0)
        return 0;
    bool vec = aligned16(out) && aligned16(a) && aligned16(b);
    size_t work = vec ? n / Vec16<T>::N + 1 : n;
    cudaError_t e = launch_pdl(vec ? map2_kernel<T, Op, true> : map2_kernel<T, Op, false>,
                               dim3((unsigned)grid_for(c, work, 256)), dim3(256), 0, c->stream, NULL, 0, out, a, b, n,
                               Op());
    if (e != cudaSuccess)
        return llmq_fail("elementwise: kernel launch failed: %s", cudaGetErrorString(e));
    return 0;
}

int cuda_silu_mul(cuda_ctx *c, llmq_dtype dt, void *out, const void *gate, const void *up, size_t n)
{
    DISPATCH_DT(dt, "silu_mul", return launch_map2<T, SiluMul>(c, (T *)out, (const T *)gate, (const T *)up, n));
    return 0;
}

int cuda_add(cuda_ctx *c, llmq_dtype dt, void *x, const void *y, size_t n)
{
    DISPATCH_DT(dt, "add", return launch_map2<T, Add>(c, (T *)x, (const T *)x, (const T *)y, n));
    return 0;
}

/* ---- y[r,j] += bias[j] (linear layers with a bias, e.g. Qwen's q/k/v) ---- */

template <typename T> __global__ void add_bias_kernel(T *y, const T *__restrict__ bias, int rows, int cols)
{
    size_t n = (size_t)rows * cols, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = from_f32<T>(to_f32(y[i]) + to_f32(bias[i % cols]));
}

int cuda_add_bias(cuda_ctx *c, llmq_dtype dt, void *y, const void *bias, int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return 0;
    DISPATCH_DT(dt, "linear bias", {
        add_bias_kernel<T><<<grid_for(c, (size_t)rows * cols, 256), 256, 0, c->stream>>>((T *)y, (const T *)bias,
                                                                                        rows, cols);
        LAUNCH_CHECK("linear bias");
    });
    return 0;
}
