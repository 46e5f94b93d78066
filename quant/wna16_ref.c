#include "quant/wna16_ref.h"

#include <cblas.h>
#include <stdlib.h>

#include "src/dtype.h"
#include "src/error.h"

static int check_args(int K, int N, int bits, const int32_t *g_idx)
{
    if (bits != 4 && bits != 8)
        return llmq_fail("wna16_ref: bits must be 4 or 8, not %d", bits);
    if (K <= 0 || N <= 0 || (long)K * bits % 32 || (long)N * bits % 32)
        return llmq_fail("wna16_ref: K=%d N=%d do not pack at %d bits", K, N, bits);
    for (int k = 0; k < K; k++)
        if (g_idx[k] < 0)
            return llmq_fail("wna16_ref: g_idx[%d] = %d", k, g_idx[k]);
    return 0;
}

int wna16_dequant_ref(const int32_t *qweight, const int32_t *qzeros, const uint16_t *scales_f16,
                      const int32_t *g_idx, int K, int N, int bits, int v2, int n0, int nrows, float *W)
{
    if (check_args(K, N, bits, g_idx))
        return -1;
    if (n0 < 0 || nrows < 0 || n0 + nrows > N)
        return llmq_fail("wna16_ref: rows %d..%d outside N=%d", n0, n0 + nrows, N);
    const int pf = 32 / bits, zcols = N * bits / 32;
    const uint32_t mask = (1u << bits) - 1;
    for (int i = 0; i < nrows; i++) {
        const int n = n0 + i;
        for (int k = 0; k < K; k++) {
            const int g = g_idx[k];
            uint32_t qw = (uint32_t)qweight[(size_t)(k / pf) * N + n];
            uint32_t zw = (uint32_t)qzeros[(size_t)g * zcols + n / pf];
            float q = (float)((qw >> (bits * (k % pf))) & mask);
            float z = (float)((zw >> (bits * (n % pf))) & mask) + (v2 ? 0.0f : 1.0f);
            W[(size_t)i * K + k] = llmq_f16_to_f32(scales_f16[(size_t)g * N + n]) * (q - z);
        }
    }
    return 0;
}

int wna16_gemm_ref(const float *x, const int32_t *qweight, const int32_t *qzeros, const uint16_t *scales_f16,
                   const int32_t *g_idx, int M, int K, int N, int bits, int v2, float *y)
{
    if (M < 0)
        return llmq_fail("wna16_ref: M=%d", M);
    if (check_args(K, N, bits, g_idx))
        return -1;
    /* Blocks of output channels: W for 256 of them is at most 11 MB at K = 11008. */
    enum { NB = 256 };
    float *W = malloc((size_t)NB * K * sizeof *W), *yb = malloc((size_t)(M ? M : 1) * NB * sizeof *yb);
    if (!W || !yb) {
        free(W);
        free(yb);
        return llmq_fail("wna16_ref: out of memory");
    }
    for (int n0 = 0; n0 < N; n0 += NB) {
        const int nb = N - n0 < NB ? N - n0 : NB;
        if (wna16_dequant_ref(qweight, qzeros, scales_f16, g_idx, K, N, bits, v2, n0, nb, W)) {
            free(W);
            free(yb);
            return -1;
        }
        if (M == 0)
            continue;
        /* yb [M, nb] = x [M, K] . W [nb, K]^T, then into y's columns n0.. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nb, K, 1.0f, x, K, W, K, 0.0f, yb, nb);
        for (int m = 0; m < M; m++)
            for (int j = 0; j < nb; j++)
                y[(size_t)m * N + n0 + j] = yb[(size_t)m * nb + j];
    }
    free(W);
    free(yb);
    return 0;
}
