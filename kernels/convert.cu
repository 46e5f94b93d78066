/* Float type conversion on the device: upload copies raw host bytes to the
 * GPU and converts there (the GPU converts far faster than the host feeds
 * it over PCIe); download_f32 converts into an f32 staging buffer first. */
#include "kernels/cuda_common.cuh"

template <typename Tout> __device__ __forceinline__ Tout cvt_from(float x) { return from_f32<Tout>(x); }
/* double -> half/bf16 goes through float: a double rounding, as the host's
 * llmq_convert also does (load_f casts F64 to float first). */

template <typename Tin, typename Tout>
__global__ void convert_kernel(Tout *__restrict__ dst, const Tin *__restrict__ src, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = cvt_from<Tout>(to_f32(src[i]));
}

template <typename Tin, typename Tout>
static int launch_convert(cuda_ctx *c, void *dst, const void *src, size_t n)
{
    convert_kernel<Tin, Tout><<<grid_for(c, n, 1024), 256, 0, c->stream>>>((Tout *)dst, (const Tin *)src, n);
    LAUNCH_CHECK("convert");
    return 0;
}

template <typename Tout> static int convert_to(cuda_ctx *c, void *dst, const void *src, llmq_dtype src_dt, size_t n)
{
    switch (src_dt) {
    case LLMQ_F32: return launch_convert<float, Tout>(c, dst, src, n);
    case LLMQ_F16: return launch_convert<__half, Tout>(c, dst, src, n);
    case LLMQ_BF16: return launch_convert<__nv_bfloat16, Tout>(c, dst, src, n);
    case LLMQ_F64: return launch_convert<double, Tout>(c, dst, src, n);
    default: return llmq_fail("convert: unsupported source type %s", llmq_dtype_name(src_dt));
    }
}

int cuda_convert(cuda_ctx *c, void *dst, llmq_dtype dst_dt, const void *src, llmq_dtype src_dt, size_t n)
{
    if (n == 0)
        return 0;
    if (dst_dt == src_dt) {
        CUDA_TRY(cudaMemcpyAsync(dst, src, n * llmq_dtype_size(dst_dt), cudaMemcpyDeviceToDevice, c->stream));
        return 0;
    }
    DISPATCH_DT(dst_dt, "convert", return convert_to<T>(c, dst, src, src_dt, n));
    return 0;
}
