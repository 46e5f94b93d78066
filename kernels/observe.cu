/* Calibration observers: per-column running max and sum of |x|, per-row
 * max of |x| (col_absmax is the first of these alone).
 *
 * x can be 262144 x 4096 (a whole calibration set through one layer), so
 * this must run at memory bandwidth. A block is 32 x 8 threads over a strip
 * of 32 column chunks (16 bytes each) and a slice of rows: a warp reads 512
 * contiguous bytes of one row, each thread keeps its chunk's column maxima
 * and sums in registers with four rows' loads in flight, the 8 row lanes
 * are merged in shared memory, and one atomic per column and block folds
 * the result into the outputs. Row maxima are reduced across the warp and
 * folded with one atomic per row and strip. Non-negative floats order like
 * their bit patterns as signed ints, so atomicMax on the bits is a float
 * max. fmaxf drops NaN as the CPU reference's '>' does. */
#include "kernels/cuda_common.cuh"

#define CA_ROWS 8   /* threadIdx.y extent */
#define CA_UNROLL 4 /* rows loaded before they are used */

__device__ __forceinline__ void atomic_max_nonneg(float *p, float v)
{
    atomicMax(reinterpret_cast<int *>(p), __float_as_int(v));
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(32 * CA_ROWS)
    stats_kernel(float *__restrict__ col_amax, float *__restrict__ col_sum, float *__restrict__ row_amax,
                 const T *__restrict__ x, int rows, int cols)
{
    constexpr int N = VEC ? Vec16<T>::N : 1;
    __shared__ float part[CA_ROWS][32 * N];
    const int chunk = blockIdx.x * 32 + threadIdx.x; /* column chunk of this thread */
    const int nchunks = cols / N;
    const bool active = chunk < nchunks;
    float m[N], s[N];
#pragma unroll
    for (int j = 0; j < N; j++)
        m[j] = s[j] = 0.0f;

    /* Fold one row's chunk into the column state; returns the chunk's max. */
    auto fold = [&](const Vec16<T> &v) {
        float rm = 0.0f;
#pragma unroll
        for (int j = 0; j < N; j++) {
            float a = fabsf(to_f32(v.v[j]));
            m[j] = fmaxf(m[j], a);
            s[j] += a;
            rm = fmaxf(rm, a);
        }
        return rm;
    };
    auto row_done = [&](int r, float rm) { /* warp-uniform r */
        if (row_amax) {
            rm = warp_max(rm);
            if (threadIdx.x == 0)
                atomic_max_nonneg(row_amax + r, rm);
        }
    };

    const int step = gridDim.y * CA_ROWS;
    const T *p = x + (size_t)(active ? chunk : 0) * N;
    int r = blockIdx.y * CA_ROWS + threadIdx.y;
    for (; r + (CA_UNROLL - 1) * step < rows; r += CA_UNROLL * step) {
        Vec16<T> buf[CA_UNROLL]; /* the scalar path uses v[0] only */
#pragma unroll
        for (int u = 0; u < CA_UNROLL; u++) {
            const T *src = p + (size_t)(r + u * step) * cols;
            if (!active)
                buf[u].v[0] = from_f32<T>(0.0f); /* keep shapes; contributes nothing */
            else if (VEC)
                buf[u] = load16(src);
            else
                buf[u].v[0] = *src;
            if (!active || !VEC)
#pragma unroll
                for (int j = 1; j < Vec16<T>::N; j++)
                    buf[u].v[j] = from_f32<T>(0.0f);
        }
#pragma unroll
        for (int u = 0; u < CA_UNROLL; u++)
            row_done(r + u * step, fold(buf[u]));
    }
    for (; r < rows; r += step) {
        Vec16<T> v;
#pragma unroll
        for (int j = 0; j < Vec16<T>::N; j++)
            v.v[j] = from_f32<T>(0.0f);
        if (active) {
            if (VEC)
                v = load16(p + (size_t)r * cols);
            else
                v.v[0] = p[(size_t)r * cols];
        }
        row_done(r, fold(v));
    }

    if (col_amax) {
#pragma unroll
        for (int j = 0; j < N; j++)
            part[threadIdx.y][threadIdx.x * N + j] = m[j];
        __syncthreads();
        for (int i = threadIdx.y * 32 + threadIdx.x; i < 32 * N; i += 32 * CA_ROWS) {
            float v = part[0][i];
#pragma unroll
            for (int y = 1; y < CA_ROWS; y++)
                v = fmaxf(v, part[y][i]);
            int col = blockIdx.x * 32 * N + i;
            if (col < nchunks * N)
                atomic_max_nonneg(col_amax + col, v);
        }
        __syncthreads(); /* part is reused below */
    }
    if (col_sum) {
#pragma unroll
        for (int j = 0; j < N; j++)
            part[threadIdx.y][threadIdx.x * N + j] = s[j];
        __syncthreads();
        for (int i = threadIdx.y * 32 + threadIdx.x; i < 32 * N; i += 32 * CA_ROWS) {
            float v = part[0][i];
#pragma unroll
            for (int y = 1; y < CA_ROWS; y++)
                v += part[y][i];
            int col = blockIdx.x * 32 * N + i;
            if (col < nchunks * N)
                atomicAdd(col_sum + col, v);
        }
    }
}

static int launch_stats(cuda_ctx *c, llmq_dtype dt, float *col_amax, float *col_sum, float *row_amax, const void *x,
                        int rows, int cols, const char *what)
{
    if (rows <= 0 || cols <= 0)
        return 0;
    if (row_amax) /* an assignment, not a running max: start from 0 (|x| >= 0) */
        CUDA_TRY(cudaMemsetAsync(row_amax, 0, (size_t)rows * sizeof(float), c->stream));
    DISPATCH_DT(dt, what, {
        const int N = Vec16<T>::N;
        const bool vec = cols % N == 0 && aligned16(x);
        const int nchunks = vec ? cols / N : cols;
        dim3 block(32, CA_ROWS);
        unsigned gx = ceil_div(nchunks, 32);
        /* Row slices: about 8 blocks per SM in all, each slice >= 8 rows. */
        unsigned gy = (unsigned)((size_t)c->num_sms * 8 / gx);
        unsigned max_gy = ceil_div(rows, CA_ROWS);
        gy = gy < 1 ? 1 : gy > max_gy ? max_gy : gy;
        if (gy > 65535)
            gy = 65535;
        dim3 grid(gx, gy);
        if (vec)
            stats_kernel<T, true><<<grid, block, 0, c->stream>>>(col_amax, col_sum, row_amax, (const T *)x, rows,
                                                                cols);
        else
            stats_kernel<T, false><<<grid, block, 0, c->stream>>>(col_amax, col_sum, row_amax, (const T *)x, rows,
                                                                 cols);
        LAUNCH_CHECK(what);
    });
    return 0;
}

int cuda_col_absmax(cuda_ctx *c, llmq_dtype dt, float *amax, const void *x, int rows, int cols)
{
    return launch_stats(c, dt, amax, NULL, NULL, x, rows, cols, "col_absmax");
}

int cuda_act_stats(cuda_ctx *c, llmq_dtype dt, float *col_amax, float *col_abssum, float *row_amax, const void *x,
                   int rows, int cols)
{
    if (!col_amax && !col_abssum && !row_amax)
        return 0;
    return launch_stats(c, dt, col_amax, col_abssum, row_amax, x, rows, cols, "act_stats");
}
