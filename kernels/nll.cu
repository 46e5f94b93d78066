/* Summed negative log-likelihood of the targets under softmax(logits).
 *
 * One block per row makes one pass over the logits with an online softmax
 * (running max m and sum s of exp(x - m) per thread, merged across the
 * block), then writes the row's loss m + log(s) - logit[target] in double.
 * A second one-block kernel sums the row losses in double in a fixed order,
 * so the result does not depend on scheduling. */
#include "kernels/cuda_common.cuh"

/* Fold value x into the running (m, s). */
__device__ __forceinline__ void online_add(float &m, float &s, float x)
{
    if (x > m) {
        s = s * __expf(m - x) + 1.0f;
        m = x;
    } else {
        s += __expf(x - m);
    }
}

/* Merge (m2, s2) into (m, s); an empty state has m = -inf, s = 0. */
__device__ __forceinline__ void online_merge(float &m, float &s, float m2, float s2)
{
    float mx = fmaxf(m, m2);
    if (mx == -INFINITY)
        return;
    s = (m == -INFINITY ? 0.0f : s * __expf(m - mx)) + (m2 == -INFINITY ? 0.0f : s2 * __expf(m2 - mx));
    m = mx;
}

template <typename T, bool VEC>
__global__ void nll_rows_kernel(double *__restrict__ row_loss, const T *__restrict__ logits,
                                const int32_t *__restrict__ targets, int vocab)
{
    __shared__ float sm[32], ss[32];
    const int r = blockIdx.x;
    const int t = targets[r];
    if (t < 0 || t >= vocab) { /* ignored position (HF's -100) */
        if (threadIdx.x == 0)
            row_loss[r] = 0.0;
        return;
    }
    const T *l = logits + (size_t)r * vocab;
    float m = -INFINITY, s = 0.0f;
    if (VEC) {
        const int N = Vec16<T>::N;
        for (int ch = threadIdx.x; ch < vocab / N; ch += blockDim.x) {
            Vec16<T> v = load16(l + ch * N);
#pragma unroll
            for (int j = 0; j < Vec16<T>::N; j++)
                online_add(m, s, to_f32(v.v[j]));
        }
    } else {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x)
            online_add(m, s, to_f32(l[i]));
    }
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        online_merge(m, s, m2, s2);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            online_merge(m, s, sm[w], ss[w]);
        /* log in double, as the CPU reference does; s >= 1 here. */
        row_loss[r] = (double)m + log((double)s) - (double)to_f32(l[t]);
    }
}

__global__ void sum_rows_kernel(double *__restrict__ out, const double *__restrict__ rows, int n)
{
    __shared__ double sh[1024];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        acc += rows[i];
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w)
            sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        *out = sh[0];
}

int cuda_nll(cuda_ctx *c, llmq_dtype dt, double *nll, const void *logits, const int32_t *targets, int rows,
             int vocab)
{
    *nll = 0.0;
    if (rows <= 0 || vocab <= 0)
        return 0;
    if (rows > c->nll_cap) {
        /* cudaFree synchronizes the device, so the old buffer is idle. */
        if (c->nll_rows)
            CUDA_TRY(cudaFree(c->nll_rows));
        c->nll_rows = NULL;
        c->nll_cap = 0;
        CUDA_TRY(cudaMalloc((void **)&c->nll_rows, (size_t)rows * sizeof(double)));
        c->nll_cap = rows;
    }
    DISPATCH_DT(dt, "nll", {
        const bool vec = vocab % Vec16<T>::N == 0 && aligned16(logits);
        if (vec)
            nll_rows_kernel<T, true><<<rows, 256, 0, c->stream>>>(c->nll_rows, (const T *)logits, targets, vocab);
        else
            nll_rows_kernel<T, false><<<rows, 256, 0, c->stream>>>(c->nll_rows, (const T *)logits, targets, vocab);
        LAUNCH_CHECK("nll");
    });
    sum_rows_kernel<<<1, 1024, 0, c->stream>>>(c->nll_sum, c->nll_rows, rows);
    LAUNCH_CHECK("nll sum");
    CUDA_TRY(cudaMemcpyAsync(nll, c->nll_sum, sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    return 0;
}
