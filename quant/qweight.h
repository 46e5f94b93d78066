/* The common result of quantizing the weight of one linear layer.
 *
 * W is [out = N, in = K] in the Hugging Face layout (row n = output channel).
 * Every integer method (RTN, GPTQ, AWQ-style) produces the same thing: a code
 * per weight, and per (group, output channel) a scale and an integer-valued
 * zero point, with
 *
 *     W[n,k] ~= scales[g][n] * (q[n,k] - zeros[g][n]),   g = g_idx[k].
 *
 * Groups are runs of `group` consecutive input channels (in quantization
 * order); ngroups = ceil(K / group), so a group size that does not divide K
 * leaves a shorter last group, as the GPTQ reference does (stories260K's
 * down_proj has K = 172 with group 32). group = -1 means one group over the
 * whole row. With act-order the rows of scales/zeros follow quantization
 * order and g_idx maps each original input channel to its row; codes are
 * always stored in the ORIGINAL input-channel order.
 *
 * scales/zeros are [ngroups, out] like the GPTQ checkpoint's `scales`, so an
 * exporter copies rows; llmq's own layout transposes (quant/pack.h). */
#ifndef LLMQ_QUANT_QWEIGHT_H
#define LLMQ_QUANT_QWEIGHT_H

#include <stdint.h>

typedef struct {
    int out, in, bits, group /* >0, or -1 = whole K */, sym, ngroups;
    uint8_t *q;     /* [out, in] codes 0..2^bits-1, original input-channel order */
    float *scales;  /* [ngroups, out] */
    float *zeros;   /* [ngroups, out], integer-valued zero points */
    int32_t *g_idx; /* [in]: group row of input channel k */
} llmq_qweight;

/* ceil(in / group), or 1 for group -1 (or a group not smaller than in).
 * Returns -1 for in <= 0 or group == 0 / < -1. */
int qweight_ngroups(int in, int group);

/* Validate the shape (out, in > 0; bits 2..8; group > 0 or -1) and allocate
 * all arrays zeroed, with g_idx[k] = k / group (0 for group -1). On failure
 * returns -1 with llmq_fail() and leaves *qw empty. */
int qweight_alloc(llmq_qweight *qw, int out, int in, int bits, int group, int sym);

/* Free the arrays and zero the struct; safe on a zeroed or freed struct. */
void qweight_free(llmq_qweight *qw);

/* W[n,k] = scales[g_idx[k]][n] * (q[n,k] - zeros[g_idx[k]][n]) in fp32,
 * the same operation (and so the same bits) as the reference's fake-quant. */
void qweight_dequant(const llmq_qweight *qw, float *W);

#endif
