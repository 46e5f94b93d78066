/* Round-to-nearest (RTN) integer quantization with the GPTQ reference's grid.
 *
 * This file defines the grid every integer method in llmq uses: the
 * `Quantizer.find_params` (per channel, weight=True) and `quantize` of the
 * GPTQ reference implementation (IST-DASLab/gptq, quant.py), in fp32 and in
 * the same order of float operations, so that llmq's RTN equals the
 * reference's RTN bit for bit and the GPTQ solver (gptq/gptq.h) can reuse it:
 *
 *   xmin = min(min(x), 0), xmax = max(max(x), 0)
 *   sym:  xmax = max(|xmin|, xmax); if xmin < 0: xmin = -xmax
 *         (a row with no negative value keeps xmin = 0: the reference then
 *          uses only the upper half of the grid, and so do we)
 *   xmin == xmax == 0: xmin = -1, xmax = 1
 *   scale = (xmax - xmin) / maxq                      (maxq = 2^bits - 1)
 *   zero  = sym ? (maxq + 1) / 2 : round(-xmin / scale)
 *   q     = clamp(round(x / scale) + zero, 0, maxq)
 *   deq   = scale * (q - zero)
 *
 * round() is round-half-to-even (torch.round), i.e. nearbyintf in the
 * default rounding mode (rtn_round below). So 4-bit sym has zero 8 and scale 2*absmax/15.
 *
 * scale_f16: round each scale to fp16 as soon as it is computed (before the
 * zero point and the codes), so the fake-quantized weights equal, bit for
 * bit, what a checkpoint with fp16 scales dequantizes to in fp32. A scale
 * that would round to 0 in fp16 becomes the smallest fp16 subnormal (2^-24)
 * and one past the fp16 range becomes 65504, so codes never divide by 0 or
 * inf (the reference, without fp16 rounding, has no such case). */
#ifndef LLMQ_QUANT_RTN_H
#define LLMQ_QUANT_RTN_H

#include <math.h>

#include "quant/qweight.h"

/* The grid of one slice x[0..n) (one row of one group). n may be 0: then
 * min = max = 0 and the grid is the [-1, 1] fallback. */
void rtn_find_params(const float *x, int n, int maxq, int sym, int scale_f16, float *scale, float *zero);

/* Round half to even in the current (default: nearest-even) rounding mode,
 * like torch.round / nearbyintf, but inline: adding and subtracting 2^23
 * leaves no fraction bits, so the FPU rounds exactly once. Needs strict
 * IEEE float evaluation (no -ffast-math), as the whole library does. */
static inline float rtn_round(float x)
{
    float a = fabsf(x);
    if (a < 0x1p23f) /* larger values (and NaN) are already integral */
        return copysignf((a + 0x1p23f) - 0x1p23f, x);
    return x;
}

/* The code of x on a grid: clamp(round(x / scale) + zero, 0, maxq). */
static inline float rtn_code(float x, float scale, float zero, float maxq)
{
    float q = rtn_round(x / scale) + zero;
    /* NaN weights: fmaxf/fminf return the other operand, so NaN -> 0; the
     * reference's clamp would keep NaN. A checkpoint cannot store NaN codes. */
    return fminf(fmaxf(q, 0.0f), maxq);
}

/* The dequantized value of a code: scale * (q - zero). */
static inline float rtn_dequant(float q, float scale, float zero) { return scale * (q - zero); }

/* Quantize W [out, in] row by row, per group of `group` input channels
 * (-1 = whole row; a last partial group is allowed), bits 2..8.
 * res is allocated here (qweight_alloc); free it with qweight_free.
 * Returns 0, or -1 with llmq_fail() on bad arguments or out of memory. */
int rtn_quantize(const float *W, int out, int in, int bits, int group, int sym, int scale_f16,
                 llmq_qweight *res);

#endif
