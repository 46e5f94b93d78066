/* LlamaRMSNorm, one block per row:
 *   h = x * rsqrt(mean(x^2) + eps)   in fp32,
 *   out = w * h.to(dt)               (HF: weight * hidden_states.to(input_dtype)).
 * The row is read twice; the second pass hits L1/L2 (a 4096-wide bf16 row
 * is 8 KB). Launched with programmatic dependent launch (cuda_common.cuh). */
#include "kernels/cuda_common.cuh"

template <typename T, bool VEC>
__global__ void rmsnorm_kernel(T *out, const T *x, const T *__restrict__ w, int dim,
                               float eps)
{
    __shared__ float shm[32];
    pdl_wait();
    pdl_trigger();
    const int N = VEC ? Vec16<T>::N : 1;
    const T *xr = x + (size_t)blockIdx.x * dim;
    T *orow = out + (size_t)blockIdx.x * dim;
    const int chunks = dim / N;

    float ss = 0.0f;
    for (int ch = threadIdx.x; ch < chunks; ch += blockDim.x) {
        if (VEC) {
            Vec16<T> v = load16(xr + ch * N);
#pragma unroll
            for (int j = 0; j < Vec16<T>::N; j++) {
                float f = to_f32(v.v[j]);
                ss += f * f;
            }
        } else {
            float f = to_f32(xr[ch]);
            ss += f * f;
        }
    }
    ss = block_sum(ss, shm);
    const float inv = rsqrtf(ss / (float)dim + eps);

    for (int ch = threadIdx.x; ch < chunks; ch += blockDim.x) {
        if (VEC) {
            Vec16<T> v = load16(xr + ch * N), wv = load16(w + ch * N), o;
#pragma unroll
            for (int j = 0; j < Vec16<T>::N; j++)
                o.v[j] = from_f32<T>(to_f32(wv.v[j]) * round_to<T>(to_f32(v.v[j]) * inv));
            store16(orow + ch * N, o);
        } else {
            orow[ch] = from_f32<T>(to_f32(w[ch]) * round_to<T>(to_f32(xr[ch]) * inv));
        }
    }
}

int cuda_rmsnorm(cuda_ctx *c, llmq_dtype dt, void *out, const void *x, const void *w, int rows, int dim, float eps)
{
    if (rows <= 0 || dim <= 0)
        return 0;
    DISPATCH_DT(dt, "rmsnorm", {
        const int N = Vec16<T>::N;
        const bool vec = dim % N == 0 && aligned16(out) && aligned16(x) && aligned16(w);
        int chunks = vec ? dim / N : dim;
        /* Enough threads for one chunk each up to 1024, at least a warp. */
        int threads = chunks >= 1024 ? 1024 : (chunks + 31) / 32 * 32;
        cudaError_t e = launch_pdl(vec ? rmsnorm_kernel<T, true> : rmsnorm_kernel<T, false>, dim3(rows),
                                   dim3(threads), 0, c->stream, NULL, 0, (T *)out, (const T *)x, (const T *)w, dim,
                                   eps);
        if (e != cudaSuccess)
            return llmq_fail("rmsnorm: kernel launch failed: %s", cudaGetErrorString(e));
    });
    return 0;
}
