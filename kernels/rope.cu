/* In-place rotate-half RoPE, HF layout (element i pairs with i + head_dim/2).
 *
 * HF computes q * cos + rotate_half(q) * sin with cos and sin cast to the
 * activation dtype and every product and sum a tensor in that dtype; the
 * kernel rounds at the same points, so bf16 results match PyTorch's rather
 * than an fp32 rotation rounded once.
 *
 * One block per row (its position, row % seq, is computed once). In the
 * fast path each thread rotates 16 bytes of the first half of a head with
 * the matching 16 bytes of the second half; otherwise one pair a thread.
 * No 64-bit division per element: that alone made an earlier version
 * several times slower than its memory traffic. Launched with programmatic
 * dependent launch (cuda_common.cuh). */
#include "kernels/cuda_common.cuh"

template <typename T> __device__ __forceinline__ void rotate(T &a, T &b, float c, float s)
{
    float x1 = to_f32(a), x2 = to_f32(b);
    a = from_f32<T>(round_to<T>(x1 * c) - round_to<T>(x2 * s));
    b = from_f32<T>(round_to<T>(x2 * c) + round_to<T>(x1 * s));
}

template <typename T, bool VEC>
__global__ void rope_kernel(T *x, const float *__restrict__ cos_sin, int seq, int n_heads, int head_dim,
                            const int32_t *__restrict__ pos_dev)
{
    pdl_wait();
    pdl_trigger();
    constexpr int N = VEC ? Vec16<T>::N : 1;
    const int half = head_dim / 2, per_head = half / N;
    const int pos = (pos_dev ? *pos_dev : 0) + (int)(blockIdx.x % seq);
    const float *cs = cos_sin + (size_t)pos * head_dim;
    T *row = x + (size_t)blockIdx.x * n_heads * head_dim;
    for (int u = threadIdx.x; u < n_heads * per_head; u += blockDim.x) {
        const int h = u / per_head, i = (u - h * per_head) * N;
        T *v = row + h * head_dim + i;
        if (VEC) {
            Vec16<T> a = load16(v), b = load16(v + half);
            float cv[N], sv[N]; /* the table row is 16-byte aligned here: float4 loads */
#pragma unroll
            for (int j = 0; j < N; j += 4) {
                *reinterpret_cast<float4 *>(cv + j) = *reinterpret_cast<const float4 *>(cs + i + j);
                *reinterpret_cast<float4 *>(sv + j) = *reinterpret_cast<const float4 *>(cs + half + i + j);
            }
#pragma unroll
            for (int j = 0; j < N; j++)
                rotate(a.v[j], b.v[j], round_to<T>(cv[j]), round_to<T>(sv[j]));
            store16(v, a);
            store16(v + half, b);
        } else {
            rotate(v[0], v[half], round_to<T>(cs[i]), round_to<T>(cs[half + i]));
        }
    }
}

int cuda_rope(cuda_ctx *c, llmq_dtype dt, void *x, const float *cos_sin, int rows, int seq, int n_heads,
              int head_dim, const int32_t *pos_dev)
{
    if (rows <= 0 || n_heads <= 0 || head_dim < 2)
        return 0;
    if (seq <= 0 || head_dim % 2)
        return llmq_fail("rope: bad shape (seq %d, head_dim %d)", seq, head_dim);
    DISPATCH_DT(dt, "rope", {
        const int N = Vec16<T>::N;
        const bool vec = (head_dim / 2) % N == 0 && aligned16(x) && aligned16(cos_sin);
        const int units = n_heads * (head_dim / 2) / (vec ? N : 1);
        const int threads = units >= 256 ? 256 : (units + 31) / 32 * 32;
        cudaError_t e = launch_pdl(vec ? rope_kernel<T, true> : rope_kernel<T, false>, dim3(rows), dim3(threads), 0,
                                   c->stream, NULL, 0, (T *)x, cos_sin, seq, n_heads, head_dim, pos_dev);
        if (e != cudaSuccess)
            return llmq_fail("rope: kernel launch failed: %s", cudaGetErrorString(e));
    });
    return 0;
}
