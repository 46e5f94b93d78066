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

#ifdef __cplusplus
}
#endif

#endif
