/* The inverse Hessian factor GPTQ works with.
 *
 * The GPTQ reference computes, from the (dead-column-fixed, optionally
 * permuted) Hessian H:
 *     H += damp * mean(diag H) * I
 *     L = cholesky(H); Hinv = cholesky_inverse(L); U = cholesky(Hinv, upper)
 * and then only reads U (upper triangle, U^T U = H^-1). Row j of U holds the
 * weights with which the error of column j is spread over the later columns.
 *
 * We compute the same U as J L^-1 J from the Cholesky factor L of the
 * order-reversed J H J (half the flops, see hinv.c), in place in the
 * row-major upper triangle through LAPACK (spotrf / strtri on the
 * column-major view, whose lower triangle is our upper one), so no second
 * K x K buffer is needed and the strictly lower
 * triangle keeps the original H: when a factorization fails (H not
 * positive definite in fp32), the upper triangle is rebuilt from it and the
 * damping raised by damp_step (a fraction of mean(diag H)), up to
 * max_retries times, instead of giving up. */
#ifndef LLMQ_GPTQ_HINV_H
#define LLMQ_GPTQ_HINV_H

/* H: row-major [K, K], symmetric, only its lower triangle (with the
 * diagonal) is read. On success its upper triangle (with the diagonal) holds
 * U and the strictly lower triangle is unchanged; *damp_used is the fraction
 * that worked and *retries how many failures preceded it. Returns -1 with
 * llmq_fail() when every damping up to damp + max_retries*damp_step failed,
 * or out of memory. */
int gptq_hinv(float *H, int K, float damp, float damp_step, int max_retries, float *damp_used, int *retries);

#endif
