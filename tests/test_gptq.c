/* The GPTQ solver: properties GPTQ must have, not a re-run of its code.
 * (tests/gpu/gptq_reference.py checks it code for code against an
 * independent PyTorch GPTQ.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <cmocka.h>

#include "gptq/gptq.h"
#include "gptq/hinv.h"
#include "quant/rtn.h"
#include "src/error.h"

static uint64_t rng = 0x853C49E6748FEA9BULL;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static float grand(void) { return (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand())); }

static float *random_w(int N, int K, float s)
{
    float *W = malloc((size_t)N * K * sizeof(float));
    for (size_t i = 0; i < (size_t)N * K; i++)
        W[i] = s * grand();
    return W;
}

/* H = 2/T X^T X for X = Z A + noise (correlated channels), a few outlier
 * channels, and channel `dead` never active (-1: none). */
static float *correlated_h(int K, int T, int rank, int dead)
{
    float *Z = malloc((size_t)T * rank * sizeof(float)), *A = malloc((size_t)rank * K * sizeof(float));
    float *X = malloc((size_t)T * K * sizeof(float)), *H = malloc((size_t)K * K * sizeof(float));
    for (size_t i = 0; i < (size_t)T * rank; i++)
        Z[i] = grand();
    for (size_t i = 0; i < (size_t)rank * K; i++)
        A[i] = grand();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, K, rank, 1.0f / sqrtf((float)rank), Z, rank, A, K,
                0.0f, X, K);
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            X[(size_t)t * K + k] += 0.1f * grand();
            if (k % 29 == 7)
                X[(size_t)t * K + k] *= 10.0f;
            if (k == dead)
                X[(size_t)t * K + k] = 0.0f;
        }
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, K, T, 2.0f / (float)T, X, K, 0.0f, H, K);
    for (int i = 0; i < K; i++)
        for (int j = i + 1; j < K; j++)
            H[(size_t)i * K + j] = H[(size_t)j * K + i];
    free(Z), free(A), free(X);
    return H;
}

/* The layer's output error tr((W - Q) H (W - Q)^T), in double. */
static double output_error(const float *W, const float *Q, const float *H, int N, int K)
{
    double tot = 0;
    double *d = malloc((size_t)K * sizeof(double));
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++)
            d[k] = (double)W[(size_t)n * K + k] - Q[(size_t)n * K + k];
        for (int i = 0; i < K; i++) {
            double r = 0;
            for (int j = 0; j < K; j++)
                r += (double)H[(size_t)i * K + j] * d[j];
            tot += d[i] * r;
        }
    }
    free(d);
    return tot;
}

static gptq_params params(int bits, int group, int sym, int act, int stat)
{
    gptq_params p;
    gptq_params_default(&p);
    p.bits = bits;
    p.group = group;
    p.sym = sym;
    p.act_order = act;
    p.static_groups = stat;
    return p;
}

/* With H = I nothing propagates (U is diagonal), so GPTQ is RTN exactly. */
static void test_identity_h_is_rtn(void **state)
{
    (void)state;
    enum { N = 24, K = 80 };
    const gptq_params cfg[] = {
        params(4, 32, 1, 0, 0), params(3, -1, 0, 0, 0), params(4, 16, 0, 1, 0),
        params(4, 32, 1, 1, 1), params(8, -1, 1, 0, 0), params(2, 24, 0, 0, 0),
    };
    float *W = random_w(N, K, 0.03f), *Wg = malloc(N * K * sizeof(float));
    float *H = malloc(K * K * sizeof(float)), *R = malloc(N * K * sizeof(float));
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        memset(H, 0, K * K * sizeof(float));
        for (int i = 0; i < K; i++)
            H[i * K + i] = 1.0f;
        memcpy(Wg, W, N * K * sizeof(float));
        llmq_qweight g, r;
        gptq_stats st;
        gptq_params p = cfg[c];
        p.block = 32; /* several blocks */
        assert_int_equal(gptq_solve(Wg, N, K, H, &p, &g, &st), 0);
        assert_int_equal(rtn_quantize(W, N, K, p.bits, p.group, p.sym, 0, &r), 0);
        qweight_dequant(&r, R);
        assert_memory_equal(g.q, r.q, N * K);
        assert_memory_equal(g.scales, r.scales, (size_t)r.ngroups * N * sizeof(float));
        assert_memory_equal(g.zeros, r.zeros, (size_t)r.ngroups * N * sizeof(float));
        assert_memory_equal(g.g_idx, r.g_idx, K * sizeof(int32_t)); /* equal diag: act-order keeps order */
        assert_memory_equal(Wg, R, N * K * sizeof(float));
        /* loss = sum (w - q)^2 / U_jj^2 / 2 with U_jj^2 = 1 / 1.01 */
        double sq = 0;
        for (int i = 0; i < N * K; i++)
            sq += (double)(W[i] - R[i]) * (W[i] - R[i]);
        assert_true(fabs(st.loss - sq * 1.01 / 2) <= 1e-5 * sq + 1e-12);
        assert_int_equal(st.retries, 0);
        assert_true(st.damp == 0.01f);
        qweight_free(&g);
        qweight_free(&r);
    }
    free(W), free(Wg), free(H), free(R);
}

/* GPTQ minimizes the output error; on correlated inputs it must beat RTN. */
static void test_beats_rtn(void **state)
{
    (void)state;
    enum { N = 48, K = 160 };
    float *H0 = correlated_h(K, 600, 24, -1);
    float *W = random_w(N, K, 0.02f), *Q = malloc(N * K * sizeof(float)), *H = malloc(K * K * sizeof(float));
    const gptq_params cfg[] = {params(4, -1, 1, 0, 0), params(4, 32, 1, 0, 0), params(3, 32, 0, 1, 0),
                               params(4, 32, 1, 1, 1), params(2, 64, 0, 0, 0)};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        llmq_qweight g, r;
        assert_int_equal(rtn_quantize(W, N, K, cfg[c].bits, cfg[c].group, cfg[c].sym, 0, &r), 0);
        qweight_dequant(&r, Q);
        double e_rtn = output_error(W, Q, H0, N, K);
        memcpy(Q, W, N * K * sizeof(float));
        memcpy(H, H0, K * K * sizeof(float));
        gptq_params p = cfg[c];
        p.block = 64;
        assert_int_equal(gptq_solve(Q, N, K, H, &p, &g, NULL), 0);
        double e_gptq = output_error(W, Q, H0, N, K);
        assert_true(e_gptq < e_rtn);
        assert_true(e_gptq < 0.8 * e_rtn); /* by a real margin, not by luck */
        qweight_free(&g);
        qweight_free(&r);
    }
    free(H0), free(W), free(Q), free(H);
}

static void test_act_order_g_idx(void **state)
{
    (void)state;
    enum { N = 16, K = 100, G = 32 };
    float *H0 = correlated_h(K, 300, 12, -1);
    float *W = random_w(N, K, 0.02f), *H = malloc(K * K * sizeof(float)), *Wc = malloc(N * K * sizeof(float));
    float diag[K];
    for (int i = 0; i < K; i++)
        diag[i] = H0[i * K + i];
    llmq_qweight q;

    /* static groups: g_idx = k / G, scales rows in channel order */
    memcpy(H, H0, sizeof(float) * K * K);
    memcpy(Wc, W, sizeof(float) * N * K);
    gptq_params p = params(4, G, 1, 1, 1);
    assert_int_equal(gptq_solve(Wc, N, K, H, &p, &q, NULL), 0);
    for (int k = 0; k < K; k++)
        assert_int_equal(q.g_idx[k], k / G);
    /* static grids come from the unmodified weights: group 3 (k = 96..99) is
     * RTN's grid of those four weights */
    for (int n = 0; n < N; n++) {
        float s, z;
        rtn_find_params(W + n * K + 96, 4, 15, 1, 0, &s, &z);
        assert_true(q.scales[3 * N + n] == s);
    }
    qweight_free(&q);

    /* dynamic groups: group j/G in quantization order, i.e. channels with a
     * larger diag H get a group row no later than channels with a smaller one */
    memcpy(H, H0, sizeof(float) * K * K);
    memcpy(Wc, W, sizeof(float) * N * K);
    p = params(4, G, 1, 1, 0);
    assert_int_equal(gptq_solve(Wc, N, K, H, &p, &q, NULL), 0);
    int count[4] = {0};
    for (int k = 0; k < K; k++) {
        assert_true(q.g_idx[k] >= 0 && q.g_idx[k] < 4);
        count[q.g_idx[k]]++;
        for (int l = 0; l < K; l++)
            if (diag[k] > diag[l])
                assert_true(q.g_idx[k] <= q.g_idx[l]);
    }
    assert_int_equal(count[0], 32);
    assert_int_equal(count[3], 4); /* K = 100: a last group of 4 */
    qweight_free(&q);
    free(H0), free(W), free(H), free(Wc);
}

static void test_dead_column(void **state)
{
    (void)state;
    enum { N = 20, K = 64, DEAD = 9 };
    float *H = correlated_h(K, 200, 8, DEAD);
    float *W = random_w(N, K, 0.05f);
    assert_true(H[DEAD * K + DEAD] == 0.0f);
    for (int sym = 0; sym <= 1; sym++) {
        float *Hc = malloc(K * K * sizeof(float)), *Wc = malloc(N * K * sizeof(float));
        memcpy(Hc, H, K * K * sizeof(float));
        memcpy(Wc, W, N * K * sizeof(float));
        llmq_qweight q;
        gptq_params p = params(4, 16, sym, 1, 0);
        assert_int_equal(gptq_solve(Wc, N, K, Hc, &p, &q, NULL), 0);
        /* a channel that never sees input is zeroed, and 0 is on every grid */
        for (int n = 0; n < N; n++)
            assert_true(Wc[n * K + DEAD] == 0.0f);
        for (int i = 0; i < N * K; i++)
            assert_true(isfinite(Wc[i]));
        qweight_free(&q);
        free(Hc), free(Wc);
    }
    free(H), free(W);
}

/* H = I - t u u^T with u = (1,..,1)/4: eigenvalue 1 - t < 0 for t = 1.015.
 * mean(diag) = 1 - t/16, so damping 0.01 is not enough and 0.02 is. */
static void test_not_pd_retries(void **state)
{
    (void)state;
    enum { N = 8, K = 16 };
    float H[K * K], W[N * K];
    const float t = 1.015f;
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++)
            H[i * K + j] = (i == j ? 1.0f : 0.0f) - t / 16.0f;
    for (int i = 0; i < N * K; i++)
        W[i] = 0.1f * grand();
    float Hc[K * K], Wc[N * K];
    memcpy(Hc, H, sizeof H);
    memcpy(Wc, W, sizeof W);
    llmq_qweight q;
    gptq_stats st;
    gptq_params p = params(4, -1, 1, 0, 0);
    assert_int_equal(gptq_solve(Wc, N, K, Hc, &p, &q, &st), 0);
    assert_int_equal(st.retries, 1);
    assert_true(st.damp == 0.02f);
    for (int i = 0; i < N * K; i++)
        assert_true(isfinite(Wc[i]));
    qweight_free(&q);
    /* no retries allowed: a clean error, not a crash */
    memcpy(Hc, H, sizeof H);
    memcpy(Wc, W, sizeof W);
    p.max_retries = 0;
    assert_int_equal(gptq_solve(Wc, N, K, Hc, &p, &q, &st), -1);
    assert_non_null(strstr(llmq_last_error(), "positive definite"));
    assert_null(q.q);
}

/* U (upper triangle) satisfies U^T U (H + damp) = I, the strictly lower
 * triangle still holds H, and U has a positive diagonal. */
static void test_hinv(void **state)
{
    (void)state;
    enum { K = 96 };
    float *H = correlated_h(K, 400, 16, -1), *C = malloc(K * K * sizeof(float));
    memcpy(C, H, K * K * sizeof(float));
    float damp;
    int retries;
    assert_int_equal(gptq_hinv(C, K, 0.01f, 0.01f, 10, &damp, &retries), 0);
    double mean = 0;
    for (int i = 0; i < K; i++)
        mean += H[i * K + i];
    mean /= K;
    double *UtU = calloc(K * K, sizeof(double));
    for (int i = 0; i < K; i++) {
        assert_true(C[i * K + i] > 0.0f);
        for (int j = 0; j < i; j++)
            assert_true(C[i * K + j] == H[i * K + j]);
        for (int m = 0; m < K; m++)
            for (int l = 0; l <= (i < m ? i : m); l++)
                UtU[i * K + m] += (double)C[l * K + i] * C[l * K + m];
    }
    double maxerr = 0;
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++) {
            double s = 0;
            for (int m = 0; m < K; m++)
                s += UtU[i * K + m] * ((double)H[m * K + j] + (m == j ? 0.01 * mean : 0.0));
            maxerr = fmax(maxerr, fabs(s - (i == j)));
        }
    free(UtU);
    assert_true(maxerr < 1e-3);
    free(H), free(C);
}

static void test_deterministic(void **state)
{
    (void)state;
    enum { N = 130, K = 150 };
    float *H0 = correlated_h(K, 400, 16, 3);
    float *W = random_w(N, K, 0.02f);
    llmq_qweight q[3];
    gptq_stats st[3];
    float *out[3];
    const int threads[3] = {1, 4, 4};
    for (int r = 0; r < 3; r++) {
        float *H = malloc(K * K * sizeof(float));
        out[r] = malloc(N * K * sizeof(float));
        memcpy(H, H0, K * K * sizeof(float));
        memcpy(out[r], W, N * K * sizeof(float));
        gptq_params p = params(4, 32, 1, 1, 0);
        p.threads = threads[r];
        p.block = 64;
        assert_int_equal(gptq_solve(out[r], N, K, H, &p, &q[r], &st[r]), 0);
        free(H);
    }
    for (int r = 1; r < 3; r++) {
        assert_memory_equal(q[r].q, q[0].q, N * K);
        assert_memory_equal(q[r].scales, q[0].scales, (size_t)q[0].ngroups * N * sizeof(float));
        assert_memory_equal(q[r].g_idx, q[0].g_idx, K * sizeof(int32_t));
        assert_memory_equal(out[r], out[0], N * K * sizeof(float));
        assert_true(st[r].loss == st[0].loss);
    }
    for (int r = 0; r < 3; r++) {
        qweight_free(&q[r]);
        free(out[r]);
    }
    free(H0), free(W);
}

/* K = 172 with G = 32 (stories260K's down_proj): six groups, the last of 12. */
static void test_partial_group(void **state)
{
    (void)state;
    enum { N = 64, K = 172 };
    float *H = correlated_h(K, 400, 16, -1), *W = random_w(N, K, 0.03f);
    llmq_qweight q;
    gptq_params p = params(4, 32, 1, 0, 0);
    assert_int_equal(gptq_solve(W, N, K, H, &p, &q, NULL), 0);
    assert_int_equal(q.ngroups, 6);
    for (int k = 0; k < K; k++)
        assert_int_equal(q.g_idx[k], k / 32);
    /* every dequantized weight lies on its group's grid */
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int g = q.g_idx[k];
            float s = q.scales[g * N + n], z = q.zeros[g * N + n];
            assert_true(W[n * K + k] == s * ((float)q.q[n * K + k] - z));
        }
    qweight_free(&q);
    free(H), free(W);
}

static void test_bad_input(void **state)
{
    (void)state;
    enum { N = 4, K = 8 };
    float W[N * K] = {0}, H[K * K] = {0};
    for (int i = 0; i < K; i++)
        H[i * K + i] = 1.0f;
    llmq_qweight q;
    gptq_params p = params(4, 4, 1, 0, 0);
    H[3] = NAN;
    assert_int_equal(gptq_solve(W, N, K, H, &p, &q, NULL), -1);
    assert_non_null(strstr(llmq_last_error(), "NaN"));
    H[3] = 0.0f;
    p.bits = 1;
    assert_int_equal(gptq_solve(W, N, K, H, &p, &q, NULL), -1);
    p.bits = 4;
    p.group = 0;
    assert_int_equal(gptq_solve(W, N, K, H, &p, &q, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_h_is_rtn), cmocka_unit_test(test_beats_rtn),
        cmocka_unit_test(test_act_order_g_idx),   cmocka_unit_test(test_dead_column),
        cmocka_unit_test(test_not_pd_retries),    cmocka_unit_test(test_hinv),
        cmocka_unit_test(test_deterministic),     cmocka_unit_test(test_partial_group),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
