/* GPTQ (Frantar et al. 2022) on the CPU, following the reference
 * implementation (IST-DASLab/gptq, GPTQ.fasterquant with its Quantizer) step
 * by step in fp32, so that its codes match the reference's on the same W
 * and H up to the rounding of the BLAS/LAPACK calls:
 *
 *  1. group -1: the per-row grid comes from W as given (before step 2).
 *  2. dead input channels (H[i,i] == 0): H[i,i] = 1, W[:, i] = 0.
 *  3. static_groups (group > 0): every group's grid from this W, original
 *     channel order.
 *  4. act_order: channels sorted by diag H, descending (ties keep the lower
 *     index first, as a stable sort); W's columns and H permuted.
 *  5. H += damp * mean(diag H) I; U = upper Cholesky factor of H^-1
 *     (gptq/hinv.h; retried with more damping when not positive definite).
 *  6. Columns in blocks of `block`: each column j is quantized on its grid,
 *     its error err = (w - q) / U[j,j] is spread over the block's later
 *     columns at once and over the columns after the block by one sgemm
 *     (lazy batch updates). Without static groups, at j % group == 0 the
 *     grid of group j / group comes from columns j .. j+group-1 of the
 *     matrix the reference reads there: W with the updates of all earlier
 *     blocks but not yet those of the current block (the reference's
 *     find_params(W[:, j:j+G]) reads W, not its block copy W1; kept
 *     on purpose so codes match).
 *     Loss = sum over columns of (w - q)^2 / U[j,j]^2 / 2 (the reference's
 *     Losses).
 *  7. Codes are returned in the ORIGINAL channel order; g_idx maps each
 *     channel to its group row: k / group without act-order or with static
 *     groups, else g_idx[perm[j]] = j / group (scales/zeros rows follow
 *     quantization order).
 *
 * Rows (output channels) are independent in GPTQ, so the per-block work is
 * split over threads by rows; results do not depend on the thread count. */
#ifndef LLMQ_GPTQ_GPTQ_H
#define LLMQ_GPTQ_GPTQ_H

#include "quant/qweight.h"

typedef struct {
    int bits;          /* 2..8 */
    int group;         /* > 0, or -1 for one group per row */
    int sym;           /* symmetric grid (zero = 2^(bits-1)) */
    int act_order;     /* quantize channels in order of decreasing diag H */
    int static_groups; /* grids fixed before the solve (needs group > 0) */
    float damp;        /* fraction of mean(diag H) added to the diagonal */
    int block;         /* lazy-batch block width in columns */
    int scale_f16;     /* round scales to fp16 before use (quant/rtn.h) */
    float damp_step;   /* added to damp after each failed Cholesky */
    int max_retries;   /* Cholesky retries before giving up */
    int threads;       /* worker threads for the per-block work; 0 = all CPUs */
} gptq_params;

typedef struct {
    double loss;  /* sum of the reference's Losses */
    float damp;   /* damping fraction actually used */
    int retries;  /* failed Cholesky attempts before it */
} gptq_stats;

/* bits 4, group 128, sym, no act-order, no static groups, damp 0.01,
 * block 128, scale_f16 0, damp_step 0.01, max_retries 100, threads 0. */
void gptq_params_default(gptq_params *p);

/* Quantize W [out, in] (row-major, HF layout) with the Hessian H [in, in]
 * (H = 2/n sum x x^T of the layer inputs; symmetric, its lower triangle is
 * what is read). On success W holds the dequantized weights (original
 * order), res the codes and grids (allocated here, free with qweight_free),
 * st the statistics (may be NULL). H is destroyed. Returns -1 with
 * llmq_fail() on bad parameters, NaN/Inf in W or H, a Hessian that no
 * damping makes positive definite, or out of memory; W is then unspecified. */
int gptq_solve(float *W, int out, int in, float *H, const gptq_params *p, llmq_qweight *res, gptq_stats *st);

#endif
