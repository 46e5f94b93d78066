/* Per-token symmetric fake quantization (SmoothQuant's quantize_per_token):
 *   s = max(max|x[r,:]|, 1e-5) / qmax,  x = rint(x / s) * s,
 * one block per row. The divisions are IEEE (__fdiv_rn) even under
 * --use_fast_math: an approximate quotient near a .5 boundary would round
 * to the other integer and move the element by a whole step s. */
#include "kernels/cuda_common.cuh"

template <typename T, bool VEC> __global__ void fq_per_token_kernel(T *x, int cols, int qmax)
{
    __shared__ float shm[32];
    constexpr int N = VEC ? Vec16<T>::N : 1;
    T *row = x + (size_t)blockIdx.x * cols;
    const int chunks = cols / N;

    float mx = 0.0f;
    for (int ch = threadIdx.x; ch < chunks; ch += blockDim.x) {
        if (VEC) {
            Vec16<T> v = load16(row + ch * N);
#pragma unroll
            for (int j = 0; j < N; j++)
                mx = fmaxf(mx, fabsf(to_f32(v.v[j])));
        } else {
            mx = fmaxf(mx, fabsf(to_f32(row[ch])));
        }
    }
    mx = block_max(mx, shm);
    const float s = __fdiv_rn(fmaxf(mx, 1e-5f), (float)qmax);

    for (int ch = threadIdx.x; ch < chunks; ch += blockDim.x) {
        if (VEC) {
            Vec16<T> v = load16(row + ch * N);
#pragma unroll
            for (int j = 0; j < N; j++)
                v.v[j] = from_f32<T>(rintf(__fdiv_rn(to_f32(v.v[j]), s)) * s);
            store16(row + ch * N, v);
        } else {
            row[ch] = from_f32<T>(rintf(__fdiv_rn(to_f32(row[ch]), s)) * s);
        }
    }
}

int cuda_fq_per_token(cuda_ctx *c, llmq_dtype dt, void *x, int rows, int cols, int qmax)
{
    if (rows <= 0 || cols <= 0)
        return 0;
    if (qmax <= 0)
        return llmq_fail("fq_per_token: qmax %d must be positive", qmax);
    DISPATCH_DT(dt, "fq_per_token", {
        const bool vec = cols % Vec16<T>::N == 0 && aligned16(x);
        int chunks = vec ? cols / Vec16<T>::N : cols;
        int threads = chunks >= 512 ? 512 : (chunks + 31) / 32 * 32;
        if (vec)
            fq_per_token_kernel<T, true><<<rows, threads, 0, c->stream>>>((T *)x, cols, qmax);
        else
            fq_per_token_kernel<T, false><<<rows, threads, 0, c->stream>>>((T *)x, cols, qmax);
        LAUNCH_CHECK("fq_per_token");
    });
    return 0;
}

/* Static per-tensor fake quantization with a calibrated scale:
 * x = clamp(rint(x / scale), -qmax - 1, qmax) * scale, 16-byte vectors
 * with a scalar tail. */
template <typename T> __device__ __forceinline__ T fq_one(T v, float scale, float lo, float hi)
{
    float q = rintf(__fdiv_rn(to_f32(v), scale));
    return from_f32<T>(fminf(fmaxf(q, lo), hi) * scale);
}

template <typename T, bool VEC> __global__ void fq_tensor_kernel(T *x, size_t n, float scale, float lo, float hi)
{
    const int N = Vec16<T>::N;
    size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t nvec = VEC ? n / N : 0;
    for (size_t i = tid; i < nvec; i += stride) {
        Vec16<T> v = load16(x + i * N);
#pragma unroll
        for (int j = 0; j < N; j++)
            v.v[j] = fq_one(v.v[j], scale, lo, hi);
        store16(x + i * N, v);
    }
    for (size_t i = nvec * N + tid; i < n; i += stride)
        x[i] = fq_one(x[i], scale, lo, hi);
}

int cuda_fq_tensor(cuda_ctx *c, llmq_dtype dt, void *x, size_t n, float scale, int qmax)
{
    if (n == 0)
        return 0;
    /* No checks on scale or qmax: the same arithmetic as the CPU reference
     * for any value (a zero scale gives its NaN/Inf too). */
    const float lo = (float)(-qmax - 1), hi = (float)qmax;
    DISPATCH_DT(dt, "fq_tensor", {
        const bool vec = aligned16(x);
        size_t work = vec ? n / Vec16<T>::N + 1 : n;
        if (vec)
            fq_tensor_kernel<T, true><<<grid_for(c, work, 256), 256, 0, c->stream>>>((T *)x, n, scale, lo, hi);
        else
            fq_tensor_kernel<T, false><<<grid_for(c, work, 256), 256, 0, c->stream>>>((T *)x, n, scale, lo, hi);
        LAUNCH_CHECK("fq_tensor");
    });
    return 0;
}
