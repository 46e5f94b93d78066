/* The reference W4A16 / W8A16 product on the GPTQ layout: what the CUDA
 * kernels (kernels/wna16.h) must compute, in plain C.
 *
 *     y[m, n] = sum_k x[m, k] * W[n, k],
 *     W[n, k] = scales[g][n] * (q[k, n] - zero[g][n]),   g = g_idx[k]
 *
 * with the GPTQ tensors of /work/shared/docs/FORMATS.md and quant/pack.h:
 * qweight int32 [K*b/32, N] (q[k, n] = bits b*(k%pf) of word [k/pf, n],
 * pf = 32/b), qzeros int32 [ng, N*b/32] (field of (g, n) = bits b*(n%pf) of
 * word [g, n/pf]; zero = field + 1 for v1 "gptq", field for v2 "gptq_v2"),
 * scales fp16 [ng, N], g_idx int32 [K]. ng = max(g_idx) + 1. Act-order
 * needs nothing special: g_idx says where each input channel's grid is.
 *
 * W is formed in fp32 (s * (q - z) is exact there: an fp16 scale times an
 * integer below 2^9) and the product accumulates in fp32 (one sgemm per
 * block of output channels, so memory stays bounded on 11008 x 11008). */
#ifndef LLMQ_QUANT_WNA16_REF_H
#define LLMQ_QUANT_WNA16_REF_H

#include <stdint.h>

/* x [M, K] fp32, y [M, N] fp32; bits 4 or 8; K*bits and N*bits multiples
 * of 32; every g_idx entry >= 0. Returns 0, or -1 with llmq_fail() on bad
 * arguments or out of memory. */
int wna16_gemm_ref(const float *x, const int32_t *qweight, const int32_t *qzeros, const uint16_t *scales_f16,
                   const int32_t *g_idx, int M, int K, int N, int bits, int v2, float *y);

/* Only the dequantized weight: W [N, K] fp32 as above (rows n0..n0+nrows). */
int wna16_dequant_ref(const int32_t *qweight, const int32_t *qzeros, const uint16_t *scales_f16,
                      const int32_t *g_idx, int K, int N, int bits, int v2, int n0, int nrows, float *W);

#endif
