/* CUDA-backend extras beyond the operation table of src/backend.h, for C
 * callers that time or interleave their own GPU work with the backend's.
 * Only defined when llmq is built with CUDA (LLMQ_HAVE_CUDA). */
#ifndef LLMQ_KERNELS_BACKEND_CUDA_H
#define LLMQ_KERNELS_BACKEND_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

#include "src/backend.h"

/* The cudaStream_t (as void *) on which backend b enqueues all its work,
 * or NULL if b is not a CUDA backend. Record cudaEvents on it to time
 * operations. */
void *llmq_cuda_stream(llmq_backend *b);

/* Benchmark knob of the int8 KV-cache decode attention (kernels/kv_cache.cu):
 * 0 = the fp32 kernel, 1 = the tensor-core kernel with 16 keys per warp
 * step, 2 = 32 keys, 3 (default) = 16 keys with the next step's loads in
 * flight. Process-wide, not thread-safe; -1 for other values. */
int llmq_kv8_tune(int mode);

#ifdef __cplusplus
}
#endif

#endif
