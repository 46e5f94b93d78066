/* W8A8 (SmoothQuant's int8 weights x int8 activations) reference
 * arithmetic in C, the definitions kernels/w8a8.cu is checked against.
 *
 * Quantization grids (SmoothQuant, fake_quant.py):
 *   weights, per output channel n:  s_ch[n]  = max(max_k |W[n,k]|, 1e-5) / 127
 *   activations, per token r:       s_tok[r] = max(max_j |x[r,j]|, 1e-5) / 127
 *   q = clamp(rint(v / s), -127, 127)          (round half to even, fp32 division)
 * so q * s is exactly what the backend's fq_per_token(qmax = 127) stores.
 *
 * Linear: acc[m,n] = sum_k xq[m,k] * wq[n,k] in int32 (exact), then
 *   y[m,n] = ((float)acc[m,n] * s_tok[m]) * s_ch[n]   in fp32, rounded once to dt.
 *
 * The fused producers mirror Hugging Face's rounding for storage type dt
 * (F32, F16 or BF16; inputs are floats already representable in dt, and
 * rnd() below means "store in dt and read back"):
 *   rmsnorm_quant:  x = rnd(x + delta)                   (the new residual, if delta)
 *                   inv = 1 / sqrt(mean(x^2) + eps)      (fp32)
 *                   y = rnd(w * rnd(x * inv))            (LlamaRMSNorm)
 *                   then per-token int8 of y
 *   silu_mul_quant: y = rnd(rnd(silu(gate)) * up)        (LlamaMLP's act_fn(gate) * up)
 *                   then per-token int8 of y
 * The GPU sums mean(x^2) in another order, so its codes may differ from
 * these by one step in rare elements; tests compare with that tolerance. */
#ifndef LLMQ_QUANT_W8A8_REF_H
#define LLMQ_QUANT_W8A8_REF_H

#include <stdint.h>

#include "src/dtype.h"

/* Per-token int8 of x [rows, cols]: q [rows, cols], scale [rows]. */
void quant_per_token_ref(const float *x, int rows, int cols, int8_t *q, float *scale);

/* Residual add + RMSNorm + per-token int8 (see above). x [rows, dim] is
 * updated in place to x + delta when delta != NULL (the residual stream a
 * decoder layer carries on), left unchanged otherwise. w [dim]. */
void rmsnorm_quant_ref(llmq_dtype dt, float *x, const float *delta, const float *w, int rows, int dim, float eps,
                       int8_t *q, float *scale);

/* silu(gate) * up + per-token int8. gate and up are [rows, cols] with row
 * stride ld (>= cols): separate tensors (ld = cols) or the two halves of a
 * fused gate_up output (ld = 2 * cols, up = gate + cols). */
void silu_mul_quant_ref(llmq_dtype dt, const float *gate, const float *up, int ld, int rows, int cols, int8_t *q,
                        float *scale);

/* acc [M,N] = x [M,K] . w [N,K]^T in int32, and/or y [M,N] = rnd((acc *
 * s_tok[m]) * s_ch[n]) as floats rounded through dt. Either output may be
 * NULL (s_tok/s_ch unused when y is NULL). */
void int8_gemm_ref(const int8_t *x, const float *s_tok, const int8_t *w, const float *s_ch, int M, int N, int K,
                   int32_t *acc, float *y, llmq_dtype dt);

/* SmoothQuant's quantize_weight_per_channel_absmax, n_bits 8: w [N,K] ->
 * q [N,K], scale [N]. */
void w8_quantize_per_channel(const float *w, int N, int K, int8_t *q, float *scale);

#endif
