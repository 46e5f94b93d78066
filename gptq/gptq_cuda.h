/* GPTQ on the GPU: the same solve as gptq/gptq.h, on the current CUDA device.
 *
 * gptq_solve_cuda has exactly gptq_solve's contract and follows it step by
 * step (dead channels, group -1 and static grids, the act-order permutation
 * computed on the host the same way, damping retries, lazy batch blocks,
 * dynamic grids read from W as the reference reads them, the same loss), in
 * fp32 with the same float operations in the per-column work (IEEE division,
 * no fused multiply-add), so that its codes equal the CPU solver's up to the
 * rounding of the two large products, which are done by other libraries:
 *
 *   - U (upper Cholesky factor of H^-1) as in gptq/hinv.c: potrf of the
 *     order-reversed J H J, trtri, reflected (cuSOLVER instead of LAPACK);
 *   - the trailing update W[:, i2:] -= Err @ U[i1:i2, i2:] per block by one
 *     cublasSgemm in plain fp32 (never TF32) instead of OpenBLAS.
 *
 * Those roundings differ from the CPU's, so a weight that sits within
 * rounding of a grid step's midpoint may get the other code, and the rest
 * of its row then takes a different (equally good) path; expect nearly all
 * codes to agree, not all.
 *
 * H is left untouched (gptq_solve destroys it; callers may assume either).
 * Device memory: about 2 K^2 + 2.5 N K floats. Only declared where the
 * library is built with CUDA (LLMQ_HAVE_CUDA). */
#ifndef LLMQ_GPTQ_GPTQ_CUDA_H
#define LLMQ_GPTQ_GPTQ_CUDA_H

#include "gptq/gptq.h"

#ifdef LLMQ_HAVE_CUDA

/* 1 when a CUDA device is usable, else 0 (never fails). */
int gptq_cuda_available(void);

/* gptq_solve (gptq/gptq.h) on the current CUDA device: W [out, in] host,
 * in/out; H [in, in] host, read only; res allocated here; st may be NULL.
 * p->threads is ignored. Returns 0, or -1 with llmq_fail() (bad parameters,
 * NaN/Inf, a Hessian no damping makes positive definite, out of host or
 * device memory, or a failed CUDA/cuBLAS/cuSOLVER call, named in the
 * message). */
int gptq_solve_cuda(float *W, int out, int in, float *H, const gptq_params *p, llmq_qweight *res, gptq_stats *st);

#endif

#endif
