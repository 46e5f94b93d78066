#include "quant/nf4_gemv_ref.h"

#include <stdlib.h>

#include "src/error.h"

int nf4_gemv_ref(const llmq_nf4 *q, int N, int K, const float *x, int M, float *y)
{
    if (N <= 0 || K <= 0 || M < 0 || q->n != (size_t)N * (size_t)K)
        return llmq_fail("nf4_gemv_ref: W holds %zu values, not %d x %d", q->n, N, K);
    float *am = malloc(q->nblocks * sizeof *am);
    float *wrow = malloc((size_t)K * sizeof *wrow);
    if (!am || !wrow) {
        free(am);
        free(wrow);
        return llmq_fail("nf4_gemv_ref: out of memory");
    }
    nf4_block_absmax(q, am);
    const size_t B = (size_t)q->blocksize;
    for (int n = 0; n < N; n++) {
        const size_t e0 = (size_t)n * K;
        for (int k = 0; k < K; k++)
            wrow[k] = nf4_code[q->codes[e0 + k]] * am[(e0 + k) / B];
        for (int m = 0; m < M; m++) {
            const float *xr = x + (size_t)m * K;
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)xr[k] * wrow[k];
            y[(size_t)m * N + n] = (float)acc;
        }
    }
    free(am);
    free(wrow);
    return 0;
}
