#include "gptq/hinv.h"

#include <cblas.h>
#include <lapacke.h>
#include <stdlib.h>

#include "src/error.h"

/* One attempt at U from H's lower triangle + (diag0 + dval) on the diagonal.
 *
 * The reference's way (cholesky, cholesky_inverse, cholesky upper) costs
 * potrf + potri + potrf = 4K^3/3 flops. The same U comes cheaper: with J
 * the order reversal, potrf of J H J gives J H J = L L^T, so H = R R^T with
 * R = J L J upper, H^-1 = R^-T R^-1 and U = R^-1 = J L^-1 J: one potrf and
 * one trtri, 2K^3/3 flops. U is unique (upper, positive diagonal,
 * U^T U = H^-1), so only rounding differs (it is, if anything, slightly
 * more accurate: no explicit inverse is refactored).
 *
 * Our row-major upper triangle is LAPACK's column-major lower one, hence
 * 'L'; our strictly lower triangle (the caller's H) is never written. */
static int factor(float *H, int K, const float *diag0, float dval)
{
    const size_t k = (size_t)K;
    /* our upper (i <= j) := B = J H J, read from H's lower triangle */
    for (size_t i = 0; i < k; i++) {
        for (size_t j = i + 1; j < k; j++)
            H[i * k + j] = H[(k - 1 - i) * k + (k - 1 - j)];
        H[i * k + i] = diag0[k - 1 - i] + dval;
    }
    /* OpenBLAS's threaded potrf/trtri round differently for different
     * thread counts, and GPTQ turns last-bit differences into other codes at
     * rounding ties: one BLAS thread makes the solve reproducible on any
     * machine (the GPU solver is the fast path). */
    int threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    int bad = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', K, H, K) != 0 ||
              LAPACKE_strtri(LAPACK_COL_MAJOR, 'L', 'N', K, H, K) != 0;
    openblas_set_num_threads(threads);
    if (bad)
        return -1;
    /* our (i, j) holds Linv[j][i]; U[i][j] = Linv[K-1-i][K-1-j] sits at our
     * (K-1-j, K-1-i): reflect the upper triangle about the anti-diagonal */
    for (size_t i = 0; i < k; i++)
        for (size_t j = i; j < k; j++) {
            size_t a = k - 1 - j, b = k - 1 - i; /* partner; a <= b */
            if (a < i || (a == i && b <= j))
                continue; /* each pair once */
            float t = H[i * k + j];
            H[i * k + j] = H[a * k + b];
            H[a * k + b] = t;
        }
    return 0;
}

int gptq_hinv(float *H, int K, float damp, float damp_step, int max_retries, float *damp_used, int *retries)
{
    const size_t k = (size_t)K;
    float *diag0 = malloc(k * sizeof(float));
    if (!diag0)
        return llmq_fail("gptq: out of memory for the Hessian diagonal (K = %d)", K);
    double sum = 0.0;
    for (size_t i = 0; i < k; i++) {
        diag0[i] = H[i * k + i];
        sum += diag0[i];
    }
    /* torch.mean in fp32; the double sum rounded once is its exact value. */
    const float mean = (float)(sum / (double)K);

    for (int r = 0; r <= max_retries; r++) {
        /* percdamp * mean: a Python float times an fp32 tensor is an fp32
         * product of the fraction rounded to fp32. */
        const float frac = (float)((double)damp + (double)r * (double)damp_step);
        if (factor(H, K, diag0, frac * mean) == 0) {
            *damp_used = frac;
            *retries = r;
            free(diag0);
            return 0;
        }
    }
    free(diag0);
    return llmq_fail("gptq: Hessian not positive definite even with damping %g of mean(diag H) (%d retries)",
                     (double)damp + (double)max_retries * (double)damp_step, max_retries);
}
