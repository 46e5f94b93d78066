/* The CPU reference backend against direct double-precision evaluations of
 * the Hugging Face formulas (loops written out here, no BLAS), on random
 * inputs with GQA, several windows and odd sizes. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "src/backend.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *rand_buf(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}
static double rel_err(const float *a, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = a[i] - ref[i];
        num += d * d, den += ref[i] * ref[i];
        if (isnan(a[i]))
            return INFINITY;
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Causal GQA attention in double, straight from the formula. */
static void ref_attention(const float *q, const float *k, const float *v, int batch, int seq, int nh, int nkv, int hd,
                          double *ref)
{
    const int qd = nh * hd, kd = nkv * hd;
    for (int w = 0; w < batch; w++)
        for (int h = 0; h < nh; h++) {
            int kh = h / (nh / nkv);
            for (int t = 0; t < seq; t++) {
                double s[64], mx = -1e300, sum = 0;
                for (int u = 0; u <= t; u++) {
                    double dot = 0;
                    for (int i = 0; i < hd; i++)
                        dot += (double)q[((size_t)w * seq + t) * qd + h * hd + i] * k[((size_t)w * seq + u) * kd + kh * hd + i];
                    s[u] = dot / sqrt((double)hd);
                    mx = s[u] > mx ? s[u] : mx;
                }
                for (int u = 0; u <= t; u++)
                    sum += (s[u] = exp(s[u] - mx));
                for (int i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int u = 0; u <= t; u++)
                        acc += s[u] / sum * v[((size_t)w * seq + u) * kd + kh * hd + i];
                    ref[((size_t)w * seq + t) * qd + h * hd + i] = acc;
                }
            }
        }
}

static void test_attention_gqa(void **state)
{
    (void)state;
    llmq_backend *b;
    assert_int_equal(llmq_backend_cpu(&b), 0);
    const int batch = 3, seq = 17, nh = 6, nkv = 2, hd = 10, qd = nh * hd, kd = nkv * hd;
    float *q = rand_buf((size_t)batch * seq * qd, 2), *k = rand_buf((size_t)batch * seq * kd, 2);
    float *v = rand_buf((size_t)batch * seq * kd, 1), *out = malloc(sizeof(float) * batch * seq * qd);
    double *ref = calloc((size_t)batch * seq * qd, sizeof(double));
    assert_int_equal(b->attention(b, out, q, k, v, batch, seq, nh, nkv, hd), 0);
    ref_attention(q, k, v, batch, seq, nh, nkv, hd, ref);
    assert_true(rel_err(out, ref, (size_t)batch * seq * qd) < 1e-6);
    free(q), free(k), free(v), free(out), free(ref);
    b->destroy(b);
}

/* Rows [t0, t0 + n) of each window of x [batch, seq, dim], packed. */
static float *window_rows(const float *x, int batch, int seq, int dim, int t0, int n)
{
    float *r = malloc(sizeof(float) * batch * n * dim);
    for (int w = 0; w < batch; w++)
        memcpy(r + (size_t)w * n * dim, x + ((size_t)w * seq + t0) * dim, sizeof(float) * n * dim);
    return r;
}

/* The KV cache ops: keys/values stored in two pieces, then queries of the
 * second piece (a prefill chunk) and of the last position alone (a decode
 * step) attend through the cache; both must equal the rows of the full
 * causal attention. With int8, the cache must hold exactly fq_per_token's
 * values (the fake-quant path) and attention must equal the formula on them. */
static void test_kv_cache(void **state)
{
    (void)state;
    llmq_backend *b;
    assert_int_equal(llmq_backend_cpu(&b), 0);
    const int batch = 3, seq = 17, cap = 21, nh = 6, nkv = 2, hd = 10, qd = nh * hd, kd = nkv * hd, t0 = 10;
    for (int kv8 = 0; kv8 <= 1; kv8++) {
        float *q = rand_buf((size_t)batch * seq * qd, 2), *k = rand_buf((size_t)batch * seq * kd, 2);
        float *v = rand_buf((size_t)batch * seq * kd, 1);
        size_t es = kv8 ? 1 : sizeof(float);
        void *kc = malloc((size_t)batch * cap * kd * es), *vc = malloc((size_t)batch * cap * kd * es);
        float *ks = malloc(sizeof(float) * batch * cap * nkv), *vs = malloc(sizeof(float) * batch * cap * nkv);
        float *k1 = window_rows(k, batch, seq, kd, 0, t0), *v1 = window_rows(v, batch, seq, kd, 0, t0);
        float *k2 = window_rows(k, batch, seq, kd, t0, seq - t0), *v2 = window_rows(v, batch, seq, kd, t0, seq - t0);
        assert_int_equal(b->kv_store(b, kc, ks, k1, batch, t0, 0, cap, nkv, hd, kv8, NULL), 0);
        assert_int_equal(b->kv_store(b, vc, vs, v1, batch, t0, 0, cap, nkv, hd, kv8, NULL), 0);
        assert_int_equal(b->kv_store(b, kc, ks, k2, batch, seq - t0, t0, cap, nkv, hd, kv8, NULL), 0);
        assert_int_equal(b->kv_store(b, vc, vs, v2, batch, seq - t0, t0, cap, nkv, hd, kv8, NULL), 0);
        if (kv8) { /* the reference sees what fake quant makes of k and v */
            assert_int_equal(b->fq_per_token(b, k, batch * seq * nkv, hd, 127), 0);
            assert_int_equal(b->fq_per_token(b, v, batch * seq * nkv, hd, 127), 0);
            for (int w = 0; w < batch; w++)
                for (int t = 0; t < seq; t++)
                    for (int j = 0; j < kd; j++) {
                        size_t slot = (size_t)w * cap + t;
                        float deq = (float)((int8_t *)kc)[slot * kd + j] * ks[slot * nkv + j / hd];
                        assert_true(deq == k[((size_t)w * seq + t) * kd + j]);
                    }
        }
        double *ref = calloc((size_t)batch * seq * qd, sizeof(double));
        ref_attention(q, k, v, batch, seq, nh, nkv, hd, ref);
        /* prefill chunk: queries t0..seq-1 at position t0 */
        float *q2 = window_rows(q, batch, seq, qd, t0, seq - t0), *out = malloc(sizeof(float) * batch * seq * qd);
        double *r2 = malloc(sizeof(double) * batch * (seq - t0) * qd);
        for (int w = 0; w < batch; w++)
            memcpy(r2 + (size_t)w * (seq - t0) * qd, ref + ((size_t)w * seq + t0) * qd, sizeof(double) * (seq - t0) * qd);
        assert_int_equal(b->attention_kv(b, out, q2, kc, ks, vc, vs, batch, seq - t0, t0, cap, nh, nkv, hd, kv8, NULL), 0);
        assert_true(rel_err(out, r2, (size_t)batch * (seq - t0) * qd) < 1e-6);
        /* decode step: the last query alone */
        float *q3 = window_rows(q, batch, seq, qd, seq - 1, 1);
        for (int w = 0; w < batch; w++)
            memcpy(r2 + (size_t)w * qd, ref + ((size_t)w * seq + seq - 1) * qd, sizeof(double) * qd);
        assert_int_equal(b->attention_kv(b, out, q3, kc, ks, vc, vs, batch, 1, seq - 1, cap, nh, nkv, hd, kv8, NULL), 0);
        assert_true(rel_err(out, r2, (size_t)batch * qd) < 1e-6);
        /* positions past the cache are refused */
        assert_int_equal(b->kv_store(b, kc, ks, k2, batch, seq - t0, cap - 2, cap, nkv, hd, kv8, NULL), -1);
        free(q), free(k), free(v), free(kc), free(vc), free(ks), free(vs), free(k1), free(v1), free(k2), free(v2);
        free(ref), free(q2), free(out), free(r2), free(q3);
    }
    b->destroy(b);
}

static void test_norm_rope_linear_silu(void **state)
{
    (void)state;
    llmq_backend *b;
    assert_int_equal(llmq_backend_cpu(&b), 0);
    const int rows = 7, dim = 12, out = 5;
    float *x = rand_buf((size_t)rows * dim, 3), *w = rand_buf(dim, 1), *y = malloc(sizeof(float) * rows * dim);
    double ref[7 * 12];
    assert_int_equal(b->rmsnorm(b, y, x, w, rows, dim, 1e-5f), 0);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)x[r * dim + i] * x[r * dim + i];
        for (int i = 0; i < dim; i++)
            ref[r * dim + i] = w[i] * x[r * dim + i] / sqrt(ss / dim + 1e-5);
    }
    assert_true(rel_err(y, ref, (size_t)rows * dim) < 1e-6);

    /* rope: two heads of dim 6, positions r % 3; rotate-half pairs (i, i+3). */
    const int seq = 3, hd = 6;
    float table[3 * 6];
    for (int p = 0; p < seq; p++)
        for (int i = 0; i < hd / 2; i++) {
            double f = pow(10000.0, -2.0 * i / hd);
            table[p * hd + i] = (float)cos(p * f), table[p * hd + hd / 2 + i] = (float)sin(p * f);
        }
    memcpy(y, x, sizeof(float) * rows * dim);
    assert_int_equal(b->rope(b, y, table, rows, seq, 2, hd), 0);
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 3; i++) {
                double a = (r % seq) * pow(10000.0, -2.0 * i / hd);
                const float *xv = x + r * dim + h * hd;
                ref[r * dim + h * hd + i] = xv[i] * cos(a) - xv[i + 3] * sin(a);
                ref[r * dim + h * hd + i + 3] = xv[i + 3] * cos(a) + xv[i] * sin(a);
            }
    assert_true(rel_err(y, ref, (size_t)rows * dim) < 1e-6);

    float *W = rand_buf((size_t)out * dim, 1), *bias = rand_buf(out, 1), *yl = malloc(sizeof(float) * rows * out);
    assert_int_equal(b->linear(b, yl, x, W, bias, rows, dim, out), 0);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < out; j++) {
            double acc = bias[j];
            for (int i = 0; i < dim; i++)
                acc += (double)x[r * dim + i] * W[j * dim + i];
            ref[r * out + j] = acc;
        }
    assert_true(rel_err(yl, ref, (size_t)rows * out) < 1e-6);

    assert_int_equal(b->silu_mul(b, y, x, w, dim), 0);
    for (int i = 0; i < dim; i++)
        ref[i] = x[i] / (1 + exp(-(double)x[i])) * w[i];
    assert_true(rel_err(y, ref, dim) < 1e-6);
    free(x), free(w), free(y), free(W), free(bias), free(yl);
    b->destroy(b);
}

static void test_nll_absmax_xtx_fq(void **state)
{
    (void)state;
    llmq_backend *b;
    assert_int_equal(llmq_backend_cpu(&b), 0);
    const int rows = 4, vocab = 9;
    float *logits = rand_buf(rows * vocab, 5);
    int32_t tg[4] = {3, -1, 8, 0};
    double nll = 0, ref = 0;
    assert_int_equal(b->nll(b, &nll, logits, tg, rows, vocab), 0);
    for (int r = 0; r < rows; r++) {
        if (tg[r] < 0)
            continue;
        double z = 0;
        for (int i = 0; i < vocab; i++)
            z += exp(logits[r * vocab + i]);
        ref += log(z) - logits[r * vocab + tg[r]];
    }
    assert_true(fabs(nll - ref) < 1e-5 * fabs(ref));

    float amax[9] = {0.5f, 0, 0, 0, 0, 0, 0, 0, 0}, h[81] = {0};
    assert_int_equal(b->col_absmax(b, amax, logits, rows, vocab), 0);
    assert_int_equal(b->xtx(b, h, logits, rows, vocab, 2.0f), 0);
    for (int j = 0; j < vocab; j++) {
        float m = j == 0 ? 0.5f : 0;
        for (int r = 0; r < rows; r++)
            m = fabsf(logits[r * vocab + j]) > m ? fabsf(logits[r * vocab + j]) : m;
        assert_true(amax[j] == m);
        for (int i = 0; i < vocab; i++) {
            double acc = 0;
            for (int r = 0; r < rows; r++)
                acc += 2.0 * logits[r * vocab + i] * logits[r * vocab + j];
            assert_true(fabs(h[i * vocab + j] - acc) < 1e-4 * (1 + fabs(acc)));
        }
    }
    /* Per-token int8 fake quant: abs-max 127 maps to +-127 steps exactly. */
    float t[4] = {1.27f, -0.635f, 0.004f, 0.0f};
    assert_int_equal(b->fq_per_token(b, t, 1, 4, 127), 0);
    assert_true(fabsf(t[0] - 1.27f) < 1e-6f && fabsf(t[1] + 0.64f) < 1e-6f && t[2] == 0.0f && t[3] == 0.0f);
    free(logits);
    b->destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_gqa),
        cmocka_unit_test(test_kv_cache),
        cmocka_unit_test(test_norm_rope_linear_silu),
        cmocka_unit_test(test_nll_absmax_xtx_fq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
