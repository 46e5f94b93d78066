/* Linked when llmq is built without CUDA (-Dcuda=disabled or no nvcc). */
#include "backend.h"
#include "error.h"

int llmq_backend_cuda(llmq_backend **out, int device, llmq_dtype dt)
{
    (void)device;
    (void)dt;
    *out = NULL;
    return llmq_fail("this llmq was built without CUDA support (rebuild with -Dcuda=enabled)");
}

int llmq_cuda_available(void) { return 0; }
