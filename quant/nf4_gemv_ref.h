/* NF4 matrix-vector product, the reference for kernels/nf4_gemv.cu.
 *
 * W is [N, K] (Hugging Face [out, in]) quantized by nf4_quantize() over its
 * flattened row-major values (quant/nf4.h: blocks of 64 consecutive values,
 * which straddle rows when K % 64 != 0; absmax plain or double-quantized).
 * y [M, N] = x [M, K] . dequant(W)^T with the weights dequantized exactly as
 * nf4_dequantize() does (nf4_code[q] * absmax in fp32) and the dot products
 * summed in double. */
#ifndef LLMQ_QUANT_NF4_GEMV_REF_H
#define LLMQ_QUANT_NF4_GEMV_REF_H

#include "quant/nf4.h"

/* Returns 0, or -1 with llmq_fail() (q->n != N * K, or out of memory). */
int nf4_gemv_ref(const llmq_nf4 *q, int N, int K, const float *x, int M, float *y);

#endif
